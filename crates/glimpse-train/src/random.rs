//! Checkpoints with the shapes of real models (GPT-2 small, CLIP ViT-B/32, or any config) and
//! random weights, in the Hugging Face layout, with word-level tokenizers of the real vocabulary
//! sizes over made-up words (`w0`, `w1`, ...): what benchmarks and memory tests load where real
//! weights cannot be downloaded. Text costs what it costs with the real checkpoints, one token
//! per word.

use std::path::Path;

use glimpse_models::{ClipConfig, Gpt2Config};

use crate::TrainError;
use crate::tokenizer::{CLIP_SPECIALS, GPT2_SPECIALS, clip_tokenizer_json, gpt2_tokenizer_json};

/// `count` made-up words: `w0`, `w1`, ...
pub fn made_up_words(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("w{i}")).collect()
}

/// A GPT-2 tokenizer with exactly `config.vocab_size` ids (each word with and without a leading
/// space, plus the specials; one id short when the count is odd). Its end-of-text token is id 0
/// (the first of [`GPT2_SPECIALS`]): pair it with [`with_made_up_specials`]'s config.
pub fn gpt2_tokenizer_for(config: &Gpt2Config) -> Result<String, TrainError> {
    gpt2_tokenizer_json(&made_up_words(config.vocab_size.saturating_sub(GPT2_SPECIALS.len()) / 2))
}

/// `config` with the made-up tokenizer's end-of-text id for its `eos_token_id`: a checkpoint's
/// special ids must be tokens of its tokenizer (GPT-2 small's 50256 is none of the made-up one's).
pub fn with_made_up_specials(config: &Gpt2Config) -> Gpt2Config {
    let mut config = config.clone();
    config.eos_token_id = Some(0);
    config
}

/// A CLIP tokenizer with `config.text_config.vocab_size` ids. It ends a text with id 1 (the second
/// of [`CLIP_SPECIALS`]): pair it with [`clip_with_made_up_specials`]'s config.
pub fn clip_tokenizer_for(config: &ClipConfig) -> Result<String, TrainError> {
    clip_tokenizer_json(&made_up_words(config.text_config.vocab_size.saturating_sub(CLIP_SPECIALS.len())))
}

/// `config` pooling texts at the made-up tokenizer's end token: CLIP ViT-B/32's legacy
/// `eos_token_id` pools at the largest id, which the made-up tokenizer's end token is not.
pub fn clip_with_made_up_specials(config: &ClipConfig) -> ClipConfig {
    let mut config = config.clone();
    config.text_config.eos_token_id = 1;
    config
}

/// Writes a GPT-2 of `config` with random weights into `dir` (created if needed).
pub async fn write_random_gpt2(
    config: &Gpt2Config,
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(), TrainError> {
    let config = &with_made_up_specials(config);
    config.validate()?;
    ensure_no_checkpoint(dir)?;
    let tokenizer = gpt2_tokenizer_for(config)?;
    let weights = config.init(device).to_safetensors().await?;
    write(dir, &[("config.json", config.to_json().as_bytes()), ("tokenizer.json", tokenizer.as_bytes())], &weights)
}

/// Writes a CLIP of `config` with random weights into `dir`, with CLIP's preprocessing.
pub async fn write_random_clip(
    config: &ClipConfig,
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(), TrainError> {
    let config = &clip_with_made_up_specials(config);
    config.validate()?;
    ensure_no_checkpoint(dir)?;
    let tokenizer = clip_tokenizer_for(config)?;
    let preprocessor = crate::clip::preprocessor_json(config.vision_config.image_size);
    let weights = config.init(device).to_safetensors().await?;
    let config = config.to_json();
    let files = [
        ("config.json", config.as_bytes()),
        ("tokenizer.json", tokenizer.as_bytes()),
        ("preprocessor_config.json", preprocessor.as_bytes()),
    ];
    write(dir, &files, &weights)
}

/// Refused before the weights are made: `dir` holding a checkpoint already.
fn ensure_no_checkpoint(dir: &Path) -> Result<(), TrainError> {
    glimpse_media::files::ensure_no_checkpoint(dir).map_err(|e| TrainError::Config(e.to_string()))
}

/// The files and the weights, as one checkpoint.
fn write(dir: &Path, files: &[(&str, &[u8])], weights: &[u8]) -> Result<(), TrainError> {
    let all: Vec<(&str, &[u8])> = files.iter().copied().chain([(crate::checkpoint::WEIGHTS_FILE, weights)]).collect();
    glimpse_media::files::write_checkpoint(dir, &all)
        .map_err(|source| TrainError::Io { path: dir.display().to_string(), source })
}
