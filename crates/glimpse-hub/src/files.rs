use std::fs;
use std::path::{Path, PathBuf};

use crate::HubError;

/// The files of one checkpoint in the Hugging Face layout.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Where the files came from, for messages.
    pub source: String,
    pub config: Vec<u8>,
    pub weights: Vec<u8>,
    pub tokenizer: Vec<u8>,
    pub preprocessor: Option<Vec<u8>>,
}

impl ModelFiles {
    /// Reads a local directory (e.g. a `git clone` of a hub repository).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, HubError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(HubError::Layout(format!(
                "{} is not a directory; pass a folder in the Hugging Face layout (config.json, model.safetensors, tokenizer.json)",
                dir.display()
            )));
        }
        let read = |name: &str| -> Result<Vec<u8>, HubError> {
            let path: PathBuf = dir.join(name);
            fs::read(&path).map_err(|source| HubError::Io { path, source })
        };
        let require = |name: &str| -> Result<(), HubError> {
            if dir.join(name).is_file() {
                return Ok(());
            }
            let hint = if name == "model.safetensors" && dir.join("pytorch_model.bin").is_file() {
                ": only pytorch_model.bin is there, and glimpse reads safetensors only (pickle files can run code); \
                 convert it with transformers (`model.save_pretrained(dir, safe_serialization=True)`)"
            } else {
                ""
            };
            Err(HubError::Layout(format!("{} has no {name}{hint}", dir.display())))
        };
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            require(name)?;
        }
        let preprocessor = dir.join("preprocessor_config.json");
        Ok(Self {
            source: dir.display().to_string(),
            config: read("config.json")?,
            weights: read("model.safetensors")?,
            tokenizer: read("tokenizer.json")?,
            preprocessor: if preprocessor.is_file() { Some(read("preprocessor_config.json")?) } else { None },
        })
    }
}
