//! CLIP and GPT-2 as Burn modules, built from Hugging Face `config.json` and
//! `model.safetensors` bytes. This crate touches neither files nor the network: callers hand it
//! bytes, so the same code runs natively and in the browser.

pub mod clip;
pub mod device;
pub mod error;
pub mod generation;
pub mod gpt2;
mod hf_config;
pub mod nn;
pub mod tensor;
pub mod weights;

pub use clip::{Clip, ClipConfig};
pub use error::{ModelError, TensorProblem};
pub use gpt2::{Gpt2, Gpt2Config, KvCache};
pub use tensor::l2_normalize;
