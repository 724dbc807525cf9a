//! Where models come from and how their files become ready-to-use models.
//!
//! [`ModelFiles`] holds the bytes of a Hugging Face layout checkpoint (`config.json`,
//! `model.safetensors`, `tokenizer.json`, optional `preprocessor_config.json`), read from a local
//! directory, from the Hugging Face hub through its cache ([`remote`], native only) or from the
//! binary itself ([`embedded`]). [`ClipBundle`] and [`Gpt2Bundle`] turn those bytes into a model
//! with its tokenizer and preprocessing; they only need bytes, so the browser build uses them too.

mod bundle;
pub mod embedded;
mod files;
#[cfg(not(target_family = "wasm"))]
pub mod remote;

pub use bundle::{ClipBundle, Gpt2Bundle};
pub use files::{ModelFiles, Weights};

use std::path::PathBuf;

/// Errors carry their cause as `source()`; print the chain (`{:#}` with anyhow) to see both.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Layout(String),
    /// Hub downloads and the cache.
    #[error("{0}")]
    Remote(String),
    /// The hub could not be reached (no network, wrong `HF_ENDPOINT`).
    #[error("{0}")]
    Unreachable(String),
    #[error("{source_name}")]
    Model { source_name: String, source: glimpse_models::ModelError },
    #[error("{source_name}")]
    Media { source_name: String, source: glimpse_media::MediaError },
}
