use burn::prelude::*;
use glimpse_media::{ClipTokenizer, Gpt2Tokenizer, ImagePreprocess};
use glimpse_models::{Clip, ClipConfig, Gpt2, Gpt2Config, ModelError};
use image::RgbImage;

use crate::{HubError, ModelFiles};

fn model_err(source_name: &str, source: ModelError) -> HubError {
    HubError::Model { source_name: source_name.to_string(), source }
}

fn media_err(source_name: &str, source: glimpse_media::MediaError) -> HubError {
    HubError::Media { source_name: source_name.to_string(), source }
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
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, HubError> {
        let config = ClipConfig::from_json(&files.config).map_err(|e| model_err(&files.source, e))?;
        let image_size = config.vision_config.image_size as u32;
        let preprocess = match &files.preprocessor {
            Some(json) => ImagePreprocess::from_json(json, image_size).map_err(|e| media_err(&files.source, e))?,
            None => ImagePreprocess::clip_default(image_size),
        };
        let context = config.text_config.max_position_embeddings;
        let tokenizer = ClipTokenizer::from_json(&files.tokenizer, context).map_err(|e| media_err(&files.source, e))?;
        tokenizer.check_vocab(config.text_config.vocab_size).map_err(|e| media_err(&files.source, e))?;
        let weights = files.weights.open().map_err(|e| model_err(&files.source, e))?;
        let model = Clip::load_weights(&config, &weights, device).map_err(|e| model_err(&files.source, e))?;
        Ok(Self { source: files.source.clone(), model, config, tokenizer, preprocess, device: device.clone() })
    }

    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, HubError> {
        texts.iter().map(|t| self.tokenizer.encode(t).map_err(|e| media_err(&self.source, e))).collect()
    }

    /// Projected text embeddings, not normalised: `[texts, projection_dim]`.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Tensor<2>, HubError> {
        let ids = self.tokenize(texts)?;
        self.model.encode_text(&ids, &self.device).map_err(|e| model_err(&self.source, e))
    }

    /// Preprocessed pixels, `[images, 3, height, width]`; every image must come out the same size
    /// (always true with a centre crop).
    pub fn pixels(&self, images: &[RgbImage]) -> Result<Tensor<4>, HubError> {
        let mut values = Vec::new();
        let mut size = None;
        for image in images {
            let (pixels, hw) = self.preprocess.apply(image).map_err(|e| media_err(&self.source, e))?;
            if size.is_some_and(|first| first != hw) {
                return Err(HubError::Layout(format!(
                    "images preprocess to different sizes ({:?} and {hw:?}); enable the centre crop",
                    size.unwrap()
                )));
            }
            size = Some(hw);
            values.extend(pixels);
        }
        let (h, w) = size.ok_or_else(|| HubError::Layout("no image to encode".into()))?;
        let shape = [images.len(), 3, h as usize, w as usize];
        Ok(Tensor::from_data(TensorData::new(values, shape), &self.device))
    }

    /// Projected image embeddings, not normalised: `[images, projection_dim]`.
    pub fn encode_images(&self, images: &[RgbImage]) -> Result<Tensor<2>, HubError> {
        self.model.encode_image(self.pixels(images)?).map_err(|e| model_err(&self.source, e))
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
    pub fn load(files: &ModelFiles, device: &Device) -> Result<Self, HubError> {
        let config = Gpt2Config::from_json(&files.config).map_err(|e| model_err(&files.source, e))?;
        let tokenizer = Gpt2Tokenizer::from_json(&files.tokenizer).map_err(|e| media_err(&files.source, e))?;
        tokenizer.check_vocab(config.vocab_size).map_err(|e| media_err(&files.source, e))?;
        let weights = files.weights.open().map_err(|e| model_err(&files.source, e))?;
        let model = Gpt2::load_weights(&config, &weights, device).map_err(|e| model_err(&files.source, e))?;
        Ok(Self { model, config, tokenizer, device: device.clone() })
    }
}
