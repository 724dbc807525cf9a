//! Matrices of 8-bit weights with one f32 scale per block of [`Q8_BLOCK`] inputs, multiplied
//! without ever expanding them for a few rows (decoding reads every weight once per token).
//!
//! The resident layout, which every function here reads: a `[n, k]` matrix (one row per output,
//! `k` inputs) is kept as
//! - `packed`: `[n, k_padded / 4]` i32, four signed bytes per word, little-endian (input `4j + i`
//!   in bits `8i..8i + 8` of word `j`), `k_padded` being `k` rounded up to a whole block with zeros;
//! - `scales`: `[n, k_padded / Q8_BLOCK]` f32; weight `(r, c)` is `scales[r, c / Q8_BLOCK] * byte`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Cube, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use cubecl::CubeCount;

use crate::cpu::{ROWS_PER_TASK, dims2, elements, for_each_part, on_flex};
use crate::matmul_t::matmul_t_fallback;
use crate::wgsl::{MAX_WORKGROUPS, WgslKernel, WgslSource, kernel_input, kernel_source, launch_to_output, size};

/// Inputs per scale.
pub const Q8_BLOCK: usize = 32;

/// Most rows [`q8_matmul`] multiplies directly (the CPU backend's kernel, the WGSL one); above it
/// a product reads each weight often enough that expanding the matrix once and using the float
/// matmul is faster.
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
        return Tensor::from_dispatch(<Dispatch as Q8ExpandBackend>::q8_dequantize(
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
/// On the CPU backend, with `x` tracked by autodiff or not (the weights are constants on a plain
/// device; the kernel has a backward of its own), this is a kernel: up to
/// [`Q8_DIRECT_MAX_ROWS`] rows (`batch * t`) multiply the bytes directly (several threads
/// natively, SIMD where the build has it); more rows expand the matrix once and use the float
/// matmul, and the backward expands it again rather than keeping it, so no f32 copy of the
/// weights outlives the call. On wgpu, outside autodiff and up to [`Q8_DIRECT_MAX_ROWS`] rows,
/// the WGSL kernel `shaders/q8_matvec.wgsl` reads the bytes directly. Elsewhere
/// [`q8_matmul_fallback`].
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
    let (shader, cpu) = (uses_shader(&x, &packed, &scales), uses_cpu_kernel(&x, &packed, &scales));
    if !(shader || cpu) {
        return q8_matmul_fallback(x, packed, scales);
    }
    let (rows, packed, scales) =
        (x.reshape([batch * t, k]).into_dispatch(), packed.into_dispatch(), scales.into_dispatch());
    let out = if shader {
        <Dispatch as Q8ShaderBackend>::q8_matvec(rows, packed, scales)
    } else {
        <Dispatch as Q8Backend>::q8_matmul(rows, packed, scales)
    };
    Tensor::<2>::from_dispatch(out).reshape([batch, t, n])
}

/// Whether [`q8_matmul`] runs a kernel (the CPU backend's, or the WGSL one on wgpu) for these
/// inputs rather than the fallback.
pub fn q8_matmul_uses_kernel(x: &Tensor<3>, packed: &Tensor<2, Int>, scales: &Tensor<2>) -> bool {
    uses_cpu_kernel(x, packed, scales) || uses_shader(x, packed, scales)
}

fn uses_cpu_kernel(x: &Tensor<3>, packed: &Tensor<2, Int>, scales: &Tensor<2>) -> bool {
    let [batch, t, _] = x.dims();
    batch * t > 0
        && packed.dtype() == DType::I32
        && on_flex(x)
        && x.dtype() == DType::F32
        && scales.dtype() == DType::F32
        && !scales.is_autodiff()
}

/// `shaders/q8_matvec.wgsl`: f32 on wgpu outside autodiff, up to [`Q8_DIRECT_MAX_ROWS`] rows, and
/// one workgroup per output within one dispatch dimension.
fn uses_shader(x: &Tensor<3>, packed: &Tensor<2, Int>, scales: &Tensor<2>) -> bool {
    let [batch, t, _] = x.dims();
    (1..=Q8_DIRECT_MAX_ROWS).contains(&(batch * t))
        && packed.dims()[0] <= MAX_WORKGROUPS
        && packed.dtype() == DType::I32
        && kernel_input(x)
        && kernel_input(scales)
}

/// [`q8_matmul`] through the expanded matrix: [`q8_dequantize`], then a float matmul (gradients
/// flow to `x`; the weights are constants, and autodiff keeps their expanded copy until the
/// backward pass). Same shapes.
pub fn q8_matmul_fallback(x: Tensor<3>, packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<3> {
    let k = x.dims()[2];
    matmul_t_fallback(x, q8_dequantize(packed, scales).narrow(1, 0, k))
}

#[backend_extension(Flex)]
trait Q8ExpandBackend: Backend {
    /// `[n, k_padded]`.
    fn q8_dequantize(packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Q8ExpandBackend for Flex {
    fn q8_dequantize(packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let [n, blocks] = dims2(&scales);
        expand(&packed, &scales, blocks * Q8_BLOCK, [n, blocks * Q8_BLOCK])
    }
}

#[backend_extension(Flex, Autodiff)]
trait Q8Backend: Backend {
    /// `[m, k]` -> `[m, n]`.
    fn q8_matmul(x: FloatTensor<Self>, packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Q8Backend for Flex {
    fn q8_matmul(x: FlexTensor, packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let [m, k] = dims2(&x);
        let n = dims2(&scales)[0];
        if m > Q8_DIRECT_MAX_ROWS {
            // `(w @ x^T)^T`: x, the small operand, is the one read transposed.
            let weights = expand(&packed, &scales, k, [n, k]);
            return Flex::float_swap_dims(Flex::float_matmul(weights, Flex::float_swap_dims(x, 0, 1)), 0, 1);
        }
        let padded = q8_padded(k);
        let x = x.to_contiguous();
        // Rows of x padded with zeros to whole blocks, so every dot product runs over whole blocks.
        let mut rows = vec![0f32; m * padded];
        for (padded_row, row) in rows.chunks_exact_mut(padded).zip(elements::<f32>(&x).chunks_exact(k)) {
            padded_row[..k].copy_from_slice(row);
        }
        let (packed, scales) = (packed.to_contiguous(), scales.to_contiguous());
        let bytes: &[i8] = bytemuck::cast_slice(elements::<i32>(&packed));
        let products = matvec(&rows, bytes, elements::<f32>(&scales), m, n, padded);
        FlexTensor::from_data(TensorData::new(products, [m, n]))
    }
}

impl<C: CheckpointStrategy> Q8Backend for Autodiff<Flex, C> {
    fn q8_matmul(x: FloatTensor<Self>, packed: FlexTensor, scales: FloatTensor<Self>) -> FloatTensor<Self> {
        let scales = Self::inner(scales);
        match Q8MatmulBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let inputs = dims2(x.primitive())[1];
                let out = Flex::q8_matmul(x.into_primitive(), packed.clone(), scales.clone());
                prep.finish(Q8State { packed, scales, inputs }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::q8_matmul(x.into_primitive(), packed, scales)),
        }
    }
}

/// What the backward needs: the 8-bit matrix itself, not its expansion.
#[derive(Debug, Clone)]
struct Q8State {
    packed: FlexTensor,
    scales: FlexTensor,
    inputs: usize,
}

#[derive(Debug)]
struct Q8MatmulBackward;

impl Backward<Flex, 1> for Q8MatmulBackward {
    type State = Q8State;

    /// `dL/dx = dL/dy @ w`, with `w` expanded for this product only.
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = x_node {
            let Q8State { packed, scales, inputs } = ops.state;
            let n = dims2(&scales)[0];
            let weights = expand(&packed, &scales, inputs, [n, inputs]);
            grads.register::<Flex>(node.id, Flex::float_matmul(grad, weights));
        }
    }
}

/// The f32 matrix `[n, columns]`: the first `columns` (at most `k_padded`) of each row.
fn expand(packed: &FlexTensor, scales: &FlexTensor, columns: usize, shape: [usize; 2]) -> FlexTensor {
    let (packed, scales) = (packed.to_contiguous(), scales.to_contiguous());
    let blocks = dims2(&scales)[1];
    let bytes: &[i8] = bytemuck::cast_slice(elements::<i32>(&packed));
    let scales = elements::<f32>(&scales);
    let mut out = vec![0f32; shape[0] * columns];
    let fill = |(row, values): (usize, &mut [f32])| {
        let (bytes, scales) = (&bytes[row * blocks * Q8_BLOCK..][..columns], &scales[row * blocks..][..blocks]);
        for ((values, bytes), &scale) in values.chunks_mut(Q8_BLOCK).zip(bytes.chunks(Q8_BLOCK)).zip(scales) {
            for (value, &byte) in values.iter_mut().zip(bytes) {
                *value = scale * byte as f32;
            }
        }
    };
    for_each_part(&mut out, columns, ROWS_PER_TASK, fill);
    FlexTensor::from_data(TensorData::new(out, shape))
}

const MATVEC: WgslSource = kernel_source!("q8_matvec.wgsl");
/// Names the kernel in launch counts.
struct Q8MatvecShader;

const WORKGROUP_SIZE: u32 = 64;

#[backend_extension(Cube)]
trait Q8ShaderBackend: Backend {
    /// `[m, k]` -> `[m, n]`, `m <= Q8_DIRECT_MAX_ROWS`.
    fn q8_matvec(x: FloatTensor<Self>, packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl Q8ShaderBackend for Cube {
    fn q8_matvec(x: CubeTensor, packed: CubeTensor, scales: CubeTensor) -> CubeTensor {
        let (x, packed, scales) = (into_contiguous(x), into_contiguous(packed), into_contiguous(scales));
        let (m, k) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (n, words) = (packed.meta.shape()[0], packed.meta.shape()[1]);
        let blocks = scales.meta.shape()[1];
        launch_to_output(
            WgslKernel::<Q8MatvecShader>::new(MATVEC, WORKGROUP_SIZE),
            CubeCount::Static(size(n), 1, 1),
            &[&x, &packed, &scales],
            [m, n],
            &[size(m), size(n), size(k), size(words), size(blocks)],
        )
    }
}

/// `[m, n]` products of `m` padded rows against `n` byte rows; the work splits over outputs.
fn matvec(rows: &[f32], bytes: &[i8], scales: &[f32], m: usize, n: usize, padded: usize) -> Vec<f32> {
    let blocks = padded / Q8_BLOCK;
    let dot = dot_for_this_cpu();
    // Output-major while computing: each worker fills whole weight rows, reading them once.
    let mut by_output = vec![0f32; n * m];
    let fill = |(output, out): (usize, &mut [f32])| {
        let (weights, scales) = (&bytes[output * padded..][..padded], &scales[output * blocks..][..blocks]);
        for (value, row) in out.iter_mut().zip(rows.chunks_exact(padded)) {
            *value = dot(row, weights, scales);
        }
    };
    for_each_part(&mut by_output, m, ROWS_PER_TASK, fill);
    let mut out = vec![0f32; m * n];
    for (output, values) in by_output.chunks_exact(m).enumerate() {
        for (row, &value) in values.iter().enumerate() {
            out[row * n + output] = value;
        }
    }
    out
}

/// `sum_b scale_b * sum_i x[32b + i] * byte[32b + i]`, with AVX2 and FMA where the CPU has them
/// (asked once per product, not once per row).
fn dot_for_this_cpu() -> fn(&[f32], &[i8], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked for both features.
        return |x, bytes, scales| unsafe { dot_avx2(x, bytes, scales) };
    }
    dot_portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    dot_portable(x, bytes, scales)
}

/// Eight independent lanes, summed across lanes once per row rather than once per block, so the
/// compiler can vectorise the whole loop without reordering any one lane's sum.
#[inline(always)]
fn dot_portable(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    let mut total = [0f32; 8];
    for ((x, bytes), &scale) in x.chunks_exact(Q8_BLOCK).zip(bytes.chunks_exact(Q8_BLOCK)).zip(scales) {
        let x: &[f32; Q8_BLOCK] = x.try_into().expect("whole blocks");
        let bytes: &[i8; Q8_BLOCK] = bytes.try_into().expect("whole blocks");
        let mut block = [0f32; 8];
        for part in 0..Q8_BLOCK / 8 {
            for lane in 0..8 {
                block[lane] += x[part * 8 + lane] * bytes[part * 8 + lane] as f32;
            }
        }
        for lane in 0..8 {
            total[lane] += scale * block[lane];
        }
    }
    total.iter().sum()
}
