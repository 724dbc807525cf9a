//! Contrastive training of the world's tiny CLIP (the symmetric InfoNCE loss of Radford et al.
//! 2021) on rendered scenes and their captions.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use glimpse_media::image::{CLIP_MEAN, CLIP_STD, ImagePreprocess};
use glimpse_media::rng::{Rng, derive_seed};
use glimpse_media::tokenizer::ClipTokenizer;
use glimpse_models::{Clip, ClipConfig, l2_normalize};
use glimpse_world::render::{RenderConfig, Scene};
use glimpse_world::scene::{Attributes, TEMPLATE_COUNT, caption};
use glimpse_world::video::Camera;
use image::RgbImage;

use crate::TrainError;
use crate::tokenizer::{CLIP_SPECIALS, LEAD_INS, words};
use crate::trainer::{Schedule, Trainer};

/// Side of the world CLIP's input images, in pixels.
pub(crate) const IMAGE_SIZE: usize = 64;

/// The world CLIP: a 4 x 4 grid of 16-pixel patches, 3 vision and 2 text layers of width 128.
pub(crate) fn world_clip_config() -> ClipConfig {
    let vocab = CLIP_SPECIALS.len() + words().len();
    let json = serde_json::json!({
        "text_config": {
            "vocab_size": vocab, "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 24, "hidden_act": "quick_gelu",
            "eos_token_id": 1
        },
        "vision_config": {
            "hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
            "image_size": IMAGE_SIZE, "patch_size": 16, "hidden_act": "quick_gelu"
        },
        "projection_dim": 64
    });
    serde_json::from_value(json).expect("the world CLIP config parses")
}

/// `preprocessor_config.json` of CLIP's pipeline at `image_size` pixels (64 for the world CLIP).
pub fn preprocessor_json(image_size: usize) -> String {
    let json = serde_json::json!({
        "do_resize": true, "size": {"shortest_edge": image_size}, "resample": 3,
        "do_center_crop": true, "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": true, "rescale_factor": 1.0 / 255.0, "do_normalize": true,
        "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "image_processor_type": "CLIPImageProcessor"
    });
    serde_json::to_string_pretty(&json).expect("json serialises")
}

#[derive(Debug, Clone)]
pub struct ClipTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
    pub render: RenderConfig,
    /// Share of training images filmed as the hard world's camera films a frame
    /// ([`Camera::film_still`] with [`Camera::HARD`]: panned, crossfading into the next shot).
    pub filmed: f64,
}

impl Default for ClipTrainConfig {
    fn default() -> Self {
        Self {
            steps: 2000,
            batch_size: 96,
            lr: 2e-4,
            warmup: 200,
            seed: 0,
            render: RenderConfig::default(),
            filmed: 0.5,
        }
    }
}

/// Share of training captions cut after a random number of words.
const PARTIAL_CAPTIONS: f64 = 0.3;

/// One training batch: distinct attribute sets, one rendered scene and one caption each (a random
/// template, sometimes after a lead-in such as "video showing"). Some captions are cut short:
/// CLIP-guided decoding scores unfinished captions token by token, and a CLIP that has only seen
/// whole sentences ranks their beginnings poorly. A share `filmed` of the images are filmed
/// frames (panned, part-way into a neighbouring shot on the same background, an empty one in a
/// third of cases), keeping the caption of the shot they belong to.
pub fn batch(seed: u64, step: usize, size: usize, render: &RenderConfig, filmed: f64) -> (Vec<RgbImage>, Vec<String>) {
    let mut rng = Rng::new(derive_seed(seed, step as u64));
    let mut seen: Vec<Attributes> = Vec::with_capacity(size);
    let (mut images, mut texts) = (Vec::with_capacity(size), Vec::with_capacity(size));
    while seen.len() < size {
        let attributes = Attributes::sample(&mut rng);
        if seen.contains(&attributes) {
            continue;
        }
        seen.push(attributes);
        let scene = Scene::sample(Some(attributes), &mut rng);
        let mut image = scene.render(render, &mut rng);
        if rng.chance(filmed) {
            let shown = if rng.chance(1.0 / 3.0) { None } else { Some(Attributes::sample(&mut rng)) };
            let neighbour = Scene::sample_on(scene.background, shown, &mut rng).render(render, &mut rng);
            image = Camera::HARD.film_still(&image, &neighbour, &mut rng);
        }
        images.push(image);
        let mut text = caption(&attributes, rng.below(TEMPLATE_COUNT));
        if rng.chance(PARTIAL_CAPTIONS) {
            let words: Vec<&str> = text.split(' ').collect();
            text = words[..1 + rng.below(words.len())].join(" ");
        }
        texts.push(match rng.chance(0.3) {
            true => format!("{} {text}", rng.pick(&LEAD_INS)),
            false => text,
        });
    }
    (images, texts)
}

/// `[n, 3, size, size]` pixels of `images` after `preprocess`.
pub fn pixels(preprocess: &ImagePreprocess, images: &[RgbImage], device: &Device) -> Result<Tensor<4>, TrainError> {
    let mut values = Vec::new();
    let mut side = (0, 0);
    for image in images {
        let (v, hw) = preprocess.apply(image)?;
        values.extend(v);
        side = hw;
    }
    let shape = [images.len(), 3, side.0 as usize, side.1 as usize];
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// A CLIP under training.
pub(crate) struct ClipTraining {
    pub(crate) trainer: Trainer<Clip>,
    config: ClipTrainConfig,
}

impl ClipTraining {
    /// Continues from `step` with `model` on an autodiff device.
    pub fn new(model: Clip, step: usize, config: ClipTrainConfig) -> Self {
        let schedule = Schedule::cosine(config.lr, config.warmup, config.steps);
        Self { trainer: Trainer::new(model, step, 0.05, schedule), config }
    }

    /// Trains until step `until` (at most the configured total); `on_step(step, loss)` after each.
    pub async fn run(
        &mut self,
        until: usize,
        tokenizer: &ClipTokenizer,
        preprocess: &ImagePreprocess,
        device: &Device,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<(), TrainError> {
        let c = &self.config;
        while self.trainer.before(until) {
            let (images, texts) = batch(c.seed, self.trainer.step, c.batch_size, &c.render, c.filmed);
            let ids = texts.iter().map(|t| tokenizer.encode(t)).collect::<Result<Vec<_>, _>>()?;
            let pixels = pixels(preprocess, &images, device)?;
            let loss = contrastive_loss(&self.trainer.model, pixels, &ids, device)?;
            let value = self.trainer.step(loss).await?;
            on_step(self.trainer.step, value);
        }
        Ok(())
    }
}

/// Mean of the image->text and text->image cross-entropies over the batch's similarity matrix,
/// with CLIP's temperature capped at 100.
fn contrastive_loss(
    model: &Clip,
    pixels: Tensor<4>,
    ids: &[Vec<u32>],
    device: &Device,
) -> Result<Tensor<1>, TrainError> {
    let n = ids.len();
    let images = l2_normalize(model.encode_image(pixels)?);
    let texts = l2_normalize(model.encode_text(ids, device)?);
    let logits = images.matmul(texts.transpose()) * model.logit_scale().clamp_max(100.0).unsqueeze::<2>();
    let targets = Tensor::<1, Int>::arange(0..n as i64, device).unsqueeze_dim::<2>(1);
    let per_image = log_softmax(logits.clone(), 1).gather(1, targets.clone()).mean();
    let per_text = log_softmax(logits.transpose(), 1).gather(1, targets).mean();
    Ok((per_image + per_text).neg() / 2.0)
}

#[cfg(test)]
mod tests {
    use burn::optim::{AdamWConfig, GradientsParams};
    use futures_lite::future::block_on;
    use glimpse_models::tensor::read;

    use super::*;
    use crate::tokenizer::{clip_tokenizer_json, words};

    /// Sixty optimiser steps at the default peak learning rate drive the loss on one fixed batch
    /// well below chance (with Burn's N(0, 1) position embeddings, or at a learning rate of 1e-3,
    /// it stayed at chance).
    #[test]
    fn training_steps_fit_a_fixed_batch() {
        const STEPS: usize = 60;
        let device = Device::flex().autodiff();
        device.seed(5);
        let config = world_clip_config();
        let tokenizer = ClipTokenizer::from_json(clip_tokenizer_json(&words()).unwrap().as_bytes(), 24).unwrap();
        let preprocess = ImagePreprocess::from_json(preprocessor_json(IMAGE_SIZE).as_bytes(), 64).unwrap();
        let (images, texts) = batch(3, 0, 8, &RenderConfig::default(), 0.5);
        let ids: Vec<_> = texts.iter().map(|t| tokenizer.encode(t).unwrap()).collect();
        let mut model = config.init(&device);
        let mut optim = AdamWConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..STEPS {
            let pixels = pixels(&preprocess, &images, &device).unwrap();
            let loss = contrastive_loss(&model, pixels, &ids, &device).unwrap();
            losses.push(block_on(read::<1, Float, f32>(loss.clone().detach())).unwrap()[0]);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(ClipTrainConfig::default().lr, model, grads);
        }
        assert!(losses[STEPS - 1] < 0.5 * (8f32).ln(), "{losses:?}");
    }
}
