use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glimpse_media::untrusted::read_regular_file;

use crate::ModelError;
use crate::weights::{ReadAt, WeightFile};

/// The most bytes `file`, a JSON file of a checkpoint, may have, from a folder, the browser or
/// announced by the hub: parsing JSON takes some 30 times its size in memory, so the bound is the
/// file's kind's, with room to spare. A `config.json` or `preprocessor_config.json` is a few KiB;
/// CLIP's and GPT-2's `tokenizer.json` are 2.2 and 1.4 MiB.
pub fn max_json_bytes(file: &str) -> u64 {
    match file {
        "tokenizer.json" => 16 << 20,
        _ => 1 << 20,
    }
}

/// Where a checkpoint's `model.safetensors` is: bytes already in memory (the embedded default), a
/// file on disk, or any other random-access source (the browser's buffer outside the module's
/// memory). Files and sources are read tensor by tensor while the model is built, so that the
/// file's bytes and the tensors made from them are never alive at once.
#[derive(Clone)]
pub enum Weights {
    Bytes(Cow<'static, [u8]>),
    File(PathBuf),
    /// A source and its name for messages.
    Reader(Arc<dyn ReadAt + Send + Sync>, String),
}

impl Weights {
    /// The parsed header, ready for a model's loader.
    pub fn open(&self) -> Result<WeightFile<'_>, ModelError> {
        match self {
            Weights::Bytes(bytes) => WeightFile::parse(bytes),
            Weights::File(path) => WeightFile::open(path),
            Weights::Reader(source, what) => WeightFile::read_header(Box::new(&**source), what.clone()),
        }
    }
}

impl fmt::Debug for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weights::Bytes(bytes) => write!(f, "Weights::Bytes({} bytes)", bytes.len()),
            Weights::File(path) => write!(f, "Weights::File({})", path.display()),
            Weights::Reader(source, what) => write!(f, "Weights::Reader({what}, {} bytes)", source.size()),
        }
    }
}

/// The files of one checkpoint in the Hugging Face layout.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Where the files came from, for messages.
    pub source: String,
    pub config: Vec<u8>,
    pub weights: Weights,
    pub tokenizer: Vec<u8>,
    /// `preprocessor_config.json` and `processor_config.json`, where there are; a CLIP's image
    /// settings are in one of them ([`glimpse_media::image::image_settings_file`]).
    pub preprocessor: Option<Vec<u8>>,
    pub processor: Option<Vec<u8>>,
}

impl ModelFiles {
    /// Reads a local directory (e.g. a `git clone` of a hub repository).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ModelError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(ModelError::Layout(format!(
                "{} is not a directory; pass a folder in the Hugging Face layout (config.json, model.safetensors, tokenizer.json)",
                dir.display()
            )));
        }
        let read = |name: &str| -> Result<Vec<u8>, ModelError> {
            read_regular_file(&dir.join(name), max_json_bytes(name)).map_err(|e| ModelError::Layout(e.to_string()))
        };
        let require = |name: &str| -> Result<(), ModelError> {
            let path = dir.join(name);
            if path.is_file() {
                return Ok(());
            }
            if path.exists() {
                return Err(ModelError::Layout(format!(
                    "{} is not a regular file (a folder, a pipe or a device); put the file itself there",
                    path.display()
                )));
            }
            let hint = if name == "model.safetensors" && dir.join("model.safetensors.index.json").is_file() {
                ": the weights are sharded (model.safetensors.index.json and its shards), and glimpse reads them \
                 from one file; join them with transformers (`model.save_pretrained(dir, max_shard_size=\"100GB\")`)"
            } else if name == "model.safetensors" && dir.join("pytorch_model.bin").is_file() {
                ": only pytorch_model.bin is there, and glimpse reads safetensors only (pickle files can run code); \
                 convert it with transformers (`model.save_pretrained(dir, safe_serialization=True)`)"
            } else if name == "tokenizer.json" && dir.join("vocab.json").is_file() {
                ": only the slow tokenizer's vocab.json (and merges.txt) is there, and glimpse reads the fast \
                 one's tokenizer.json; write it with transformers \
                 (`AutoTokenizer.from_pretrained(dir).save_pretrained(dir)`)"
            } else {
                ""
            };
            Err(ModelError::Layout(format!("{} has no {name}{hint}", dir.display())))
        };
        for name in ["config.json", "model.safetensors", "tokenizer.json"] {
            require(name)?;
        }
        let optional = |name: &str| if dir.join(name).is_file() { read(name).map(Some) } else { Ok(None) };
        Ok(Self {
            source: dir.display().to_string(),
            config: read("config.json")?,
            weights: Weights::File(dir.join("model.safetensors")),
            tokenizer: read("tokenizer.json")?,
            preprocessor: optional("preprocessor_config.json")?,
            processor: optional("processor_config.json")?,
        })
    }
}
