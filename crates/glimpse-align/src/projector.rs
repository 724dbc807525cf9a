//! A projector from CLIP embeddings into the input space of a frozen LM: LiMBeR (Merullo et al.
//! 2022, <https://arxiv.org/abs/2209.15162>) uses a linear map, ClipCap (Mokady et al. 2021,
//! <https://arxiv.org/abs/2111.09734>) an MLP. One CLIP embedding becomes `prefix_len` LM input
//! embeddings; captions then follow from ordinary decoding.
//!
//! Saved as one safetensors file: the weights in Burn's `[in, out]` layout and the config as JSON
//! under the metadata key `glimpse.projector`.

use std::collections::HashMap;

use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use glimpse_models::tensor::read;
use glimpse_models::weights::{Layout, Loader, Saver, Tensors, WeightFile};
use glimpse_models::{Gpt2, KvCache, ModelError};
use serde::{Deserialize, Serialize};

use crate::AlignError;

const METADATA_KEY: &str = "glimpse.projector";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorConfig {
    /// Width of the CLIP embedding (its `projection_dim`).
    pub clip_dim: usize,
    /// Width of the LM's input embeddings (`n_embd`).
    pub lm_dim: usize,
    /// LM input embeddings made from one CLIP embedding.
    pub prefix_len: usize,
    /// Hidden width of a two-layer MLP with tanh; `None` for a linear map.
    pub hidden: Option<usize>,
}

/// The most LM input embeddings one CLIP embedding may become.
pub const MAX_PREFIX_LEN: usize = 64;

/// The widest layer input or output of a projector.
pub const MAX_WIDTH: usize = 1 << 14;

impl ProjectorConfig {
    pub fn validate(&self) -> Result<(), AlignError> {
        let sizes = [self.clip_dim, self.lm_dim, self.prefix_len, self.hidden.unwrap_or(1)];
        // The sizes are bounded before they are multiplied.
        if sizes.iter().any(|&s| s == 0 || s > MAX_WIDTH)
            || self.prefix_len > MAX_PREFIX_LEN
            || self.prefix_len * self.lm_dim > 1 << 17
        {
            return Err(AlignError::Config(format!("projector sizes {self:?} are out of range")));
        }
        Ok(())
    }

    /// Checks that the projector maps embeddings of `clip_dim` (CLIP's `projection_dim`) into
    /// inputs of `lm_dim` (GPT-2's `n_embd`).
    pub fn check_fits(&self, clip_dim: usize, lm_dim: usize) -> Result<(), AlignError> {
        if (self.clip_dim, self.lm_dim) == (clip_dim, lm_dim) {
            return Ok(());
        }
        Err(AlignError::Config(format!(
            "the projector maps {}-d CLIP embeddings to {}-d GPT-2 inputs, but the CLIP's projection_dim is \
             {clip_dim} and the GPT-2's n_embd {lm_dim}; use a projector trained for these models \
             (glimpse train projector)",
            self.clip_dim, self.lm_dim
        )))
    }

    pub fn init(&self, device: &Device) -> Projector {
        let out = self.prefix_len * self.lm_dim;
        let (input, output) = match self.hidden {
            None => (LinearConfig::new(self.clip_dim, out).init(device), None),
            Some(h) => (LinearConfig::new(self.clip_dim, h).init(device), Some(LinearConfig::new(h, out).init(device))),
        };
        Projector { input, output, config: self.clone() }
    }
}

#[derive(Module, Debug)]
pub struct Projector {
    input: Linear,
    output: Option<Linear>,
    #[module(skip)]
    config: ProjectorConfig,
}

impl Projector {
    pub fn config(&self) -> &ProjectorConfig {
        &self.config
    }

    /// `[batch, clip_dim]` -> `[batch, prefix_len, lm_dim]`.
    pub fn forward(&self, clip: Tensor<2>) -> Tensor<3> {
        let b = clip.dims()[0];
        let x = self.input.forward(clip);
        let x = match &self.output {
            Some(output) => output.forward(x.tanh()),
            None => x,
        };
        x.reshape([b, self.config.prefix_len, self.config.lm_dim])
    }

    /// The safetensors bytes of this projector.
    pub async fn to_safetensors(&self) -> Result<Vec<u8>, AlignError> {
        let saver = Saver::default();
        self.clone().walk(&saver);
        let config = serde_json::to_string(&self.config).expect("config serialises");
        Ok(saver.to_safetensors(HashMap::from([(METADATA_KEY.to_string(), config)])).await?)
    }

    fn walk(&mut self, tensors: &impl Tensors) {
        tensors.linear("input", &mut self.input, Layout::AsStored);
        if let Some(output) = self.output.as_mut() {
            tensors.linear("output", output, Layout::AsStored);
        }
    }

    /// Reads a projector written by [`Projector::to_safetensors`].
    pub fn from_safetensors(bytes: &[u8], device: &Device) -> Result<Self, AlignError> {
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| ModelError::CorruptWeights(e.to_string()))?;
        let json = metadata.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)).ok_or_else(|| {
            AlignError::Config(format!("not a glimpse projector: the file has no `{METADATA_KEY}` metadata"))
        })?;
        let config: ProjectorConfig =
            serde_json::from_str(json).map_err(|e| AlignError::Config(format!("projector config: {e}")))?;
        config.validate()?;
        let file = WeightFile::parse(bytes)?;
        let loader = Loader::new(&file, device);
        let mut projector = config.init(device);
        projector.walk(&loader);
        loader.finish(|_| false)?;
        Ok(projector)
    }
}

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
        Self { epochs: 10, lr: 1e-3, batch_size: 32 }
    }
}

/// Trains `projector` (on an autodiff device) against the frozen `lm` with caption
/// cross-entropy on the caption tokens only. Returns the projector and the mean loss of each
/// epoch; `on_epoch(epoch, loss)` reports progress.
pub async fn train(
    mut projector: Projector,
    lm: &Gpt2,
    examples: &[Example],
    config: &TrainConfig,
    mut on_epoch: impl FnMut(usize, f32),
) -> Result<(Projector, Vec<f32>), AlignError> {
    let dims = projector.config().clone();
    if examples.is_empty() || examples.iter().any(|e| e.caption.is_empty() || e.embedding.len() != dims.clip_dim) {
        return Err(AlignError::Config(format!(
            "training needs examples with a non-empty caption and a {}-d embedding",
            dims.clip_dim
        )));
    }
    let longest = examples.iter().map(|e| e.caption.len()).max().unwrap_or(0);
    lm.check_length(dims.prefix_len + longest)?;
    let device = projector.input.weight.val().device();
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut losses = Vec::with_capacity(config.epochs);
    for epoch in 0..config.epochs {
        let mut total = 0.0;
        for batch in examples.chunks(config.batch_size.max(1)) {
            let loss = caption_loss(&projector, lm, batch, &device);
            total += read::<1, Float, f32>(loss.clone().detach()).await?[0] * batch.len() as f32;
            let grads = GradientsParams::from_grads(loss.backward(), &projector);
            projector = optim.step(config.lr, projector, grads);
        }
        let mean = total / examples.len() as f32;
        losses.push(mean);
        on_epoch(epoch, mean);
    }
    Ok((projector, losses))
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
    let hidden = lm.forward_embeds(inputs, &mut KvCache::new()).narrow(1, n - 1, len);
    let logp = log_softmax(lm.logits(hidden), 2);
    let nll = logp.gather(2, targets.unsqueeze_dim(2)).reshape([b, len]).neg();
    (nll * mask.clone()).sum() / mask.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projectors_must_fit_both_models() {
        let config = ProjectorConfig { clip_dim: 12, lm_dim: 36, prefix_len: 4, hidden: None };
        assert!(config.check_fits(12, 36).is_ok());
        let err = config.check_fits(512, 36).unwrap_err().to_string();
        assert!(err.contains("projection_dim is 512"), "{err}");
        assert!(config.check_fits(12, 768).is_err());
        // Sizes that would overflow when multiplied are refused before.
        assert!(ProjectorConfig { prefix_len: usize::MAX, ..config.clone() }.validate().is_err());
        assert!(ProjectorConfig { lm_dim: usize::MAX, ..config }.validate().is_err());
    }
}
