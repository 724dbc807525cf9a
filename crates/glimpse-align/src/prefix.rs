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
    /// Per layer, added to the frozen keys / values: `[batch, heads, prefix_len, head_dim]`.
    key_offsets: Vec<Param<Tensor<4>>>,
    value_offsets: Vec<Param<Tensor<4>>>,
    /// `[batch, soft_len, n_embd]`, `None` without a soft prompt.
    soft_prompt: Option<Param<Tensor<3>>>,
}

impl Prefix {
    /// Zero offsets over `base` (the frozen cache of the dummy prefix) and a soft prompt of
    /// `soft_init` (`[batch, soft_len, n_embd]`, e.g. embeddings of real tokens), all on `device`
    /// (an autodiff device); the soft prompt starts as a new leaf on `soft_init`'s own device, so
    /// no value is read back.
    pub fn new(base: &KvCache, soft_init: Option<Tensor<3>>, device: &Device) -> Self {
        let zeros = |t: &Tensor<4>| Param::from_tensor(Tensor::zeros(t.dims(), device).require_grad());
        Self {
            key_offsets: base.layers().iter().map(|kv| zeros(&kv.keys())).collect(),
            value_offsets: base.layers().iter().map(|kv| zeros(&kv.values())).collect(),
            soft_prompt: soft_init.map(|t| Param::from_tensor(t.without_autodiff().autodiff().require_grad())),
        }
    }

    /// The frozen cache of the dummy prefix plus the offsets.
    pub fn cache(&self, base: &KvCache) -> KvCache {
        let layers = base
            .layers()
            .iter()
            .zip(self.key_offsets.iter().zip(&self.value_offsets))
            .map(|(kv, (dk, dv))| LayerKv::new(kv.keys() + dk.val(), kv.values() + dv.val()))
            .collect();
        KvCache::from_layers(layers)
    }

    /// Runs the frozen LM over `embeds` (`[batch, t, n_embd]`) after the prefix and returns the
    /// next-token logits of the last position, `[batch, vocab]`.
    pub fn next_logits(&self, lm: &Gpt2, base: &KvCache, embeds: Tensor<3>) -> Tensor<2> {
        let mut cache = self.cache(base);
        let embeds = match &self.soft_prompt {
            Some(soft) => Tensor::cat(vec![soft.val(), embeds], 1),
            None => embeds,
        };
        let [b, t, _] = embeds.dims();
        let last = lm.forward_embeds(embeds, &mut cache).narrow(1, t - 1, 1);
        lm.logits(last).reshape([b, lm.vocab_size()])
    }
}
