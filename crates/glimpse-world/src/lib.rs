//! glimpse's procedural world. Scenes of coloured shapes on plain backgrounds whose attributes
//! (shape, colour, size, position, count) a caption can state and a small CLIP can see in one
//! frame; videos made of consecutive scenes with ground-truth events; and the metrics
//! (temporal-IoU precision/recall, BLEU-4, CIDEr-D, attribute accuracy) that score predictions
//! against them. Everything is deterministic by seed and independent of Burn and the models.

pub mod densevid;
pub mod meteor;
pub mod metrics;
pub mod render;
pub mod scene;
pub mod video;
