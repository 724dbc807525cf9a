//! Where models come from: the Hugging Face hub through its cache ([`remote`], native only) and
//! the binary itself ([`embedded`]). Both give [`glimpse_models::ModelFiles`], which
//! `glimpse_models::ClipBundle` and `Gpt2Bundle` turn into models.

pub mod embedded;
#[cfg(not(target_family = "wasm"))]
pub mod remote;

use std::path::PathBuf;

/// Errors carry their cause as `source()`; print the chain (`{:#}` with anyhow) to see both.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// Hub downloads and the cache.
    #[error("{0}")]
    Remote(String),
    /// The hub could not be reached (no network, wrong `HF_ENDPOINT`).
    #[error("{0}")]
    Unreachable(String),
    /// A downloaded snapshot that does not make a checkpoint.
    #[error(transparent)]
    Model(#[from] glimpse_models::ModelError),
}

impl HubError {
    /// The message with its cause, for a message of its own: an I/O error's `Display` names the
    /// path only.
    pub fn full(&self) -> String {
        match self {
            Self::Io { path, source } => format!("{}: {source}", path.display()),
            other => other.to_string(),
        }
    }
}
