//! A model with what it needs to take text and images: its tokenizer and preprocessing.

use burn::prelude::*;
use glimpse_media::image::image_settings_file;
use glimpse_media::{ClipTokenizer, Gpt2Tokenizer, ImagePreprocess};
use image::RgbImage;

use crate::hf_config::model_type;
use crate::weights::WeightFile;
use crate::{Clip, ClipConfig, Gpt2, Gpt2Config, ModelError, ModelFiles, WeightFormat, memory};

/// Loads with `load`, any error naming the checkpoint.
fn in_checkpoint<T>(checkpoint: &str, load: impl FnOnce() -> Result<T, ModelError>) -> Result<T, ModelError> {
    load().map_err(|error| ModelError::Checkpoint { checkpoint: checkpoint.to_string(), source: Box::new(error) })
}

/// The weights of `files`, opened, once they are known to fit in the host's memory where they
/// are to live there (the CPU backend; a GPU holds its own).
fn fitting<'f>(files: &'f ModelFiles, device: &Device) -> Result<WeightFile<'f>, ModelError> {
    let file = files.weights.open()?;
    if glimpse_kernels::is_cpu(device) {
        memory::check_fits(file.loaded_bytes(), memory::available())?;
    }
    Ok(file)
}

/// The `model.safetensors` of checkpoint `files` (CLIP or GPT-2, by its `model_type`) stored in
/// `format`. The checkpoint is loaded as a bundle first, so a conversion never writes a folder
/// that would not load.
pub async fn convert_weights(files: &ModelFiles, format: WeightFormat, device: &Device) -> Result<Vec<u8>, ModelError> {
    let named = |error| ModelError::Checkpoint { checkpoint: files.source.clone(), source: Box::new(error) };
    match model_type(&files.config).map_err(named)?.as_deref() {
        Some("clip") => ClipBundle::load(files, device)?.model.to_safetensors_as(format).await.map_err(named),
        Some("gpt2") => Gpt2Bundle::load(files, device)?.model.to_safetensors_as(format).await.map_err(named),
        other => Err(named(ModelError::InvalidConfig(format!(
            "model_type is {}; glimpse converts CLIP (\"clip\") and GPT-2 (\"gpt2\") checkpoints",
            other.map_or("missing".to_string(), |found| format!("\"{found}\""))
        )))),
    }
}

/// CLIP with its tokenizer and image preprocessing.
pub struct ClipBundle {
    /// Where the model came from, for messages.
    pub source: String,
    pub model: Clip,
    pub config: ClipConfig,
    pub tokenizer: ClipTokenizer,
    pub preprocess: ImagePreprocess,
    pub device: Device,
}

impl ClipBundle {
    /// Errors name the checkpoint (`files.source`).
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, ModelError> {
        in_checkpoint(&files.source, || {
            let config = ClipConfig::from_json(&files.config)?;
            let image_size = config.vision_config.image_size as u32;
            let settings = image_settings_file(files.processor.as_deref(), files.preprocessor.as_deref())?;
            let preprocess = match settings {
                Some(json) => ImagePreprocess::from_json(json, image_size)?,
                None => ImagePreprocess::clip_default(image_size),
            };
            let tokenizer = ClipTokenizer::from_json(&files.tokenizer, config.text_config.max_position_embeddings)?;
            tokenizer.check_vocab(config.text_config.vocab_size)?;
            tokenizer.check_end_token(config.text_config.pooled_token())?;
            let model = Clip::load_weights(&config, &fitting(files, device)?, device)?;
            Ok(Self { source: files.source.clone(), model, config, tokenizer, preprocess, device: device.clone() })
        })
    }

    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ModelError> {
        Ok(texts.iter().map(|t| self.tokenizer.encode(t)).collect::<Result<_, _>>()?)
    }

    /// Projected text embeddings, not normalised: `[texts, projection_dim]`.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Tensor<2>, ModelError> {
        self.model.encode_text(&self.tokenize(texts)?, &self.device)
    }

    /// Preprocessed pixels, `[images, 3, size, size]` at the model's image size. Only a
    /// preprocessor that resizes without cropping can give another size (a shortest-edge resize of
    /// an image that is not square), refused here before any image is encoded.
    pub fn pixels(&self, images: &[RgbImage]) -> Result<Tensor<4>, ModelError> {
        let size = self.model.image_size();
        let mut values = Vec::with_capacity(images.len() * 3 * size * size);
        for image in images {
            let (pixels, (h, w)) = self.preprocess.apply(image)?;
            if (h as usize, w as usize) != (size, size) {
                return Err(ModelError::Input(format!(
                    "a {}x{} image preprocesses to {w}x{h} pixels where the model takes {size}x{size}: the \
                     checkpoint's image settings (preprocessor_config.json or processor_config.json) resize \
                     without cropping (do_center_crop is false), which fits square images only; crop the image \
                     square, or set do_center_crop to true",
                    image.width(),
                    image.height()
                )));
            }
            values.extend(pixels);
        }
        if images.is_empty() {
            return Err(ModelError::Input("no image to encode".into()));
        }
        Ok(Tensor::from_data(TensorData::new(values, [images.len(), 3, size, size]), &self.device))
    }

    /// Projected image embeddings, not normalised: `[images, projection_dim]`.
    pub fn encode_images(&self, images: &[RgbImage]) -> Result<Tensor<2>, ModelError> {
        self.model.encode_image(self.pixels(images)?)
    }
}

/// GPT-2 with its tokenizer.
pub struct Gpt2Bundle {
    pub model: Gpt2,
    pub config: Gpt2Config,
    pub tokenizer: Gpt2Tokenizer,
    pub device: Device,
}

impl Gpt2Bundle {
    /// Errors name the checkpoint (`files.source`).
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, ModelError> {
        in_checkpoint(&files.source, || {
            let config = Gpt2Config::from_json(&files.config)?;
            let tokenizer = Gpt2Tokenizer::from_json(&files.tokenizer)?;
            tokenizer.check_vocab(config.vocab_size)?;
            for (field, id) in config.special_token_ids() {
                tokenizer.check_special_id(field, id)?;
            }
            let model = Gpt2::load_weights(&config, &fitting(files, device)?, device)?;
            Ok(Self { model, config, tokenizer, device: device.clone() })
        })
    }
}
