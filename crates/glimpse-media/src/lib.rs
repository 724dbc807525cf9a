//! Everything between the outside world and the models' tensors: tokenizers (`tokenizer.json`),
//! CLIP image preprocessing, video frame sources, time spans, subtitle formats and atomic file
//! writes; and the seeded generator every crate above draws from.

pub mod files;
pub mod image;
pub mod resample;
pub mod rng;
pub mod span;
pub mod subtitles;
pub mod tokenizer;
pub mod untrusted;
pub mod video;

pub use files::{write_atomically, write_output};
pub use image::{ImagePreprocess, decode_image, to_rgb};
pub use tokenizer::{ClipTokenizer, Gpt2Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("tokenizer.json: {0}")]
    Tokenizer(String),
    /// A text the tokenizers will not take (too long).
    #[error("{0}")]
    Text(String),
    /// Image settings that do not parse or fit, and the file they came from.
    #[error("{file}: {message}")]
    Preprocessor { file: &'static str, message: String },
    #[error("cannot read the image: {0}")]
    Image(String),
    #[error("{0}")]
    Video(String),
    /// A file that cannot be read as given (missing, not a regular file, too large).
    #[error("{0}")]
    File(String),
    /// A third-party decoder gave up on the data (see [`untrusted::decoding`]).
    #[error("{0}")]
    Malformed(String),
}
