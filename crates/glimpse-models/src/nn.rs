//! Building blocks shared by CLIP and GPT-2: activations, multi-head attention, LayerNorm setup.

use burn::module::{Initializer, Param};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid, softmax};
use burn::tensor::module::embedding;
use serde::{Deserialize, Serialize};

/// Activation functions by their Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
            Self::QuickGelu => x.clone() * sigmoid((x * 1.702).clamp(-SIGMOID_SATURATES, SIGMOID_SATURATES)),
            Self::GeluTanh => gelu_tanh(x),
            Self::Gelu => gelu(x),
        }
    }
}

// WGSL lets implementations assume finite arithmetic, and SwiftShader's WebGPU does: a sigmoid or
// tanh whose inner exp overflows comes out NaN there. Their arguments are clamped where the result
// is already exactly saturated in f32 (sigmoid(-30) ~ 1e-13 next to values of order 1; tanh(10)
// rounds to 1), so the clamps change nothing elsewhere.
const SIGMOID_SATURATES: f32 = 30.0;
const TANH_SATURATES: f32 = 10.0;

/// GELU's tanh approximation (GPT-2's `gelu_new`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * (inner.clamp(-TANH_SATURATES, TANH_SATURATES).tanh() + 1.0) * 0.5
}

pub(crate) fn layer_norm(d_model: usize, epsilon: f64, device: &Device) -> LayerNorm {
    LayerNormConfig::new(d_model).with_epsilon(epsilon).init(device)
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
pub(crate) fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, causal_past: Option<usize>) -> Tensor<4> {
    let [_, _, t, dh] = q.dims();
    let s = k.dims()[2];
    // One new query against the whole cache (a decoding step): nothing to mask, and on wgpu one
    // fused kernel instead of five dispatches.
    if t == 1 && causal_past == Some(s - 1) {
        return glimpse_kernels::decode_attention(q, k, v);
    }
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

/// The largest storage buffer every WebGPU adapter must bind (128 MiB, the spec's default
/// `maxStorageBufferBindingSize`; lavapipe's Vulkan limit is the same).
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// A `[rows, dim]` table (token embeddings, LM head) kept as row blocks of at most
/// [`MAX_BINDING_BYTES`]: GPT-2's 50257 x 768 embedding is 154 MB and could not be bound as one
/// buffer on such adapters. Lookups and the transposed product go block by block.
#[derive(Module, Debug)]
pub struct ShardedTable {
    shards: Vec<Param<Tensor<2>>>,
    #[module(skip)]
    rows: usize,
    #[module(skip)]
    dim: usize,
    #[module(skip)]
    rows_per_shard: usize,
}

impl ShardedTable {
    pub fn init(rows: usize, dim: usize, init: &Initializer, device: &Device) -> Self {
        Self::with_shard_bytes(rows, dim, MAX_BINDING_BYTES, init, device)
    }

    fn with_shard_bytes(rows: usize, dim: usize, max_bytes: usize, init: &Initializer, device: &Device) -> Self {
        let mut table = Self { shards: Vec::new(), rows, dim, rows_per_shard: (max_bytes / (4 * dim)).max(1) };
        table.shards = table.blocks().map(|(_, n)| init.init_with([n, dim], Some(dim), Some(dim), device)).collect();
        table
    }

    /// `(first row, row count)` of each block.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (rows, per_shard) = (self.rows, self.rows_per_shard);
        (0..rows).step_by(per_shard).map(move |start| (start, per_shard.min(rows - start)))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Replaces the table block by block with the row-major host values `read(first row, rows)`
    /// gives; a block it cannot give (`None`) stays as it was.
    pub(crate) fn fill(&mut self, mut read: impl FnMut(usize, usize) -> Option<Vec<f32>>, device: &Device) {
        let dim = self.dim;
        for ((start, n), shard) in self.blocks().zip(self.shards.iter_mut()) {
            if let Some(block) = read(start, n) {
                *shard = Param::from_tensor(Tensor::from_data(TensorData::new(block, [n, dim]), device));
            }
        }
    }

    /// The whole `[rows, dim]` table in one tensor (for saving small tables).
    pub(crate) fn whole(&self) -> Tensor<2> {
        Tensor::cat(self.shards.iter().map(Param::val).collect(), 0)
    }

    /// Row lookup: `[batch, t]` ids -> `[batch, t, dim]`.
    pub fn lookup(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if let [only] = self.shards.as_slice() {
            return embedding(only.val(), ids);
        }
        let mut out: Option<Tensor<3>> = None;
        for ((start, n), shard) in self.blocks().zip(&self.shards) {
            let (lo, hi) = (start as i64, (start + n) as i64);
            let inside = ids.clone().greater_equal_elem(lo).bool_and(ids.clone().lower_elem(hi));
            let local = (ids.clone() - lo).clamp(0, n as i64 - 1);
            let rows = embedding(shard.val(), local) * inside.float().unsqueeze_dim::<3>(2);
            out = Some(match out {
                Some(acc) => acc + rows,
                None => rows,
            });
        }
        out.expect("a table has at least one row")
    }

    /// `x @ table^T`: `[batch, t, dim]` -> `[batch, t, rows]` (the tied LM head).
    ///
    /// Computed as `(table @ x^T)^T`: the CPU backend copies a transposed operand before
    /// multiplying, and transposing `x` costs `t * dim` values where transposing the table cost
    /// all of it (154 MB for GPT-2, at every decoding step).
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let x_t = x.swap_dims(1, 2);
        let parts: Vec<Tensor<3>> =
            self.shards.iter().map(|shard| shard.val().unsqueeze::<3>().matmul(x_t.clone())).collect();
        let logits_t = if parts.len() == 1 { parts.into_iter().next().unwrap() } else { Tensor::cat(parts, 1) };
        logits_t.swap_dims(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 10 x 3 table in blocks of 4, 4 and 2 rows behaves as one matrix.
    #[test]
    fn sharded_table_equals_the_whole_matrix() {
        let device = Device::flex();
        let (rows, dim) = (10, 3);
        let values: Vec<f32> = (0..rows * dim).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut table = ShardedTable::with_shard_bytes(rows, dim, 4 * dim * 4, &Initializer::Zeros, &device);
        table.fill(|start, n| Some(values[start * dim..(start + n) * dim].to_vec()), &device);
        assert_eq!(table.shards.len(), 3);

        let ids = [0i64, 3, 4, 7, 8, 9, 5];
        let looked_up = table.lookup(Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device));
        let expected: Vec<f32> = ids.iter().flat_map(|&i| values[i as usize * dim..][..dim].to_vec()).collect();
        assert_eq!(looked_up.into_data().try_into_vec_as::<f32>().unwrap(), expected);

        let x = [1.0f32, -2.0, 0.5];
        let projected = table.project(Tensor::from_data(TensorData::new(x.to_vec(), [1, 1, dim]), &device));
        let expected: Vec<f32> = (0..rows).map(|r| (0..dim).map(|c| values[r * dim + c] * x[c]).sum()).collect();
        assert_eq!(projected.into_data().try_into_vec_as::<f32>().unwrap(), expected);
    }
}
