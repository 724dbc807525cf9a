//! CLIP and GPT-2 as Burn modules, built from a Hugging Face checkpoint's files ([`ModelFiles`]:
//! bytes in memory, a folder, or any random-access source), and bundled with their tokenizer and
//! preprocessing ([`ClipBundle`], [`Gpt2Bundle`]). No network: where the files come from is
//! `glimpse-hub`'s concern, so the same code runs natively and in the browser.

mod bundle;
pub mod clip;
pub mod device;
pub mod error;
mod files;
pub mod generation;
pub mod gpt2;
mod hf_config;
pub mod memory;
pub mod nn;
pub mod tensor;
pub mod weights;

pub use bundle::{ClipBundle, Gpt2Bundle, convert_weights};
pub use clip::{Clip, ClipConfig};
pub use error::{ModelError, TensorProblem};
pub use files::{ModelFiles, Weights, max_json_bytes};
pub use gpt2::{Gpt2, Gpt2Config, KvCache};
pub use tensor::l2_normalize;
pub use weights::WeightFormat;
