//! Matrices of 8-bit weights with one f32 scale per block of [`Q8_BLOCK`] inputs, multiplied
//! without ever expanding them for a few rows (decoding reads every weight once per token).
//!
//! The resident layout, which every function here reads: a `[n, k]` matrix (one row per output,
//! `k` inputs) is kept as
//! - `packed`: `[n, k_padded / 4]` i32, four signed bytes per word, little-endian (input `4j + i`
//!   in bits `8i..8i + 8` of word `j`), `k_padded` being `k` rounded up to a whole block with zeros;
//! - `scales`: `[n, k_padded / Q8_BLOCK]` f32; weight `(r, c)` is `scales[r, c / Q8_BLOCK] * byte`.

use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;
use std::ops::Range;

use crate::activation::{Activation, NO_ACTIVATION, bias_activation, bias_activation_fallback};
use crate::cpu::{
    ROWS_PER_TASK, Strided, dims2, elements, for_each_part, gemm_product, gemm_strided, gemm_threads, on_flex,
};
use crate::linear::{rows, rows_through};
use crate::matmul_t::matmul_t_fallback;
use crate::wgsl::{MAX_WORKGROUPS, kernel_input, wgpu_f32};

/// Inputs per scale.
pub const Q8_BLOCK: usize = 32;

/// Most rows [`q8_matmul`] multiplies directly (the CPU backend's kernel, the WGSL one); above it
/// a product reads each weight often enough that expanding the matrix (a band of rows at a time on
/// the CPU backend) and using the float product is faster.
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
    // Each row's bytes in order in its words' memory, as `Q8Rows` reads them back (and, with
    // little-endian words, as the WGSL kernels shift them out); the padding stays zero.
    let mut words = vec![0i32; n * padded / 4];
    if k > 0 {
        let rows = bytemuck::cast_slice_mut::<i32, i8>(&mut words).chunks_exact_mut(padded);
        for (row, values) in rows.zip(bytes.chunks_exact(k)) {
            row[..k].copy_from_slice(values);
        }
    }
    let packed = Tensor::from_data(TensorData::new(words, [n, padded / 4]), (device, DType::I32));
    let scales = Tensor::from_data(TensorData::new(scales, [n, padded / Q8_BLOCK]), device);
    (packed, scales)
}

/// The float matrix `[n, k_padded]` (the padding columns are zero). One pass in Rust on the CPU
/// backend, the WGSL kernel `shaders/q8_dequantize.wgsl` for f32 on wgpu (each replacing a dozen
/// tensor passes), outside autodiff; elsewhere [`q8_dequantize_fallback`].
pub fn q8_dequantize(packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<2> {
    let [n, words] = packed.dims();
    let on_device = on_flex(&scales) || (kernel_input(&scales) && fits_u32(n * words * 4));
    if on_device && packed.dtype() == DType::I32 && !scales.is_autodiff() {
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
/// natively and in the browser's threaded engine, SIMD where the build has it); more rows, and the backward for any number, expand the
/// matrix a band of at most 4 MiB of f32 at a time and multiply each band as it comes, so no f32
/// copy of the whole matrix ever exists. On wgpu, also under autodiff, up to
/// [`Q8_DIRECT_MAX_ROWS`] rows go through the WGSL kernel `shaders/q8_matvec.wgsl`, which reads
/// the bytes directly; more rows, and the backward, expand the matrix with
/// `shaders/q8_dequantize.wgsl` for that one product. Elsewhere (other backends, tracked scales)
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
    if !q8_matmul_uses_kernel(&x, &packed, &scales) {
        return q8_matmul_fallback(x, packed, scales);
    }
    let out = <Dispatch as Q8Backend>::q8_matmul(
        x.reshape([batch * t, k]).into_dispatch(),
        packed.into_dispatch(),
        scales.into_dispatch(),
    );
    Tensor::<2>::from_dispatch(out).reshape([batch, t, n])
}

/// Whether [`q8_matmul`] runs a kernel (the CPU backend's, or the WGSL ones on wgpu) for these
/// inputs rather than the fallback.
pub fn q8_matmul_uses_kernel(x: &Tensor<3>, packed: &Tensor<2, Int>, scales: &Tensor<2>) -> bool {
    let [batch, t, k] = x.dims();
    let n = packed.dims()[0];
    // The weights are constants: a tracked scale would get no gradient from the kernels.
    batch * t > 0
        && k > 0
        && packed.dtype() == DType::I32
        && x.dtype() == DType::F32
        && scales.dtype() == DType::F32
        && !scales.is_autodiff()
        && (on_flex(x) || (wgpu_f32(x) && fits_u32(n * q8_padded(k))))
}

/// `activation(x @ w^T + b)`: a dense layer whose `[n, k]` weight is held as (`packed`,
/// `scales`). x: `[..., k]`, bias: `[n]` -> `[..., n]`.
///
/// Runs `shaders/q8_matvec.wgsl`'s bias variant (the product, the bias and the activation in one
/// launch) where [`q8_linear_uses_kernel`]; otherwise [`q8_matmul`], then [`bias_activation`]
/// (each picking its own kernel). [`q8_linear_fallback`] is all Burn operations.
pub fn q8_linear<const D: usize>(
    x: Tensor<D>,
    packed: Tensor<2, Int>,
    scales: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    let dims = check_linear_shapes("q8_linear", &x, &packed, &scales, bias.as_ref());
    match bias {
        Some(bias) if q8_linear_uses_kernel(&x, &packed, &scales, Some(&bias)) => rows_through(x, dims, |rows| {
            <Dispatch as Q8LinearBackend>::q8_linear(
                rows.into_dispatch(),
                packed.into_dispatch(),
                scales.into_dispatch(),
                bias.into_dispatch(),
                activation.map_or(NO_ACTIVATION, Activation::code),
            )
        }),
        bias => bias_activation(rows_product(x, dims, |rows| q8_matmul(rows, packed, scales)), bias, activation),
    }
}

/// `residual + x @ w^T + b`: a sublayer's output projection of 8-bit weights and the residual add
/// after it. x: `[..., k]`, bias: `[n]`, residual: `[..., n]` -> `[..., n]`.
///
/// Runs `shaders/q8_matvec.wgsl`'s residual variant where [`q8_linear_residual_uses_kernel`];
/// otherwise `residual + q8_linear(x, packed, scales, bias, None)`.
/// [`q8_linear_residual_fallback`] is all Burn operations.
pub fn q8_linear_residual<const D: usize>(
    x: Tensor<D>,
    packed: Tensor<2, Int>,
    scales: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Tensor<D>,
) -> Tensor<D> {
    let dims = check_linear_shapes("q8_linear_residual", &x, &packed, &scales, bias.as_ref());
    let mut out = x.dims();
    out[D - 1] = dims[1];
    assert!(residual.dims() == out, "q8_linear_residual: residual {:?} is not the output's {out:?}", residual.dims());
    match bias {
        Some(bias) if q8_linear_residual_uses_kernel(&x, &packed, &scales, Some(&bias), &residual) => {
            rows_through(x, dims, |rows| {
                <Dispatch as Q8LinearBackend>::q8_linear_residual(
                    rows.into_dispatch(),
                    packed.into_dispatch(),
                    scales.into_dispatch(),
                    bias.into_dispatch(),
                    residual.reshape([-1, dims[1] as i32]).into_dispatch(),
                )
            })
        }
        bias => residual + q8_linear(x, packed, scales, bias, None),
    }
}

/// Whether [`q8_linear`] runs the fused WGSL kernel for these inputs: f32 on wgpu outside
/// autodiff, a bias, at most [`Q8_DIRECT_MAX_ROWS`] rows, one workgroup per output within one
/// dispatch dimension.
pub fn q8_linear_uses_kernel<const D: usize>(
    x: &Tensor<D>,
    packed: &Tensor<2, Int>,
    scales: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> bool {
    let Some(bias) = bias else { return false };
    let k = x.dims()[D - 1];
    let n = packed.dims()[0];
    (1..=Q8_DIRECT_MAX_ROWS).contains(&rows(x))
        && k > 0
        && (1..=MAX_WORKGROUPS).contains(&n)
        && packed.dtype() == DType::I32
        && kernel_input(x)
        && kernel_input(scales)
        && kernel_input(bias)
        && fits_u32(n * q8_padded(k))
}

/// Whether [`q8_linear_residual`] runs the fused WGSL kernel for these inputs.
pub fn q8_linear_residual_uses_kernel<const D: usize>(
    x: &Tensor<D>,
    packed: &Tensor<2, Int>,
    scales: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    residual: &Tensor<D>,
) -> bool {
    q8_linear_uses_kernel(x, packed, scales, bias) && kernel_input(residual)
}

/// [`q8_linear`] in Burn operations ([`q8_matmul_fallback`], a bias add, `Activation::apply`).
/// Same shapes.
pub fn q8_linear_fallback<const D: usize>(
    x: Tensor<D>,
    packed: Tensor<2, Int>,
    scales: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    let dims = [x.dims()[D - 1], packed.dims()[0]];
    bias_activation_fallback(rows_product(x, dims, |rows| q8_matmul_fallback(rows, packed, scales)), bias, activation)
}

/// [`q8_linear_residual`] in Burn operations. Same shapes.
pub fn q8_linear_residual_fallback<const D: usize>(
    x: Tensor<D>,
    packed: Tensor<2, Int>,
    scales: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Tensor<D>,
) -> Tensor<D> {
    residual + q8_linear_fallback(x, packed, scales, bias, None)
}

/// The kernels index through these sizes: a mismatch must stop here, not read out of bounds.
/// Returns `[k, n]`.
fn check_linear_shapes<const D: usize>(
    caller: &str,
    x: &Tensor<D>,
    packed: &Tensor<2, Int>,
    scales: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> [usize; 2] {
    let k = x.dims()[D - 1];
    let n = packed.dims()[0];
    assert!(
        q8_padded(k) == packed.dims()[1] * 4
            && scales.dims() == [n, q8_padded(k) / Q8_BLOCK]
            && bias.is_none_or(|b| b.dims() == [n]),
        "{caller}: x {:?} does not fit packed {:?}, scales {:?} and bias {:?}",
        x.dims(),
        packed.dims(),
        scales.dims(),
        bias.map(Tensor::dims)
    );
    [k, n]
}

/// `x` as `[1, rows, k]` through `product` (`q8_matmul`'s shape), its `[1, rows, n]` result back
/// in `x`'s leading dims.
fn rows_product<const D: usize>(
    x: Tensor<D>,
    dims: [usize; 2],
    product: impl FnOnce(Tensor<3>) -> Tensor<3>,
) -> Tensor<D> {
    rows_through(x, dims, |rows| product(rows.unsqueeze()).squeeze_dim::<2>(0).into_dispatch())
}

/// Whether a WGSL kernel can number `len` elements.
fn fits_u32(len: usize) -> bool {
    u32::try_from(len).is_ok()
}

/// [`q8_matmul`] through the expanded matrix: [`q8_dequantize`], then a float matmul (gradients
/// flow to `x`; the weights are constants, and autodiff keeps their expanded copy until the
/// backward pass, which the kernels avoid). Same shapes.
pub fn q8_matmul_fallback(x: Tensor<3>, packed: Tensor<2, Int>, scales: Tensor<2>) -> Tensor<3> {
    let k = x.dims()[2];
    matmul_t_fallback(x, q8_dequantize(packed, scales).narrow(1, 0, k))
}

#[backend_extension(Flex, Cube: cfg(wgpu))]
trait Q8ExpandBackend: Backend {
    /// `[n, k_padded]`.
    fn q8_dequantize(packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The dense layers of [`q8_linear`] and [`q8_linear_residual`] on `[m, k]` rows,
/// `m <= Q8_DIRECT_MAX_ROWS`, -> `[m, n]`.
// Without wgpu no backend implements it, and the dispatch Burn generates from each method reads
// none of its arguments.
#[backend_extension(Cube: cfg(wgpu))]
trait Q8LinearBackend: Backend {
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn q8_linear(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: u32,
    ) -> FloatTensor<Self>;

    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn q8_linear_residual(
        x: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl Q8ExpandBackend for Flex {
    fn q8_dequantize(packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let (packed, scales) = (packed.to_contiguous(), scales.to_contiguous());
        let [n, blocks] = dims2(&scales);
        let values = Q8Rows::of(&packed, &scales, blocks * Q8_BLOCK).expand(0..n);
        FlexTensor::from_data(TensorData::new(values, [n, blocks * Q8_BLOCK]))
    }
}

/// The 8-bit product with its own backward, on the CPU backend and on wgpu: the backward reads the
/// 8-bit matrix again instead of autodiff keeping an f32 copy of every weight the forward used.
#[backend_extension(Flex, Cube: cfg(wgpu), Autodiff)]
trait Q8Backend: Backend {
    /// `x @ w^T`: `[m, k]` -> `[m, n]`.
    fn q8_matmul(x: FloatTensor<Self>, packed: IntTensor<Self>, scales: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `g @ w` over `w`'s first `k` inputs, the gradient of `x`: `[m, n]` -> `[m, k]`.
    fn q8_matmul_input_grad(
        g: FloatTensor<Self>,
        packed: IntTensor<Self>,
        scales: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self>;
}

impl Q8Backend for Flex {
    fn q8_matmul(x: FlexTensor, packed: FlexTensor, scales: FlexTensor) -> FlexTensor {
        let [m, k] = dims2(&x);
        let n = dims2(&scales)[0];
        let (x, packed, scales) = (x.to_contiguous(), packed.to_contiguous(), scales.to_contiguous());
        if m > Q8_DIRECT_MAX_ROWS {
            let products = banded_product(elements::<f32>(&x), m, &Q8Rows::of(&packed, &scales, k));
            return FlexTensor::from_data(TensorData::new(products, [m, n]));
        }
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

    /// With `w` expanded a band of rows at a time.
    fn q8_matmul_input_grad(g: FlexTensor, packed: FlexTensor, scales: FlexTensor, k: usize) -> FlexTensor {
        let (g, packed, scales) = (g.to_contiguous(), packed.to_contiguous(), scales.to_contiguous());
        let m = dims2(&g)[0];
        let gradient = banded_product_transposed(elements::<f32>(&g), m, &Q8Rows::of(&packed, &scales, k));
        FlexTensor::from_data(TensorData::new(gradient, [m, k]))
    }
}

impl<B: Q8Backend, C: CheckpointStrategy> Q8Backend for Autodiff<B, C> {
    fn q8_matmul(x: FloatTensor<Self>, packed: IntTensor<B>, scales: FloatTensor<Self>) -> FloatTensor<Self> {
        let scales = Self::inner(scales);
        match Q8MatmulBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let inputs = x.primitive().shape()[1];
                let out = B::q8_matmul(x.into_primitive(), packed.clone(), scales.clone());
                prep.finish(Q8State::<B> { packed, scales, inputs }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::q8_matmul(x.into_primitive(), packed, scales)),
        }
    }

    /// Not differentiated itself: the backward of [`Q8Backend::q8_matmul`] calls the inner
    /// backend's.
    fn q8_matmul_input_grad(
        g: FloatTensor<Self>,
        packed: IntTensor<B>,
        scales: FloatTensor<Self>,
        k: usize,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::q8_matmul_input_grad(Self::inner(g), packed, Self::inner(scales), k))
    }
}

/// What the backward needs: the 8-bit matrix itself, not its expansion.
#[derive(Debug, Clone)]
struct Q8State<B: Backend> {
    packed: IntTensor<B>,
    scales: FloatTensor<B>,
    inputs: usize,
}

#[derive(Debug)]
struct Q8MatmulBackward;

impl<B: Q8Backend> Backward<B, 1> for Q8MatmulBackward {
    type State = Q8State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = x_node {
            let Q8State { packed, scales, inputs } = ops.state;
            grads.register::<B>(node.id, B::q8_matmul_input_grad(grad, packed, scales, inputs));
        }
    }
}

/// Most weights expanded to f32 at once (4 MiB) by the products that expand: GPT-2's tied LM head
/// alone is 154 MB of f32, and in wasm, whose memory never shrinks, a whole expanded copy would
/// stay counted for the rest of the session.
const BAND_VALUES: usize = 1 << 20;

/// An `[n, columns]` matrix in the resident layout, read on the CPU backend.
struct Q8Rows<'a> {
    bytes: &'a [i8],
    scales: &'a [f32],
    n: usize,
    /// Scales per row.
    blocks: usize,
    columns: usize,
}

impl<'a> Q8Rows<'a> {
    /// The first `columns` (at most `k_padded`) of each row of a contiguous (`packed`, `scales`).
    fn of(packed: &'a FlexTensor, scales: &'a FlexTensor, columns: usize) -> Self {
        let [n, blocks] = dims2(scales);
        let bytes: &[i8] = bytemuck::cast_slice(elements::<i32>(packed));
        Self { bytes, scales: elements::<f32>(scales), n, blocks, columns }
    }

    /// Rows `rows` in f32, `[rows.len(), columns]`.
    fn expand(&self, rows: Range<usize>) -> Vec<f32> {
        let (blocks, columns) = (self.blocks, self.columns);
        let mut out = vec![0f32; rows.len() * columns];
        // Nothing to fill (and no row to split the work by).
        if columns == 0 {
            return out;
        }
        let fill = |(index, values): (usize, &mut [f32])| {
            let row = rows.start + index;
            let (bytes, scales) =
                (&self.bytes[row * blocks * Q8_BLOCK..][..columns], &self.scales[row * blocks..][..blocks]);
            for ((values, bytes), &scale) in values.chunks_mut(Q8_BLOCK).zip(bytes.chunks(Q8_BLOCK)).zip(scales) {
                for (value, &byte) in values.iter_mut().zip(bytes) {
                    *value = scale * byte as f32;
                }
            }
        };
        for_each_part(&mut out, columns, ROWS_PER_TASK, rows.len() * columns, fill);
        out
    }

    /// The row ranges expanded together: at most [`BAND_VALUES`] weights each.
    fn bands(&self) -> impl Iterator<Item = Range<usize>> {
        let (n, rows) = (self.n, (BAND_VALUES / self.columns.max(1)).max(1));
        (0..n).step_by(rows).map(move |first| first..(first + rows).min(n))
    }
}

/// `x @ w^T`: `x` `[m, columns]` -> `[m, n]`, `w` expanded a band of rows at a time, each band's
/// product in the orientation [`gemm_product`] picks for a weight read transposed.
fn banded_product(x: &[f32], m: usize, w: &Q8Rows) -> Vec<f32> {
    let (n, k) = (w.n, w.columns);
    let mut out = vec![0f32; m * n];
    for rows in w.bands() {
        let band = w.expand(rows.clone());
        let products = gemm_product(x, m, &Strided::row_major(&band, rows.len(), k).transposed());
        for (out_row, product_row) in out.chunks_exact_mut(n).zip(products.chunks_exact(rows.len())) {
            out_row[rows.clone()].copy_from_slice(product_row);
        }
    }
    out
}

/// `g @ w`: `g` `[m, n]` -> `[m, columns]`, summed over bands of `w`'s rows.
fn banded_product_transposed(g: &[f32], m: usize, w: &Q8Rows) -> Vec<f32> {
    let (n, k) = (w.n, w.columns);
    let mut out = vec![0f32; m * k];
    for rows in w.bands() {
        let band = w.expand(rows.clone());
        // SAFETY: columns `rows` of the `[m, n]` `g`, the `[rows.len(), k]` band and the `[m, k]`
        // output lie inside their buffers.
        unsafe {
            gemm_strided(
                [m, rows.len(), k],
                (out.as_mut_ptr(), k as isize, 1),
                true,
                (g.as_ptr().add(rows.start), n as isize, 1),
                (band.as_ptr(), k as isize, 1),
                gemm_threads(m * rows.len() * k),
            );
        }
    }
    out
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
    for_each_part(&mut by_output, m, ROWS_PER_TASK, m * n * padded, fill);
    let mut out = vec![0f32; m * n];
    for (output, values) in by_output.chunks_exact(m).enumerate() {
        for (row, &value) in values.iter().enumerate() {
            out[row * n + output] = value;
        }
    }
    out
}

/// `sum_b scale_b * sum_i x[32b + i] * byte[32b + i]`, with AVX2 and FMA where the CPU has them
/// (asked once per product, not once per row), with SIMD128 in a WebAssembly build that has it.
fn dot_for_this_cpu() -> fn(&[f32], &[i8], &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU was just checked for both features.
        return |x, bytes, scales| unsafe { dot_avx2(x, bytes, scales) };
    }
    #[cfg(all(target_family = "wasm", target_feature = "simd128"))]
    {
        dot_simd128
    }
    #[cfg(not(all(target_family = "wasm", target_feature = "simd128")))]
    {
        dot_portable
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_avx2(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    dot_portable(x, bytes, scales)
}

/// `dot_portable` written in SIMD128 (two vectors for its eight lanes, each lane's sum in the same
/// order, exact conversions, no fused multiply-add: the same to the bit by construction; the
/// browser tests run it, not a bitwise test): compiled for wasm, `dot_portable`'s loop converts its
/// bytes one at a time.
#[cfg(all(target_family = "wasm", target_feature = "simd128"))]
fn dot_simd128(x: &[f32], bytes: &[i8], scales: &[f32]) -> f32 {
    use core::arch::wasm32::*;
    let mut total = [f32x4_splat(0.0); 2];
    for ((x, bytes), &scale) in x.chunks_exact(Q8_BLOCK).zip(bytes.chunks_exact(Q8_BLOCK)).zip(scales) {
        let x: &[f32; Q8_BLOCK] = x.try_into().expect("whole blocks");
        let bytes: &[i8; Q8_BLOCK] = bytes.try_into().expect("whole blocks");
        let mut block = [f32x4_splat(0.0); 2];
        for part in 0..Q8_BLOCK / 8 {
            // SAFETY: both arrays hold whole blocks, so the 8 bytes and 2 x 4 floats at `part * 8`
            // are in bounds; the loads have no alignment requirement.
            let (wide, x_low, x_high) = unsafe {
                (
                    i16x8_load_extend_i8x8(bytes.as_ptr().add(part * 8)),
                    v128_load(x.as_ptr().add(part * 8).cast()),
                    v128_load(x.as_ptr().add(part * 8 + 4).cast()),
                )
            };
            let low = f32x4_convert_i32x4(i32x4_extend_low_i16x8(wide));
            let high = f32x4_convert_i32x4(i32x4_extend_high_i16x8(wide));
            block[0] = f32x4_add(block[0], f32x4_mul(x_low, low));
            block[1] = f32x4_add(block[1], f32x4_mul(x_high, high));
        }
        let scale = f32x4_splat(scale);
        total[0] = f32x4_add(total[0], f32x4_mul(scale, block[0]));
        total[1] = f32x4_add(total[1], f32x4_mul(scale, block[1]));
    }
    let [low, high] = total;
    [
        f32x4_extract_lane::<0>(low),
        f32x4_extract_lane::<1>(low),
        f32x4_extract_lane::<2>(low),
        f32x4_extract_lane::<3>(low),
        f32x4_extract_lane::<0>(high),
        f32x4_extract_lane::<1>(high),
        f32x4_extract_lane::<2>(high),
        f32x4_extract_lane::<3>(high),
    ]
    .iter()
    .sum()
}

/// Eight independent lanes, summed across lanes once per row rather than once per block, so the
/// compiler can vectorise the whole loop without reordering any one lane's sum.
#[cfg(not(all(target_family = "wasm", target_feature = "simd128")))]
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

#[cfg(wgpu)]
/// The WGSL half: the kernels on wgpu.
mod wgpu {
    use burn::backend::Cube;
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::wgpu::CubeTensor;
    use cubecl::CubeCount;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size, spread};

    impl Q8ExpandBackend for Cube {
        fn q8_dequantize(packed: CubeTensor, scales: CubeTensor) -> CubeTensor {
            let columns = scales.meta.shape()[1] * Q8_BLOCK;
            dequantize(contiguous(packed), contiguous(scales), columns)
        }
    }

    impl Q8Backend for Cube {
        /// `shaders/q8_matvec.wgsl` for up to [`Q8_DIRECT_MAX_ROWS`] rows (one workgroup per output,
        /// within one dispatch dimension); else the matrix expanded by `shaders/q8_dequantize.wgsl`
        /// for this product only, and Burn's matmul.
        fn q8_matmul(x: CubeTensor, packed: CubeTensor, scales: CubeTensor) -> CubeTensor {
            let (m, n) = (x.meta.shape()[0], packed.meta.shape()[0]);
            if m > Q8_DIRECT_MAX_ROWS || n > MAX_WORKGROUPS {
                let k = x.meta.shape()[1];
                let weights = dequantize(contiguous(packed), contiguous(scales), k);
                return Cube::float_matmul(contiguous(x), Cube::float_swap_dims(weights, 0, 1));
            }
            launch_matvec::<Q8MatvecShader>(PLAIN, x, packed, scales, Vec::new(), NO_ACTIVATION)
        }

        /// With `w` expanded for this product only (one matrix at a time: an LM head's shard holds at
        /// most 128 MiB of f32).
        fn q8_matmul_input_grad(g: CubeTensor, packed: CubeTensor, scales: CubeTensor, k: usize) -> CubeTensor {
            Cube::float_matmul(g, dequantize(contiguous(packed), contiguous(scales), k))
        }
    }

    impl Q8LinearBackend for Cube {
        fn q8_linear(
            x: CubeTensor,
            packed: CubeTensor,
            scales: CubeTensor,
            bias: CubeTensor,
            activation: u32,
        ) -> CubeTensor {
            launch_matvec::<Q8LinearShader>(BIAS, x, packed, scales, vec![bias], activation)
        }

        fn q8_linear_residual(
            x: CubeTensor,
            packed: CubeTensor,
            scales: CubeTensor,
            bias: CubeTensor,
            residual: CubeTensor,
        ) -> CubeTensor {
            launch_matvec::<Q8LinearResidualShader>(RESIDUAL, x, packed, scales, vec![bias, residual], NO_ACTIVATION)
        }
    }

    const PLAIN: WgslSource = kernel_source!("q8_matvec.wgsl", "q8_matvec_plain.wgsl");
    const BIAS: WgslSource = kernel_source!("activation.wgsl", "q8_matvec.wgsl", "q8_matvec_bias.wgsl");
    const RESIDUAL: WgslSource = kernel_source!("q8_matvec.wgsl", "q8_matvec_residual.wgsl");
    /// Names `q8_matmul`'s kernel in launch counts.
    struct Q8MatvecShader;
    /// Names `q8_linear`'s kernel in launch counts.
    struct Q8LinearShader;
    /// Names `q8_linear_residual`'s kernel in launch counts.
    struct Q8LinearResidualShader;

    const WORKGROUP_SIZE: u32 = 64;

    /// Launches a variant of `shaders/q8_matvec.wgsl` on x `[m, k]`, the 8-bit matrix and `after`
    /// (bound in that order, as the variant file declares them), one workgroup per output. Returns
    /// the output `[m, n]`, bound after them.
    fn launch_matvec<Name: 'static>(
        source: WgslSource,
        x: CubeTensor,
        packed: CubeTensor,
        scales: CubeTensor,
        after: Vec<CubeTensor>,
        activation: u32,
    ) -> CubeTensor {
        let inputs: Vec<CubeTensor> = [x, packed, scales].into_iter().chain(after).map(contiguous).collect();
        let (m, k) = (inputs[0].meta.shape()[0], inputs[0].meta.shape()[1]);
        let (n, words) = (inputs[1].meta.shape()[0], inputs[1].meta.shape()[1]);
        let blocks = inputs[2].meta.shape()[1];
        launch_to_output(
            WgslKernel::<Name>::new(source, WORKGROUP_SIZE),
            CubeCount::Static(size(n), 1, 1),
            &inputs.iter().collect::<Vec<_>>(),
            [m, n],
            &[size(m), size(n), size(k), size(words), size(blocks), activation],
        )
    }

    const DEQUANTIZE: WgslSource = kernel_source!("q8_dequantize.wgsl");
    /// Names the kernel in launch counts.
    struct Q8DequantizeShader;

    /// The first `columns` inputs of each row of the `[n, k_padded]` matrix in f32, `[n, columns]`,
    /// by `shaders/q8_dequantize.wgsl`; (`packed`, `scales`) contiguous.
    fn dequantize(packed: CubeTensor, scales: CubeTensor, columns: usize) -> CubeTensor {
        let (n, words) = (packed.meta.shape()[0], packed.meta.shape()[1]);
        let blocks = scales.meta.shape()[1];
        let len = n * columns;
        let (workgroups, groups_x) = spread(len.div_ceil(WORKGROUP_SIZE as usize));
        launch_to_output(
            WgslKernel::<Q8DequantizeShader>::new(DEQUANTIZE, WORKGROUP_SIZE),
            workgroups,
            &[&packed, &scales],
            [n, columns],
            &[size(len), size(columns), size(words), size(blocks), groups_x],
        )
    }
}
