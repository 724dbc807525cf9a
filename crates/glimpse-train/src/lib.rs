//! Training for glimpse's embedded default: the tokenizers, a tiny CLIP and a tiny GPT-2 for the
//! procedural world of `glimpse-world`, built from the same module code as the real checkpoints
//! and written in the Hugging Face layout, so they load through exactly the same path.
//!
//! One loop ([`trainer::Trainer`]: Burn autodiff with AdamW) trains all of them and projectors
//! too; [`run`] starts or resumes a run in a folder and checkpoints it. Data is rendered on the fly
//! from seeds, so a step's batch depends only on `(seed, step)` and a resumed run sees the same
//! data.

pub mod checkpoint;
pub mod clip;
pub mod lm;
pub mod projector;
pub mod random;
pub mod run;
pub mod tokenizer;
pub mod trainer;

use glimpse_models::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),
    #[error(transparent)]
    Align(#[from] glimpse_align::AlignError),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{0}")]
    Config(String),
    /// A file of the run cannot be written or read (the cause follows as the error's source).
    #[error("{path}")]
    Io { path: String, source: std::io::Error },
}
