//! Building blocks shared by CLIP and GPT-2: dense layers, LayerNorm, multi-head attention.

use burn::module::{Initializer, Param, ParamId};
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::module::embedding;
pub use glimpse_kernels::Activation;
use glimpse_kernels::{
    Q8_BLOCK, layer_norm_linear, linear, linear_residual, matmul_t, q8_dequantize, q8_linear, q8_linear_residual,
    q8_matmul, q8_pack,
};

/// LayerNorm over the last dimension (HF's `weight` and `bias`), run by
/// `glimpse_kernels::layer_norm`: one kernel on wgpu where Burn's own decomposes into nine.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub gamma: Param<Tensor<1>>,
    pub beta: Param<Tensor<1>>,
    epsilon: f64,
}

impl LayerNorm {
    /// Scale 1 and shift 0, as Burn's `LayerNorm` and transformers initialise it.
    pub fn new(d_model: usize, epsilon: f64, device: &Device) -> Self {
        Self {
            gamma: Initializer::Ones.init([d_model], device),
            beta: Initializer::Zeros.init([d_model], device),
            epsilon,
        }
    }

    /// `[..., d_model]` -> `[..., d_model]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        glimpse_kernels::layer_norm(x, self.gamma.val(), Some(self.beta.val()), self.epsilon)
    }
}

/// `[batch, seq, heads * head_dim]` -> `[batch, heads, seq, head_dim]`.
pub(crate) fn split_heads(x: Tensor<3>, n_head: usize) -> Tensor<4> {
    let [b, t, d] = x.dims();
    x.reshape([b, t, n_head, d / n_head]).swap_dims(1, 2)
}

/// A `[n, k]` matrix (`n` outputs, `k` inputs) of 8-bit weights with one scale per
/// [`Q8_BLOCK`] inputs, resident in that form (about a quarter of its f32 size); see
/// `glimpse_kernels::q8_pack` for the layout.
#[derive(Module, Debug)]
pub struct Q8Matrix {
    packed: Param<Tensor<2, Int>>,
    scales: Param<Tensor<2>>,
    #[module(skip)]
    inputs: usize,
}

impl Q8Matrix {
    /// From `[n, k]` row-major bytes and their `[n, k.div_ceil(Q8_BLOCK)]` scales.
    pub fn new(bytes: &[i8], scales: Vec<f32>, n: usize, k: usize, device: &Device) -> Self {
        let (packed, scales) = q8_pack(bytes, scales, n, k, device);
        let packed = Param::initialized(ParamId::new(), packed);
        Self { packed, scales: Param::from_tensor(scales), inputs: k }
    }

    /// Quantises a `[n, k]` f32 matrix on the host: each block's scale is its largest magnitude
    /// over 127, rounded up to what an f16 holds (the file stores scales as F16).
    pub fn quantize(values: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
        let mut bytes = Vec::with_capacity(values.len());
        let mut scales = Vec::with_capacity(values.len().div_ceil(Q8_BLOCK));
        for row in values.chunks_exact(k) {
            for block in row.chunks(Q8_BLOCK) {
                let peak = block.iter().fold(0.0f32, |max, v| max.max(v.abs()));
                let scale = f16_at_least(peak / 127.0);
                scales.push(scale);
                let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
                bytes.extend(block.iter().map(|v| (v * inverse).round().clamp(-127.0, 127.0) as i8));
            }
        }
        (bytes, scales)
    }

    /// `[n, k]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.scales.lazy_shape().dims::<2>()[0], self.inputs]
    }

    /// The f32 matrix `[n, k]`.
    pub fn dequantize(&self) -> Tensor<2> {
        q8_dequantize(self.packed.val(), self.scales.val()).narrow(1, 0, self.inputs)
    }

    /// `x @ self^T`: `[batch, t, k]` -> `[batch, t, n]`.
    pub fn matmul_t(&self, x: Tensor<3>) -> Tensor<3> {
        q8_matmul(x, self.packed.val(), self.scales.val())
    }

    /// `activation(x @ self^T + bias)`: `[..., k]` -> `[..., n]`, one kernel for a few rows on wgpu
    /// when there is a bias.
    pub fn linear<const D: usize>(
        &self,
        x: Tensor<D>,
        bias: Option<Tensor<1>>,
        activation: Option<Activation>,
    ) -> Tensor<D> {
        q8_linear(x, self.packed.val(), self.scales.val(), bias, activation)
    }

    /// `residual + x @ self^T + bias`: `[..., k]` -> `[..., n]`, one kernel for a few rows on wgpu
    /// when there is a bias.
    pub fn linear_residual<const D: usize>(
        &self,
        x: Tensor<D>,
        bias: Option<Tensor<1>>,
        residual: Tensor<D>,
    ) -> Tensor<D> {
        q8_linear_residual(x, self.packed.val(), self.scales.val(), bias, residual)
    }

    /// Rows `ids` in f32: `[len]` -> `[len, k]` (an embedding lookup expands only what it reads).
    pub fn rows(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        let packed = self.packed.val().select(0, ids.clone());
        q8_dequantize(packed, self.scales.val().select(0, ids)).narrow(1, 0, self.inputs)
    }
}

/// The smallest f16 value at or above `x` (>= 0), as f32.
fn f16_at_least(x: f32) -> f32 {
    let mut half = half::f16::from_f32(x);
    if half.to_f32() < x {
        half = half::f16::from_bits(half.to_bits() + 1);
    }
    half.to_f32()
}

/// A dense layer's weight: f32 `[d_input, d_output]` (Burn's `Linear` layout, the one training
/// updates), or 8-bit `[d_output, d_input]` from a q8 checkpoint.
#[derive(Module, Debug)]
pub enum DenseWeight {
    F32(Param<Tensor<2>>),
    Q8(Q8Matrix),
}

impl DenseWeight {
    /// `[d_input, d_output]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::F32(weight) => weight.lazy_shape().dims(),
            Self::Q8(matrix) => {
                let [outputs, inputs] = matrix.dims();
                [inputs, outputs]
            }
        }
    }

    /// The f32 weight, `[d_input, d_output]`.
    pub fn to_f32(&self) -> Tensor<2> {
        match self {
            Self::F32(weight) => weight.val(),
            Self::Q8(matrix) => matrix.dequantize().transpose(),
        }
    }
}

/// `y = x W + b`: Burn's `Linear`, with the weight in f32 or 8-bit.
#[derive(Module, Debug)]
pub struct Dense {
    pub weight: DenseWeight,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Dense {
    /// Lazily initialised as Burn's `Linear` is (nothing allocated until used or loaded).
    pub fn new(d_input: usize, d_output: usize, bias: bool, device: &Device) -> Self {
        let linear = LinearConfig::new(d_input, d_output).with_bias(bias).init(device);
        Self { weight: DenseWeight::F32(linear.weight), bias: linear.bias }
    }

    /// `[..., d_input]` -> `[..., d_output]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.apply(x, None)
    }

    /// `activation(norm(x) W + b)`: a pre-LN block's LayerNorm and the projection after it, one
    /// kernel for a few rows on wgpu with f32 weights (two with q8: the LayerNorm, then the
    /// layer). Same shapes as [`Dense::forward`].
    pub fn forward_normed<const D: usize>(
        &self,
        x: Tensor<D>,
        norm: &LayerNorm,
        activation: Option<Activation>,
    ) -> Tensor<D> {
        match &self.weight {
            DenseWeight::F32(weight) => layer_norm_linear(
                x,
                (norm.gamma.val(), Some(norm.beta.val()), norm.epsilon),
                weight.val(),
                self.bias.as_ref().map(Param::val),
                activation,
            ),
            DenseWeight::Q8(_) => self.apply(norm.forward(x), activation),
        }
    }

    /// `residual + x W + b`: a sublayer's output projection and the residual add after it, one
    /// kernel for a few rows on wgpu. `residual`: `[..., d_output]`; same shapes as
    /// [`Dense::forward`].
    pub fn forward_residual<const D: usize>(&self, x: Tensor<D>, residual: Tensor<D>) -> Tensor<D> {
        match &self.weight {
            DenseWeight::F32(weight) => linear_residual(x, weight.val(), self.bias.as_ref().map(Param::val), residual),
            DenseWeight::Q8(matrix) => matrix.linear_residual(x, self.bias.as_ref().map(Param::val), residual),
        }
    }

    /// f32 weights go through `glimpse_kernels::linear`, 8-bit ones through `q8_linear` (each the
    /// product, bias and activation in one kernel for a few rows on wgpu).
    fn apply<const D: usize>(&self, x: Tensor<D>, activation: Option<Activation>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        match &self.weight {
            DenseWeight::F32(weight) => linear(x, weight.val(), bias, activation),
            DenseWeight::Q8(matrix) => matrix.linear(x, bias, activation),
        }
    }
}

/// The largest storage buffer every WebGPU adapter must bind (128 MiB, the spec's default
/// `maxStorageBufferBindingSize`; lavapipe's Vulkan limit is the same).
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// A `[rows, dim]` table (token embeddings, LM head) kept as row blocks of at most
/// [`MAX_BINDING_BYTES`]: GPT-2's 50257 x 768 embedding is 154 MB and could not be bound as one
/// buffer on such adapters. Lookups and the transposed product go block by block.
#[derive(Module, Debug)]
pub struct ShardedTable {
    shards: Vec<TableShard>,
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
        table.shards = table
            .blocks()
            .map(|(_, n)| TableShard::F32(init.init_with([n, dim], Some(dim), Some(dim), device)))
            .collect();
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

    /// Replaces the table block by block with the shards `read(first row, rows)` gives; a block
    /// it cannot give (`None`) stays as it was.
    pub(crate) fn fill(&mut self, mut read: impl FnMut(usize, usize) -> Option<TableShard>) {
        for ((start, n), shard) in self.blocks().zip(self.shards.iter_mut()) {
            if let Some(block) = read(start, n) {
                *shard = block;
            }
        }
    }

    /// The whole `[rows, dim]` table in one f32 tensor (for saving).
    pub(crate) fn whole(&self) -> Tensor<2> {
        Tensor::cat(self.shards.iter().map(TableShard::to_f32).collect(), 0)
    }

    /// Row lookup: `[batch, t]` ids -> `[batch, t, dim]`.
    pub fn lookup(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        if let [only] = self.shards.as_slice() {
            return only.lookup(ids);
        }
        let mut out: Option<Tensor<3>> = None;
        for ((start, n), shard) in self.blocks().zip(&self.shards) {
            let (lo, hi) = (start as i64, (start + n) as i64);
            let inside = ids.clone().greater_equal_elem(lo).bool_and(ids.clone().lower_elem(hi));
            let local = (ids.clone() - lo).clamp(0, n as i64 - 1);
            let rows = shard.lookup(local) * inside.float().unsqueeze_dim::<3>(2);
            out = Some(match out {
                Some(acc) => acc + rows,
                None => rows,
            });
        }
        out.expect("a table has at least one row")
    }

    /// Row lookup of ids the host holds, as [`ShardedTable::lookup`] of them in `shape`
    /// (`[batch, t]`). When every id falls in one block (a decoding step's single token always
    /// does) it is one gather from that block, where ids on the device take a masked gather per
    /// block (nine kernels each on wgpu).
    pub fn lookup_ids(&self, ids: &[u32], shape: [usize; 2], device: &Device) -> Tensor<3> {
        let block = |id: u32| id as usize / self.rows_per_shard;
        let first = ids.first().map_or(0, |&id| block(id));
        let as_tensor = |ids: Vec<i64>| Tensor::from_data(TensorData::new(ids, shape), device);
        match self.shards.get(first) {
            Some(shard) if ids.iter().all(|&id| block(id) == first) => {
                let start = first * self.rows_per_shard;
                shard.lookup(as_tensor(ids.iter().map(|&id| (id as usize - start) as i64).collect()))
            }
            _ => self.lookup(as_tensor(ids.iter().map(|&id| i64::from(id)).collect())),
        }
    }

    /// `x @ table^T`: `[batch, t, dim]` -> `[batch, t, rows]` (the tied LM head), shard by shard
    /// (`glimpse_kernels::matmul_t` for f32 shards).
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        let parts: Vec<Tensor<3>> = self
            .shards
            .iter()
            .map(|shard| match shard {
                TableShard::F32(rows) => matmul_t(x.clone(), rows.val()),
                TableShard::Q8(rows) => rows.matmul_t(x.clone()),
            })
            .collect();
        if parts.len() == 1 { parts.into_iter().next().unwrap() } else { Tensor::cat(parts, 2) }
    }
}

/// One row block of a [`ShardedTable`], `[rows, dim]` in f32 or 8-bit.
#[derive(Module, Debug)]
pub enum TableShard {
    F32(Param<Tensor<2>>),
    Q8(Q8Matrix),
}

impl TableShard {
    fn to_f32(&self) -> Tensor<2> {
        match self {
            Self::F32(rows) => rows.val(),
            Self::Q8(rows) => rows.dequantize(),
        }
    }

    /// `[batch, t]` local ids -> `[batch, t, dim]`.
    fn lookup(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::F32(rows) => embedding(rows.val(), ids),
            Self::Q8(rows) => {
                let [batch, t] = ids.dims();
                let found = rows.rows(ids.reshape([batch * t]));
                let dim = found.dims()[1];
                found.reshape([batch, t, dim])
            }
        }
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
        table.fill(|start, n| {
            let block = TensorData::new(values[start * dim..(start + n) * dim].to_vec(), [n, dim]);
            Some(TableShard::F32(Param::from_tensor(Tensor::from_data(block, &device))))
        });
        assert_eq!(table.shards.len(), 3);

        let ids = [0i64, 3, 4, 7, 8, 9, 5];
        let looked_up = table.lookup(Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device));
        let expected: Vec<f32> = ids.iter().flat_map(|&i| values[i as usize * dim..][..dim].to_vec()).collect();
        assert_eq!(looked_up.into_data().try_into_vec_as::<f32>().unwrap(), expected);
        // Host ids: across blocks (the masked path), and within the last block (one gather).
        for ids in [&[0u32, 3, 4, 7, 8, 9][..], &[9, 8, 9, 8]] {
            let looked_up = table.lookup_ids(ids, [2, ids.len() / 2], &device);
            assert_eq!(looked_up.dims(), [2, ids.len() / 2, dim]);
            let expected: Vec<f32> = ids.iter().flat_map(|&i| values[i as usize * dim..][..dim].to_vec()).collect();
            assert_eq!(looked_up.into_data().try_into_vec_as::<f32>().unwrap(), expected, "{ids:?}");
        }

        let x = [1.0f32, -2.0, 0.5];
        let projected = table.project(Tensor::from_data(TensorData::new(x.to_vec(), [1, 1, dim]), &device));
        let expected: Vec<f32> = (0..rows).map(|r| (0..dim).map(|c| values[r * dim + c] * x[c]).sum()).collect();
        assert_eq!(projected.into_data().try_into_vec_as::<f32>().unwrap(), expected);
    }

    /// The same with 8-bit shards (GPT-2 small's q8 embedding spans two): lookups and the product
    /// equal the expanded matrix's, across shard boundaries and a partial block (dim 40).
    #[test]
    fn an_8_bit_sharded_table_equals_its_expanded_matrix() {
        let device = Device::flex();
        let (rows, dim) = (10, 40);
        let values: Vec<f32> = (0..rows * dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let (bytes, scales) = Q8Matrix::quantize(&values, dim);
        let blocks = dim.div_ceil(Q8_BLOCK);
        let expanded: Vec<f32> =
            (0..rows * dim).map(|i| scales[i / dim * blocks + i % dim / Q8_BLOCK] * bytes[i] as f32).collect();
        let mut table = ShardedTable::with_shard_bytes(rows, dim, 4 * dim * 4, &Initializer::Zeros, &device);
        table.fill(|start, n| {
            let scales = scales[start * blocks..(start + n) * blocks].to_vec();
            Some(TableShard::Q8(Q8Matrix::new(&bytes[start * dim..(start + n) * dim], scales, n, dim, &device)))
        });
        assert_eq!(table.shards.len(), 3);

        let ids = [0i64, 3, 4, 7, 8, 9, 5];
        let looked_up = table.lookup(Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device));
        let want: Vec<f32> = ids.iter().flat_map(|&i| expanded[i as usize * dim..][..dim].to_vec()).collect();
        assert_eq!(looked_up.into_data().try_into_vec_as::<f32>().unwrap(), want);

        let x: Vec<f32> = (0..dim).map(|c| (c as f32 - 20.0) / 10.0).collect();
        let projected = table.project(Tensor::from_data(TensorData::new(x.clone(), [1, 1, dim]), &device));
        let want: Vec<f32> = (0..rows).map(|r| (0..dim).map(|c| expanded[r * dim + c] * x[c]).sum()).collect();
        let got = projected.into_data().try_into_vec_as::<f32>().unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(worst <= 1e-4, "{got:?} against {want:?}");
        // Quantising loses at most half a step per weight.
        let step = |i: usize| scales[i / dim * blocks + i % dim / Q8_BLOCK];
        assert!((0..rows * dim).all(|i| (expanded[i] - values[i]).abs() <= step(i) / 2.0 + 1e-6));
    }
}
