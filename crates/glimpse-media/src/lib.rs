//! Everything between the outside world and the models' tensors: tokenizers (`tokenizer.json`)
//! and CLIP image preprocessing.

pub mod image;
pub mod resample;
pub mod tokenizer;

pub use image::{ImagePreprocess, decode_image};
pub use tokenizer::{ClipTokenizer, Gpt2Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    #[error("preprocessor_config.json: {0}")]
    Preprocessor(String),
    #[error("cannot read the image: {0}")]
    Image(String),
}
