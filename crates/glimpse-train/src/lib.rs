//! Training for glimpse's embedded default: the tokenizers, a tiny CLIP and a tiny GPT-2 for the
//! procedural world of `glimpse-world`, built from the same module code as the real checkpoints
//! and written in the Hugging Face layout, so they load through exactly the same path.
//!
//! The training loops are plain Burn autodiff with AdamW; data is rendered on the fly from
//! seeds, so a step's batch depends only on `(seed, step)` and a resumed run sees the same data.

pub mod checkpoint;
pub mod clip;
pub mod lm;
pub mod projector;
pub mod tokenizer;

use glimpse_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),
    #[error(transparent)]
    Hub(#[from] glimpse_hub::HubError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Learning rate at `step`: linear warm-up over `warmup` steps, then cosine decay to 10 %.
pub fn learning_rate(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos()))
}
