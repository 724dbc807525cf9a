//! The embedded default: a CLIP, a GPT-2 and a projector that `glimpse train` trained on the
//! procedural world (`models/README.md` has the commands that reproduce them). They are compiled
//! into the binary, so glimpse runs its main job with no download, through the same loading path
//! as any Hugging Face checkpoint.

use std::borrow::Cow;

use glimpse_models::{ModelFiles, Weights};

macro_rules! shipped {
    ($path:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/", $path))
    };
}

/// The world CLIP (`models/world-clip`).
pub fn world_clip() -> ModelFiles {
    ModelFiles {
        source: "embedded world CLIP".into(),
        config: shipped!("world-clip/config.json").to_vec(),
        weights: Weights::Bytes(Cow::Borrowed(shipped!("world-clip/model.safetensors"))),
        tokenizer: shipped!("world-clip/tokenizer.json").to_vec(),
        preprocessor: Some(shipped!("world-clip/preprocessor_config.json").to_vec()),
        processor: None,
    }
}

/// The world GPT-2 (`models/world-gpt2`).
pub fn world_lm() -> ModelFiles {
    ModelFiles {
        source: "embedded world GPT-2".into(),
        config: shipped!("world-gpt2/config.json").to_vec(),
        weights: Weights::Bytes(Cow::Borrowed(shipped!("world-gpt2/model.safetensors"))),
        tokenizer: shipped!("world-gpt2/tokenizer.json").to_vec(),
        preprocessor: None,
        processor: None,
    }
}

/// The projector from the world CLIP into the world GPT-2 (`models/world-projector.safetensors`).
pub const WORLD_PROJECTOR: &[u8] = shipped!("world-projector.safetensors");
