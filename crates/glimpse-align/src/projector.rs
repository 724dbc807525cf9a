//! A projector from CLIP embeddings into the input space of a frozen LM: LiMBeR (Merullo et al.
//! 2022, <https://arxiv.org/abs/2209.15162>) uses a linear map, ClipCap (Mokady et al. 2021,
//! <https://arxiv.org/abs/2111.09734>) an MLP. One CLIP embedding becomes `prefix_len` LM input
//! embeddings; captions then follow from ordinary decoding.
//!
//! Saved as one safetensors file: the weights in Burn's `[in, out]` layout and the config as JSON
//! under the metadata key `glimpse.projector`.

use std::collections::HashMap;

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use glimpse_models::ModelError;
use glimpse_models::weights::{Layout, Loader, Saver, Tensors, WeightFile};
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
            return Err(AlignError::Settings(format!("projector sizes {self:?} are out of range")));
        }
        Ok(())
    }

    /// Checks that the projector maps embeddings of `clip_dim` (CLIP's `projection_dim`) into
    /// inputs of `lm_dim` (GPT-2's `n_embd`).
    pub fn check_fits(&self, clip_dim: usize, lm_dim: usize) -> Result<(), AlignError> {
        if (self.clip_dim, self.lm_dim) == (clip_dim, lm_dim) {
            return Ok(());
        }
        Err(AlignError::Input(format!(
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
    /// The device the weights are on.
    pub fn device(&self) -> Device {
        self.input.weight.val().device()
    }

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
            AlignError::Input(format!("not a glimpse projector: the file has no `{METADATA_KEY}` metadata"))
        })?;
        let config: ProjectorConfig =
            serde_json::from_str(json).map_err(|e| AlignError::Input(format!("projector config: {e}")))?;
        config.validate()?;
        let file = WeightFile::parse(bytes)?;
        let loader = Loader::new(&file, device);
        let mut projector = config.init(device);
        projector.walk(&loader);
        loader.finish(|_| false)?;
        Ok(projector)
    }
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
