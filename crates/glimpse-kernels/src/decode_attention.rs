//! Attention of one new token against the KV cache, with the token's key and value written into
//! the cache: the inner step of incremental decoding.

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::wgsl::kernel_input;

/// Largest head dimension the kernel takes (its workgroup memory holds q as 64 `vec4`s).
const MAX_HEAD_DIM: usize = 256;

/// One decoding step's attention: writes the new token's key and value into the cache at position
/// `len`, then `softmax(scale q k^T) v` over positions `0..=len` (no mask: the cache holds only
/// the past and the token itself). `scale` is the model's: `1 / sqrt(head_dim)` for most.
///
/// qkv: `[batch, 1, 3 * heads * head_dim]`, the fused projection (q, then k, then v, heads side
/// by side in each); k_cache and v_cache: `[batch, heads, capacity, head_dim]` with positions
/// `0..len` filled and `len < capacity` ->
/// (`[batch, 1, heads * head_dim]` with the heads merged, the two caches with position `len`
/// written). Reading q, k and v straight out of the projection saves splitting it, and writing
/// the cache here saves a dispatch per cache.
///
/// Runs the WGSL kernel `shaders/decode_attention.wgsl` when all three are f32 on a wgpu device
/// outside autodiff and `head_dim` is a multiple of 4 up to 256; otherwise
/// [`decode_attention_fallback`]. Either writes a cache in place when nothing else holds it, and
/// into a copy when something does.
pub fn decode_attention(
    qkv: Tensor<3>,
    heads: usize,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    len: usize,
    scale: f32,
) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
    check_shapes(&qkv, heads, &k_cache, &v_cache, len);
    if !decode_attention_uses_kernel(&qkv, heads, &k_cache, &v_cache) {
        return decode_attention_fallback(qkv, heads, k_cache, v_cache, len, scale);
    }
    let (output, k_cache, v_cache) = <Dispatch as DecodeAttentionBackend>::decode_attention(
        qkv.into_dispatch(),
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        heads,
        len,
        scale,
    );
    (Tensor::from_dispatch(output), Tensor::from_dispatch(k_cache), Tensor::from_dispatch(v_cache))
}

/// The kernel indexes through these sizes: a mismatch must stop here, not read or write out of
/// bounds.
fn check_shapes(qkv: &Tensor<3>, heads: usize, k_cache: &Tensor<4>, v_cache: &Tensor<4>, len: usize) {
    let [batch, query_len, width] = qkv.dims();
    let [cache_batch, cache_heads, capacity, head_dim] = k_cache.dims();
    assert!(
        query_len == 1
            && heads > 0
            && [cache_batch, cache_heads * head_dim * 3] == [batch, width]
            && cache_heads == heads
            && v_cache.dims() == k_cache.dims()
            && len < capacity,
        "decode_attention: qkv {:?} with {heads} heads, caches {:?} and {:?} at length {len} do not match",
        qkv.dims(),
        k_cache.dims(),
        v_cache.dims()
    );
}

/// Whether [`decode_attention`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn decode_attention_uses_kernel(qkv: &Tensor<3>, heads: usize, k_cache: &Tensor<4>, v_cache: &Tensor<4>) -> bool {
    let head_dim = qkv.dims()[2] / 3 / heads.max(1);
    head_dim <= MAX_HEAD_DIM
        && head_dim.is_multiple_of(4)
        && kernel_input(qkv)
        && kernel_input(k_cache)
        && kernel_input(v_cache)
}

/// [`decode_attention`] in plain Burn operations (slice assignments, matmul, scale, softmax,
/// matmul): any backend, autodiff included. Same shapes.
pub fn decode_attention_fallback(
    qkv: Tensor<3>,
    heads: usize,
    k_cache: Tensor<4>,
    v_cache: Tensor<4>,
    len: usize,
    scale: f32,
) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
    check_shapes(&qkv, heads, &k_cache, &v_cache, len);
    let [batch, _, width] = qkv.dims();
    let d = width / 3;
    let head_dim = d / heads;
    let part = |index: usize| qkv.clone().narrow(2, index * d, d).reshape([batch, 1, heads, head_dim]).swap_dims(1, 2);
    let at = [0..batch, 0..heads, len..len + 1, 0..head_dim];
    let k_cache = k_cache.slice_assign(at.clone(), part(1));
    let v_cache = v_cache.slice_assign(at, part(2));
    let filled = |cache: &Tensor<4>| cache.clone().narrow(2, 0, len + 1);
    let scores = part(0).matmul(filled(&k_cache).swap_dims(2, 3)) * f64::from(scale);
    let output = softmax(scores, 3).matmul(filled(&v_cache)).swap_dims(1, 2).reshape([batch, 1, d]);
    (output, k_cache, v_cache)
}

// Without wgpu no backend implements it, and the dispatch Burn generates from each method reads
// none of its arguments.
#[backend_extension(Cube: cfg(wgpu))]
trait DecodeAttentionBackend: Backend {
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn decode_attention(
        qkv: FloatTensor<Self>,
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        heads: usize,
        len: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

#[cfg(wgpu)]
/// The WGSL half: the kernel on wgpu.
mod wgpu {
    use burn::backend::Cube;
    use burn::backend::wgpu::CubeTensor;
    use cubecl::CubeCount;
    use cubecl::ir::attributes::BufferIOAttr;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, empty_like, kernel_source, launch, size};

    const SOURCE: WgslSource = kernel_source!("decode_attention.wgsl");
    /// Names the kernel in launch counts.
    struct DecodeAttentionShader;

    /// Lanes per workgroup; at least `MAX_HEAD_DIM / 4`, the kernel's `vec4` columns.
    const WORKGROUP_SIZE: u32 = 64;
    const _: () = assert!(MAX_HEAD_DIM / 4 <= WORKGROUP_SIZE as usize);

    impl DecodeAttentionBackend for Cube {
        fn decode_attention(
            qkv: CubeTensor,
            k_cache: CubeTensor,
            v_cache: CubeTensor,
            heads: usize,
            len: usize,
            scale: f32,
        ) -> (CubeTensor, CubeTensor, CubeTensor) {
            let (qkv, k_cache, v_cache) = (contiguous(qkv), writable(k_cache), writable(v_cache));
            let shape = k_cache.meta.shape();
            let (batch, capacity, head_dim) = (shape[0], shape[2], shape[3]);
            let params = [size(heads), size(len), size(capacity), size(head_dim), scale.to_bits()];
            let output = empty_like(&qkv, [batch, 1, heads * head_dim]);
            launch(
                &qkv.client,
                WgslKernel::<DecodeAttentionShader>::new(SOURCE, WORKGROUP_SIZE),
                CubeCount::Static(size(heads), size(batch), 1),
                vec![
                    (qkv.handle.clone(), BufferIOAttr::ReadOnly),
                    (k_cache.handle.clone(), BufferIOAttr::ReadWrite),
                    (v_cache.handle.clone(), BufferIOAttr::ReadWrite),
                    (output.handle.clone(), BufferIOAttr::WriteOnly),
                ],
                &params,
            );
            (output, k_cache, v_cache)
        }
    }

    /// `cache` as a dense buffer the kernel may write: copied when another tensor shares its memory
    /// (a cloned cache, a view handed out earlier), as Burn copies before writing in place.
    fn writable(cache: CubeTensor) -> CubeTensor {
        let cache = contiguous(cache);
        if cache.can_mut() { cache } else { contiguous(cache.copy()) }
    }
}
