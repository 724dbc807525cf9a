//! Matrices of 8-bit weights with one f32 scale per block of [`Q8_BLOCK`] inputs, multiplied
//! without ever expanding them for a few rows (decoding reads every weight once per token).
//!
//! The resident layout, which every function here reads: a `[n, k]` matrix (one row per output,
//! `k` inputs) is kept as
//! - `packed`: `[n, k_padded / 4]` i32, four signed bytes per word, little-endian (input `4j + i`
//!   in bits `8i..8i + 8` of word `j`), `k_padded` being `k` rounded up to a whole block with zeros;
//! - `scales`: `[n, k_padded / Q8_BLOCK]` f32; weight `(r, c)` is `scales[r, c / Q8_BLOCK] * byte`.

use burn::backend::flex::FlexTensor;
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension, tensor::FloatTensor, tensor::IntTensor};
use burn::prelude::*;
use burn::tensor::DType;

/// Inputs per scale.
pub const Q8_BLOCK: usize = 32;

/// Most rows [`q8_matmul`] multiplies directly; above it a product reads each weight often enough
/// that expanding the matrix once and using the float matmul is faster.
pub const Q8_DIRECT_MAX_ROWS: usize = 8;

/// `k` rounded up to whole blocks: the row length of the packed form.
pub fn q8_padded(k: usize) -> usize {
    k.div_ceil(Q8_BLOCK) * Q8_BLOCK
}

/// Packs `[n, k]` row-major bytes and their `[n, k.div_ceil(Q8_BLOCK)]` scales into the resident
/// layout on `device`.
pub fn q8_pack(bytes: &[i8], scales: Vec<f32>, n: usize, k: usize, device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
    let padded = q8_padded(k);
    assert!(bytes.len() == n * k && scales.len() == n * padded / Q8_BLOCK, "q8_pack: {n} x {k} does not match");
    let mut words = vec![0i32; n * padded / 4];
    for (row, values) in bytes.chunks_exact(k).enumerate() {
        for (column, &byte) in values.iter().enumerate() {
            words[row * padded / 4 + column / 4] |= ((byte as u8 as u32) << (8 * (column % 4))) as i32;
        }
    }
    let packed = Tensor::from_data(TensorData::new(words, [n, padded / 4]), (device, DType::I32));
    let scales = Tensor::from_data(TensorData::new(scales, [n, padded / Q8_BLOCK]), device);
    (packed, scales)
}

/// The float matrix `[n, k_padded]` (the padding columns are zero). Portable Burn operations
/// except on the CPU backend, where one pass in Rust replaces a dozen tensor passes.
pub fn q8_dequantize(packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<2> {
    if on_flex(&scales) && packed.dtype() == DType::I32 && !scales.is_autodiff() {
        return Tensor::from_dispatch(<Dispatch as Q8Backend>::q8_dequantize(
            packed.into_dispatch(),
            scales.into_dispatch(),
        ));
    }
    q8_dequantize_fallback(packed, scales)
}

/// [`q8_dequantize`] in plain Burn operations (shifts, a cast and a broadcast product): any backend.
pub fn q8_dequantize_fallback(packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<2> {
    let [n, words] = packed.dims();
    let blocks = scales.dims()[1];
    // Byte i of each word, sign-extended: shifted to the top, then arithmetically back down.
    let bytes: Vec<Tensor<3, Int>> = (0..4)
        .map(|i| packed.clone().bitwise_left_shift_scalar(24 - 8 * i).bitwise_right_shift_scalar(24).unsqueeze_dim(2))
        .collect();
    let values = Tensor::cat(bytes, 2).reshape([n, blocks, Q8_BLOCK]).float();
    debug_assert_eq!(words * 4, blocks * Q8_BLOCK);
    (values * scales.unsqueeze_dim::<3>(2)).reshape([n, blocks * Q8_BLOCK])
}

/// `x @ w^T` for the `[n, k]` matrix `w` held as (`packed`, `scales`): `[batch, t, k]` ->
/// `[batch, t, n]`.
///
/// On the CPU backend, outside autodiff, with at most [`Q8_DIRECT_MAX_ROWS`] rows (`batch * t`),
/// the bytes are multiplied directly (several threads natively, SIMD where the build has it);
/// otherwise [`q8_matmul_fallback`].
pub fn q8_matmul(x: Tensor<3>, packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<3> {
    let [batch, t, k] = x.dims();
    let n = packed.dims()[0];
    assert!(
        q8_padded(k) == packed.dims()[1] * 4 && scales.dims() == [n, q8_padded(k) / Q8_BLOCK],
        "q8_matmul: x {:?} does not fit packed {:?} and scales {:?}",
        x.dims(),
        packed.dims(),
        scales.dims()
    );
    if !q8_matmul_uses_kernel(&x, &packed, &scales) {
        return q8_matmul_fallback(x, packed, scales);
    }
    let rows = x.reshape([batch * t, k]);
    let out = <Dispatch as Q8Backend>::q8_matvec(rows.into_dispatch(), packed.into_dispatch(), scales.into_dispatch());
    Tensor::<2>::from_dispatch(out).reshape([batch, t, n])
}

/// Whether [`q8_matmul`] multiplies the bytes directly for these inputs.
pub fn q8_matmul_uses_kernel(x: &Tensor<3>, packed: &Tensor<2, Int>, scales: &Tensor<2>) -> bool {
    let [batch, t, _] = x.dims();
    batch * t <= Q8_DIRECT_MAX_ROWS
        && packed.dtype() == DType::I32
        && on_flex(x)
        && x.dtype() == DType::F32
        && !x.is_autodiff()
        && scales.dtype() == DType::F32
        && !scales.is_autodiff()
}

/// [`q8_matmul`] through the expanded matrix: [`q8_dequantize`], then a float matmul (gradients
/// flow to `x`; the weights are constants). Same shapes.
pub fn q8_matmul_fallback(x: Tensor<3>, packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<3> {
    let [batch, t, k] = x.dims();
    let weights = q8_dequantize(packed, scales).narrow(1, 0, k);
    let n = weights.dims()[0];
    // `(w @ x^T)^T`: the CPU backend copies a transposed operand, and x is the small one.
    let rows_t = x.reshape([batch * t, k]).transpose();
    weights.matmul(rows_t).transpose().reshape([batch, t, n])
}

fn on_flex<const D: usize>(tensor: &Tensor<D>) -> bool {
    matches!(tensor.device().inner().as_dispatch(), DispatchDevice::Flex(_))
}

#[backend_extension(Flex)]
trait Q8Backend: Backend {
    fn q8_dequantize(packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
    fn q8_matvec(x: FloatTensor<Self>, packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Q8Backend for Flex {
    fn q8_dequantize(packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let shape = scales.layout().shape();
        let (n, blocks) = (shape[0], shape[1]);
        let (packed, scales) = (packed.to_contiguous(), scales.to_contiguous());
        let bytes: &[i8] = bytemuck::cast_slice(elements::<i32>(&packed));
        let scales = elements::<f32>(&scales);
        let mut out = vec![0f32; n * blocks * Q8_BLOCK];
        for ((values, block), &scale) in out.chunks_exact_mut(Q8_BLOCK).zip(bytes.chunks_exact(Q8_BLOCK)).zip(scales) {
            for (value, &byte) in values.iter_mut().zip(block) {
                *value = scale * byte as f32;
            }
        }
        FlexTensor::from_data(TensorData::new(out, [n, blocks * Q8_BLOCK]))
    }

    fn q8_matvec(x: FlexTensor, packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let [m, k] = [x.layout().shape()[0], x.layout().shape()[1]];
        let n = scales.layout().shape()[0];
        let (x, packed, scales) = (x.to_contiguous(), packed.to_contiguous(), scales.to_contiguous());
        let padded = q8_padded(k);
        // Rows of x padded with zeros to whole blocks, so every dot product runs over whole blocks.
        let mut rows = vec![0f32; m * padded];
        for (padded_row, row) in rows.chunks_exact_mut(padded).zip(elements::<f32>(&x).chunks_exact(k)) {
            padded_row[..k].copy_from_slice(row);
        }
        let bytes: &[i8] = bytemuck::cast_slice(elements::<i32>(&packed));
        let products = matvec(&rows, bytes, elements::<f32>(&scales), m, n, padded);
        FlexTensor::from_data(TensorData::new(products, [m, n]))
    }
}

/// The elements of a contiguous tensor, in order (its buffer may start before them).
fn elements<E: burn::tensor::Element + bytemuck::Pod>(tensor: &FlexTensor) -> &[E] {
    let (start, end) = tensor.layout().contiguous_offsets().expect("a contiguous tensor");
    &tensor.storage::<E>()[start..end]
}

/// `[m, n]` products of `m` padded rows against `n` byte rows; the work splits over outputs.
fn matvec(rows: &[f32], bytes: &[i8], scales: &[f32], m: usize, n: usize, padded: usize) -> Vec<f32> {
    let blocks = padded / Q8_BLOCK;
    // Output-major while computing: each worker fills whole weight rows, reading them once.
    let mut by_output = vec![0f32; n * m];
    let fill = |(output, out): (usize, &mut [f32])| {
        let (weights, scales) = (&bytes[output * padded..][..padded], &scales[output * blocks..][..blocks]);
        for (value, row) in out.iter_mut().zip(rows.chunks_exact(padded)) {
            *value = dot(row, weights, scales);
        }
    };
    #[cfg(not(target_family = "wasm"))]
    {
        use rayon::prelude::*;
        by_output.par_chunks_mut(m).enumerate().with_min_len(64).for_each(fill);
    }
    #[cfg(target_family = "wasm")]
    by_output.chunks_mut(m).enumerate().for_each(fill);
    let mut out = vec![0f32; m * n];
    for (output, values) in by_output.chunks_exact(m).enumerate() {
        for (row, &value) in values.iter().enumerate() {
            out[row * n + output] = value;
        }
    }
    out
}

/// `sum_b scale_b * sum_i x[32b + i] * byte[32b + i]`, with AVX2 and FMA where the CPU has them.
fn dot(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked for both features.
        return unsafe { dot_avx2(x, bytes, scales) };
    }
    dot_portable(x, bytes, scales)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    dot_portable(x, bytes, scales)
}

/// Eight independent lanes per block, so the compiler can vectorise without reordering one sum.
#[inline(always)]
fn dot_portable(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    let mut total = 0.0;
    for ((x, bytes), &scale) in x.chunks_exact(Q8_BLOCK).zip(bytes.chunks_exact(Q8_BLOCK)).zip(scales) {
        let mut lanes = [0f32; 8];
        for (x, bytes) in x.chunks_exact(8).zip(bytes.chunks_exact(8)) {
            for lane in 0..8 {
                lanes[lane] += x[lane] * bytes[lane] as f32;
            }
        }
        total += scale * lanes.iter().sum::<f32>();
    }
    total
}
