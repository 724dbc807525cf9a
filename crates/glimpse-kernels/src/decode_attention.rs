//! Attention of one new token against the KV cache: the inner step of incremental decoding.

use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::backend::{Backend, Cube, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use cubecl::CubeCount;
use cubecl::ir::attributes::BufferIOAttr;

use crate::wgsl::{WgslKernel, WgslSource, empty_like, kernel_source, launch, size, strides, untiled, wgpu_f32};

const SOURCE: WgslSource = kernel_source!("decode_attention.wgsl");
/// Names the kernel in launch counts.
struct DecodeAttentionShader;

/// Largest head dimension the kernel takes (its workgroup memory holds q as 64 `vec4`s).
const MAX_HEAD_DIM: usize = 256;

/// Lanes per workgroup; at least `MAX_HEAD_DIM / 4`, the kernel's `vec4` columns.
const WORKGROUP_SIZE: u32 = 64;
const _: () = assert!(MAX_HEAD_DIM / 4 <= WORKGROUP_SIZE as usize);

/// `softmax(q k^T / sqrt(head_dim)) v` for a single query position, without a mask (the cache
/// holds only the past and the new token itself).
///
/// q: `[batch, heads, 1, head_dim]`, k and v: `[batch, heads, seq, head_dim]` ->
/// `[batch, heads, 1, head_dim]`. Inputs may be views (transposed, sliced, concatenated).
///
/// Runs the WGSL kernel `shaders/decode_attention.wgsl` when all three are f32 on a wgpu device
/// outside autodiff and `head_dim` is a multiple of 4 up to 256; otherwise
/// [`decode_attention_fallback`].
pub fn decode_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [batch, heads, query_len, head_dim] = q.dims();
    let [k_batch, k_heads, _, k_head_dim] = k.dims();
    // The kernel reads through raw strides: a mismatch must stop here, not read out of bounds.
    assert!(
        query_len == 1 && [k_batch, k_heads, k_head_dim] == [batch, heads, head_dim] && v.dims() == k.dims(),
        "decode_attention: q {:?}, k {:?}, v {:?} do not match",
        q.dims(),
        k.dims(),
        v.dims()
    );
    if !decode_attention_uses_kernel(&q, &k, &v) {
        return decode_attention_fallback(q, k, v);
    }
    let output =
        <Dispatch as DecodeAttentionBackend>::decode_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch());
    Tensor::from_dispatch(output)
}

/// Whether [`decode_attention`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn decode_attention_uses_kernel(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>) -> bool {
    let head_dim = q.dims()[3];
    let seq = k.dims()[2];
    seq > 0
        && head_dim <= MAX_HEAD_DIM
        && head_dim.is_multiple_of(4)
        && [q, k, v].iter().all(|tensor| wgpu_f32(tensor) && !tensor.is_autodiff())
}

/// [`decode_attention`] in plain Burn operations (matmul, scale, softmax, matmul): any backend,
/// autodiff included. Same shapes.
pub fn decode_attention_fallback(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let head_dim = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) / (head_dim as f64).sqrt();
    softmax(scores, 3).matmul(v)
}

#[backend_extension(Cube)]
trait DecodeAttentionBackend: Backend {
    fn decode_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl DecodeAttentionBackend for Cube {
    fn decode_attention(q: CubeTensor, k: CubeTensor, v: CubeTensor) -> CubeTensor {
        let (q, k, v) = (untiled(q), rows_of_vec4(k), rows_of_vec4(v));
        let shape = q.meta.shape();
        let (batch, heads, head_dim) = (shape[0], shape[1], shape[3]);
        let seq = k.meta.shape()[2];
        let scale = 1.0 / (head_dim as f32).sqrt();

        let mut params = vec![size(heads), size(seq), size(head_dim), scale.to_bits()];
        for tensor in [&q, &k, &v] {
            params.extend(strides::<4>(tensor));
        }
        let output = empty_like(&q, [batch, heads, 1, head_dim]);

        let kernel = WgslKernel::<DecodeAttentionShader>::new(SOURCE, WORKGROUP_SIZE);
        launch(
            &q.client,
            kernel,
            CubeCount::Static(size(heads), size(batch), 1),
            vec![
                (q.handle.clone(), BufferIOAttr::ReadOnly),
                (k.handle.clone(), BufferIOAttr::ReadOnly),
                (v.handle.clone(), BufferIOAttr::ReadOnly),
                (output.handle.clone(), BufferIOAttr::WriteOnly),
            ],
            &params,
        );
        output
    }
}

/// `tensor` laid out so the kernel can read it as `vec4`s: last dim contiguous, the other strides
/// multiples of 4 (a cache grown by concatenation already is; anything else is copied).
fn rows_of_vec4(tensor: CubeTensor) -> CubeTensor {
    let strides = tensor.meta.strides();
    let readable = !tensor.meta.is_tiled() && strides[3] == 1 && strides[..3].iter().all(|s| s.is_multiple_of(4));
    if readable { tensor } else { into_contiguous(tensor) }
}
