//! Learnable prefix parameters of a frozen GPT-2.
//!
//! Two kinds, usable together:
//! - key/value offsets per layer over a short dummy prefix (ZeroCap, Tewel et al. 2022,
//!   <https://arxiv.org/abs/2111.14447>, optimises the LM's context cache the same way): the frozen
//!   model computes the keys and values of the prefix tokens once, the offsets are added to them;
//! - soft-prompt embeddings (Lester et al. 2021, <https://arxiv.org/abs/2104.08691>) fed as inputs
//!   right after the prefix.
//!
//! The frozen model's weights live on a plain device and these parameters on its autodiff twin,
//! so gradients reach the prefix only: the weights are constants in every graph.

use burn::module::Param;
use burn::prelude::*;
use glimpse_models::gpt2::LayerKv;
use glimpse_models::{Gpt2, KvCache};

#[derive(Module, Debug)]
pub struct Prefix {
    /// Added to the frozen keys and values, all layers in one parameter (layer `i`'s keys at `2 i`,
    /// its values at `2 i + 1`): `[2 layers, batch, heads, prefix_len, head_dim]`. One parameter is
    /// one AdamW update per step (14 kernel launches on wgpu); a parameter per layer and kind made
    /// it 24 updates (336 launches).
    kv_offsets: Param<Tensor<5>>,
    /// `[batch, soft_len, n_embd]`, `None` without a soft prompt.
    soft_prompt: Option<Param<Tensor<3>>>,
    /// The frozen keys and values of the dummy prefix, stacked as `kv_offsets`.
    #[module(skip)]
    frozen: Tensor<5>,
}

impl Prefix {
    /// Zero offsets over `base` (the frozen cache of the dummy prefix, which stays on its own
    /// plain device) and a soft prompt of `soft_init` (`[batch, soft_len, n_embd]`, e.g.
    /// embeddings of real tokens), both on `device` (an autodiff device); the soft prompt starts as
    /// a new leaf on `soft_init`'s own device, so no value is read back.
    ///
    /// # Panics
    /// If `base` holds no layers.
    pub fn new(base: &KvCache, soft_init: Option<Tensor<3>>, device: &Device) -> Self {
        assert!(!base.layers().is_empty(), "a prefix needs the frozen cache of at least one layer");
        let frozen = Tensor::stack(base.layers().iter().flat_map(|kv| [kv.keys(), kv.values()]).collect(), 0);
        Self {
            kv_offsets: Param::from_tensor(Tensor::zeros(frozen.dims(), device).require_grad()),
            soft_prompt: soft_init.map(|t| Param::from_tensor(t.without_autodiff().autodiff().require_grad())),
            frozen,
        }
    }

    /// The frozen cache of the dummy prefix plus the offsets.
    pub fn cache(&self) -> KvCache {
        let kv = self.frozen.clone() + self.kv_offsets.val();
        let part = |i: usize| kv.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        KvCache::from_layers(
            (0..kv.dims()[0] / 2).map(|layer| LayerKv::new(part(2 * layer), part(2 * layer + 1))).collect(),
        )
    }

    /// Runs the frozen LM over `embeds` (`[batch, t, n_embd]`) after the prefix and returns the
    /// next-token logits of the last position, `[batch, vocab]`.
    pub fn next_logits(&self, lm: &Gpt2, embeds: Tensor<3>) -> Tensor<2> {
        let cache = self.cache();
        let embeds = match &self.soft_prompt {
            Some(soft) => Tensor::cat(vec![soft.val(), embeds], 1),
            None => embeds,
        };
        let [b, t, _] = embeds.dims();
        let last = lm.forward_after(embeds, &cache).narrow(1, t - 1, 1);
        lm.logits(last).reshape([b, lm.vocab_size()])
    }
}
