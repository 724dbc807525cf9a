//! Training a projector (`glimpse_align::projector`) against a frozen GPT-2, and its training
//! pairs on the world: the frozen CLIP's unit-norm embeddings of rendered scenes and their
//! canonical captions.

use burn::prelude::*;
use glimpse_align::projector::{Projector, ProjectorConfig};
use glimpse_media::rng::{Rng, derive_seed};
use glimpse_models::tensor::{masked_nll, read};
use glimpse_models::{ClipBundle, Gpt2, Gpt2Bundle, KvCache, l2_normalize};
use glimpse_world::render::{RenderConfig, Scene};
use glimpse_world::scene::{Attributes, canonical_caption};

use crate::TrainError;
use crate::trainer::{Schedule, Trainer};

/// One training pair: a CLIP embedding and the caption's token ids (end them with the
/// end-of-text id for the projector to learn where captions stop).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub embedding: Vec<f32>,
    pub caption: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self { epochs: 6, lr: 1e-3, batch_size: 32 }
    }
}

/// A projector trained on the world (`glimpse train projector`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorldProjectorConfig {
    /// Training pairs rendered from the world.
    pub examples: usize,
    /// GPT-2 input embeddings made from one image.
    pub prefix_len: usize,
    /// Hidden width of a two-layer MLP (ClipCap); `None` for a linear map (LiMBeR).
    pub hidden: Option<usize>,
    pub train: TrainConfig,
    /// Seed of the examples and of the initial weights.
    pub seed: u64,
}

impl Default for WorldProjectorConfig {
    fn default() -> Self {
        Self { examples: 4096, prefix_len: 4, hidden: None, train: TrainConfig::default(), seed: 2 }
    }
}

/// What training a world projector reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProjectorProgress {
    /// The examples are rendered and encoded; training starts.
    Examples,
    /// An epoch ended with this mean loss.
    Epoch { epoch: usize, loss: f32 },
}

/// Trains a projector from `clip` into the frozen `lm` on world examples, on an autodiff
/// `device`; returns it with the mean loss of each epoch.
pub async fn train_world_projector(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    config: &WorldProjectorConfig,
    device: &Device,
    mut on: impl FnMut(ProjectorProgress),
) -> Result<(Projector, Vec<f32>), TrainError> {
    let projector = ProjectorConfig {
        clip_dim: clip.config.projection_dim,
        lm_dim: lm.model.n_embd(),
        prefix_len: config.prefix_len,
        hidden: config.hidden,
    };
    projector.validate()?;
    let examples = world_examples(clip, lm, config.examples, config.seed).await?;
    on(ProjectorProgress::Examples);
    // The initial weights follow the seed too.
    device.seed(config.seed);
    let projector = projector.init(device);
    train(projector, &lm.model, &examples, &config.train, |epoch, loss| on(ProjectorProgress::Epoch { epoch, loss }))
        .await
}

/// Trains `projector` (on an autodiff device) against the frozen `lm` with caption
/// cross-entropy on the caption tokens only. Returns the projector and the mean loss of each
/// epoch; `on_epoch(epoch, loss)` reports progress.
pub async fn train(
    projector: Projector,
    lm: &Gpt2,
    examples: &[Example],
    config: &TrainConfig,
    mut on_epoch: impl FnMut(usize, f32),
) -> Result<(Projector, Vec<f32>), TrainError> {
    let dims = projector.config().clone();
    if examples.is_empty() || examples.iter().any(|e| e.caption.is_empty() || e.embedding.len() != dims.clip_dim) {
        return Err(TrainError::Config(format!(
            "training needs examples with a non-empty caption and a {}-d embedding",
            dims.clip_dim
        )));
    }
    let longest = examples.iter().map(|e| e.caption.len()).max().unwrap_or(0);
    if dims.prefix_len.saturating_add(longest) > lm.n_positions() {
        return Err(TrainError::Config(format!(
            "a prefix of {} positions and the longest caption ({longest} tokens) need more than the {} positions \
             GPT-2 has (n_positions); ask for a shorter prefix",
            dims.prefix_len,
            lm.n_positions()
        )));
    }
    let device = projector.device();
    let batch_size = config.batch_size.max(1);
    let steps = config.epochs.saturating_mul(examples.len().div_ceil(batch_size));
    let mut trainer = Trainer::new(projector, 0, 0.0, Schedule::constant(config.lr, steps));
    let mut losses = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        let mut total = 0.0;
        for batch in examples.chunks(batch_size) {
            let loss = caption_loss(&trainer.model, lm, batch, &device);
            total += trainer.step(loss).await? * batch.len() as f32;
        }
        let mean = total / examples.len() as f32;
        losses.push(mean);
        on_epoch(epoch, mean);
    }
    Ok((trainer.model, losses))
}

/// Mean negative log-likelihood of the caption tokens after the projected prefix.
fn caption_loss(projector: &Projector, lm: &Gpt2, batch: &[Example], device: &Device) -> Tensor<1> {
    let b = batch.len();
    let n = projector.config().prefix_len;
    let len = batch.iter().map(|e| e.caption.len()).max().unwrap_or(1);
    let embeds: Vec<f32> = batch.iter().flat_map(|e| e.embedding.iter().copied()).collect();
    let prefix =
        projector.forward(Tensor::from_data(TensorData::new(embeds, [b, projector.config().clip_dim]), device));
    // Captions padded with their last token; padding is masked out of the loss.
    let padded: Vec<i64> = batch
        .iter()
        .flat_map(|e| (0..len).map(move |i| i64::from(*e.caption.get(i).unwrap_or(e.caption.last().unwrap()))))
        .collect();
    let mask: Vec<f32> =
        batch.iter().flat_map(|e| (0..len).map(move |i| if i < e.caption.len() { 1.0 } else { 0.0 })).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(padded, [b, len]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, len]), device);
    // The last caption token is only predicted, never fed.
    let inputs = match len {
        1 => prefix,
        _ => Tensor::cat(vec![prefix, lm.embed_tokens(targets.clone().narrow(1, 0, len - 1))], 1),
    };
    let hidden = lm.forward_after(inputs, &KvCache::new()).narrow(1, n - 1, len);
    masked_nll(lm.logits(hidden), targets, mask)
}

/// Scenes encoded per CLIP call.
const CHUNK: usize = 64;

/// `n` examples; each caption is the canonical one with a full stop, then the end-of-text token,
/// so decoding learns where to stop.
pub(crate) async fn world_examples(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TrainError> {
    let eos = lm.config.eos_token_id.ok_or_else(|| TrainError::Config("the LM has no eos_token_id".into()))?;
    let mut rng = Rng::new(derive_seed(seed, 0x9e37));
    let mut examples = Vec::with_capacity(n);
    while examples.len() < n {
        let count = CHUNK.min(n - examples.len());
        let mut images = Vec::with_capacity(count);
        let mut captions = Vec::with_capacity(count);
        for _ in 0..count {
            let attributes = Attributes::sample(&mut rng);
            images.push(Scene::sample(Some(attributes), &mut rng).render(&RenderConfig::default(), &mut rng));
            let ids = lm.tokenizer.encode(&format!("{}.", canonical_caption(&attributes)))?;
            captions.push([ids, vec![eos]].concat());
        }
        let embeds = l2_normalize(clip.encode_images(&images)?);
        let dim = embeds.dims()[1];
        let values = read::<2, burn::tensor::Float, f32>(embeds).await?;
        for (embedding, caption) in values.chunks(dim).zip(captions) {
            examples.push(Example { embedding: embedding.to_vec(), caption });
        }
    }
    Ok(examples)
}
