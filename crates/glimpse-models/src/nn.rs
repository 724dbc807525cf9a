//! Building blocks shared by CLIP and GPT-2: activations, multi-head attention, LayerNorm setup.

use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, sigmoid, softmax};
use serde::Deserialize;

/// Activation functions by their Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// tanh approximation of GELU, GPT-2.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
}

impl Activation {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid(x * 1.702),
            Self::GeluTanh => gelu_approximate(x),
            Self::Gelu => gelu(x),
        }
    }
}

pub(crate) fn layer_norm(d_model: usize, epsilon: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d_model)
        .with_epsilon(epsilon)
        .init(device)
}

/// `[batch, seq, heads * head_dim]` -> `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_head, d / n_head]).swap_dims(1, 2)
}

/// `[batch, heads, seq, head_dim]` -> `[batch, seq, heads * head_dim]`.
pub(crate) fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, dh] = x.dims();
    x.swap_dims(1, 2).reshape([b, t, h * dh])
}

/// Scaled dot-product attention.
///
/// `q`: `[batch, heads, t, head_dim]`, `k`/`v`: `[batch, heads, s, head_dim]` -> `[batch, heads, t, head_dim]`.
/// With `causal_past = Some(p)`, query `i` sees keys `0..=p + i` (the first `p` keys are a cache).
pub(crate) fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    causal_past: Option<usize>,
) -> Tensor<4> {
    let [_, _, t, dh] = q.dims();
    let s = k.dims()[2];
    let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
    let scores = match causal_past {
        // A large finite value, not -inf: a fully masked row would turn -inf into NaN.
        Some(past) => {
            let mask = Tensor::<2, Bool>::tril_mask([t, s], past as i64, &scores.device());
            scores.mask_fill(mask.unsqueeze::<4>(), -1.0e9)
        }
        None => scores,
    };
    softmax(scores, 3).matmul(v)
}
