//! A dense layer for a few rows (decoding, a guided step's single positions) in one kernel: the
//! product, the bias and an optional activation, and in two variants what a transformer block
//! does around it: the LayerNorm before ([`layer_norm_linear`]) or the residual add after
//! ([`linear_residual`]). On the CPU backend, the product of those few rows splits over threads,
//! and a product of more rows is one gemm call in the orientation that reads a weight stored
//! transposed fastest (forward and, for a tracked input, backward); in the wasm build, from
//! `cpu::WASM_PRODUCT_MIN_ROWS` rows on, its own product instead.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::DType;

use crate::activation::{Activation, NO_ACTIVATION, bias_activation, bias_activation_fallback};
use crate::cpu::{Strided, dims2, elements, few_rows_product, gemm_product, on_flex};
use crate::layer_norm::{layer_norm, layer_norm_fallback};
use crate::wgsl::{MAX_WORKGROUPS, kernel_input};

/// Most rows the kernels take (the WGSL one's per-lane sums; the CPU backend's split of a product
/// whose every weight is read for few rows); more rows are a matmul's job (on the CPU backend, one
/// gemm call: [`linear_uses_cpu_kernel`]).
pub const LINEAR_MAX_ROWS: usize = 8;

/// Output columns per workgroup: 16 column lanes of 4.
const COLUMNS_PER_GROUP: usize = 64;

/// `activation(x W + b)`, or `x W + b` without an activation.
///
/// x: `[..., k]`, weight: `[k, n]` (Burn's `Linear` layout), bias: `[n]` -> `[..., n]`.
///
/// Runs the WGSL kernel `shaders/linear.wgsl` when all are f32 on a wgpu device outside autodiff,
/// with at most [`LINEAR_MAX_ROWS`] rows, `n` a multiple of 4 (within one dispatch dimension of
/// 64-column workgroups) and a bias ([`linear_uses_kernel`]); otherwise the product (the CPU
/// backend's own where [`linear_uses_cpu_kernel`], else a Burn matmul), then
/// [`bias_activation`] (which picks its own kernel). [`linear_fallback`] is all Burn operations.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    check_shapes(&x, &weight, bias.as_ref());
    match bias {
        Some(bias) if linear_uses_kernel(&x, &weight, Some(&bias)) => rows_through(x, weight.dims(), |rows| {
            <Dispatch as LinearBackend>::linear(
                rows.into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                activation.map_or(NO_ACTIVATION, Activation::code),
            )
        }),
        bias => bias_activation(product(x, weight), bias, activation),
    }
}

/// `x W`: x `[..., k]`, weight `[k, n]` -> `[..., n]`.
fn product<const D: usize>(x: Tensor<D>, weight: Tensor<2>) -> Tensor<D> {
    match linear_uses_cpu_kernel(&x, &weight) {
        true => cpu_product(x, weight),
        false => x.matmul(weight.unsqueeze()),
    }
}

/// `x W` on the CPU backend's kernel, for inputs where [`linear_uses_cpu_kernel`]; the weight may
/// be a view (`matmul_t` passes its rows transposed). Same shapes as [`product`].
pub(crate) fn cpu_product<const D: usize>(x: Tensor<D>, weight: Tensor<2>) -> Tensor<D> {
    rows_through(x, weight.dims(), |rows| {
        <Dispatch as RowsProductBackend>::rows_product(rows.into_dispatch(), weight.into_dispatch())
    })
}

/// `residual + x W + b`: a transformer sublayer's output projection and the residual add after
/// it. x: `[..., k]`, weight: `[k, n]`, bias: `[n]`, residual: `[..., n]` -> `[..., n]`.
///
/// Runs the kernel's residual variant where [`linear`] would run the kernel and the residual is
/// f32 on the same device outside autodiff; otherwise `residual + linear(x, weight, bias)`.
/// [`linear_residual_fallback`] is all Burn operations.
pub fn linear_residual<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Tensor<D>,
) -> Tensor<D> {
    check_shapes(&x, &weight, bias.as_ref());
    let mut out = x.dims();
    out[D - 1] = weight.dims()[1];
    assert!(residual.dims() == out, "linear_residual: residual {:?} is not the output's {out:?}", residual.dims());
    match bias {
        Some(bias) if linear_residual_uses_kernel(&x, &weight, Some(&bias), &residual) => {
            let n = weight.dims()[1] as i32;
            rows_through(x, weight.dims(), |rows| {
                <Dispatch as LinearBackend>::linear_residual(
                    rows.into_dispatch(),
                    weight.into_dispatch(),
                    bias.into_dispatch(),
                    residual.reshape([-1, n]).into_dispatch(),
                )
            })
        }
        bias => residual + linear(x, weight, bias, None),
    }
}

/// `activation(LayerNorm(x) W + b)`: a pre-LN block's LayerNorm and the projection after it.
/// x: `[..., k]`, gamma and beta: `[k]` (the LayerNorm, as [`layer_norm`] takes it), weight:
/// `[k, n]`, bias: `[n]` -> `[..., n]`.
///
/// Runs the kernel's LayerNorm variant where [`linear`] would run the kernel and gamma and beta
/// are f32 on the same device outside autodiff; otherwise [`layer_norm`], then [`linear`].
/// [`layer_norm_linear_fallback`] is all Burn operations.
pub fn layer_norm_linear<const D: usize>(
    x: Tensor<D>,
    (gamma, beta, epsilon): (Tensor<1>, Option<Tensor<1>>, f64),
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    check_shapes(&x, &weight, bias.as_ref());
    let k = weight.dims()[0];
    assert!(
        gamma.dims() == [k] && beta.as_ref().is_none_or(|b| b.dims() == [k]),
        "layer_norm_linear: gamma {:?}, beta {:?} do not match the weight {:?}",
        gamma.dims(),
        beta.as_ref().map(Tensor::dims),
        weight.dims()
    );
    match (beta, bias) {
        (Some(beta), Some(bias)) if layer_norm_linear_uses_kernel(&x, (&gamma, Some(&beta)), &weight, Some(&bias)) => {
            rows_through(x, weight.dims(), |rows| {
                <Dispatch as LinearBackend>::layer_norm_linear(
                    rows.into_dispatch(),
                    gamma.into_dispatch(),
                    beta.into_dispatch(),
                    epsilon,
                    weight.into_dispatch(),
                    bias.into_dispatch(),
                    activation.map_or(NO_ACTIVATION, Activation::code),
                )
            })
        }
        (beta, bias) => linear(layer_norm(x, gamma, beta, epsilon), weight, bias, activation),
    }
}

/// The kernels index through these sizes: a mismatch must stop here, not read out of bounds.
fn check_shapes<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) {
    let [k, n] = weight.dims();
    assert!(
        x.dims()[D - 1] == k && bias.is_none_or(|b| b.dims() == [n]),
        "linear: x {:?}, weight {:?}, bias {:?} do not match",
        x.dims(),
        weight.dims(),
        bias.map(Tensor::dims)
    );
}

/// `x` as `[rows, k]` through `kernel`, its `[rows, n]` result back in `x`'s leading dims (the
/// 8-bit layers' too).
pub(crate) fn rows_through<const D: usize>(
    x: Tensor<D>,
    [k, n]: [usize; 2],
    kernel: impl FnOnce(Tensor<2>) -> FloatTensor<Dispatch>,
) -> Tensor<D> {
    let mut out = x.dims();
    out[D - 1] = n;
    let rows = rows(&x);
    Tensor::<2>::from_dispatch(kernel(x.reshape([rows, k]))).reshape(out)
}

/// The rows of `x`: the product of all but its last dimension (0 when that one is 0).
pub(crate) fn rows<const D: usize>(x: &Tensor<D>) -> usize {
    x.shape().num_elements() / x.dims()[D - 1].max(1)
}

/// Whether [`linear`] runs the WGSL kernel for these inputs.
pub fn linear_uses_kernel<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> bool {
    let Some(bias) = bias else { return false };
    let [k, n] = weight.dims();
    (1..=LINEAR_MAX_ROWS).contains(&rows(x))
        && k > 0
        && n.is_multiple_of(4)
        && (1..=MAX_WORKGROUPS).contains(&n.div_ceil(COLUMNS_PER_GROUP))
        && kernel_input(x)
        && kernel_input(weight)
        && kernel_input(bias)
}

/// Whether [`linear`] (and its variants, which call it off wgpu) multiplies on the CPU backend's
/// kernel: f32 on the CPU backend with a constant weight (outside autodiff; `x` may be tracked:
/// the kernel has a backward) and at least one row. Up to [`LINEAR_MAX_ROWS`] rows the product
/// splits over threads by blocks of the weight; more rows are one gemm call, which writes the
/// product column-major up to 256 rows where the weight is read transposed (the backward's
/// `dL/dy W^T`, the LM head's `x E^T`): gemm would otherwise gather the weight element by element
/// on every call. The wasm build's own product takes the larger of these (`cpu::gemm_strided`).
pub fn linear_uses_cpu_kernel<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>) -> bool {
    rows(x) > 0
        && on_flex(x)
        && on_flex(weight)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && !weight.is_autodiff()
}

/// Whether [`linear_residual`] runs the WGSL kernel for these inputs.
pub fn linear_residual_uses_kernel<const D: usize>(
    x: &Tensor<D>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    residual: &Tensor<D>,
) -> bool {
    linear_uses_kernel(x, weight, bias) && kernel_input(residual)
}

/// Whether [`layer_norm_linear`] runs the WGSL kernel for these inputs.
pub fn layer_norm_linear_uses_kernel<const D: usize>(
    x: &Tensor<D>,
    (gamma, beta): (&Tensor<1>, Option<&Tensor<1>>),
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> bool {
    linear_uses_kernel(x, weight, bias) && kernel_input(gamma) && beta.is_some_and(kernel_input)
}

/// [`linear`] in Burn operations (matmul, bias add, `Activation::apply`): any backend, autodiff
/// included. Same shapes.
pub fn linear_fallback<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    bias_activation_fallback(x.matmul(weight.unsqueeze()), bias, activation)
}

/// [`linear_residual`] in Burn operations. Same shapes.
pub fn linear_residual_fallback<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    residual: Tensor<D>,
) -> Tensor<D> {
    residual + linear_fallback(x, weight, bias, None)
}

/// [`layer_norm_linear`] in Burn operations. Same shapes.
pub fn layer_norm_linear_fallback<const D: usize>(
    x: Tensor<D>,
    (gamma, beta, epsilon): (Tensor<1>, Option<Tensor<1>>, f64),
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    linear_fallback(layer_norm_fallback(x, gamma, beta, epsilon), weight, bias, activation)
}

/// `[m, k] x [k, n] -> [m, n]`, split over threads ([`few_rows_product`]) up to
/// [`LINEAR_MAX_ROWS`] rows, else one gemm call ([`gemm_product`]); under autodiff for a tracked
/// `x` and a constant weight, with a backward of its own.
#[backend_extension(Flex, Autodiff)]
trait RowsProductBackend: Backend {
    fn rows_product(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl RowsProductBackend for Flex {
    fn rows_product(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        let x = x.to_contiguous();
        let (m, n) = (dims2(&x)[0], dims2(&weight)[1]);
        let out = cpu_rows_product(elements(&x), m, &Strided::of(&weight));
        FlexTensor::from_data(TensorData::new(out, [m, n]))
    }
}

impl<C: CheckpointStrategy> RowsProductBackend for Autodiff<Flex, C> {
    fn rows_product(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight = Self::inner(weight);
        match RowsProductBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = Flex::rows_product(x.into_primitive(), weight.clone());
                prep.finish(weight, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::rows_product(x.into_primitive(), weight)),
        }
    }
}

/// `[m, inner] x rhs -> [m, n]` by the CPU product for `m` rows.
fn cpu_rows_product(x: &[f32], m: usize, rhs: &Strided) -> Vec<f32> {
    match m {
        1..=LINEAR_MAX_ROWS => few_rows_product(x, m, rhs),
        _ => gemm_product(x, m, rhs),
    }
}

#[derive(Debug)]
struct RowsProductBackward;

impl Backward<Flex, 1> for RowsProductBackward {
    /// The weight (shared, not copied).
    type State = FlexTensor;

    /// `dL/dx = dL/dy W^T`, by the same product for that many rows (the weight read transposed).
    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(node) = x_node {
            let weight = ops.state;
            let (m, k) = (dims2(&grad)[0], dims2(&weight)[0]);
            let out = cpu_rows_product(elements(&grad), m, &Strided::of(&weight).transposed());
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(out, [m, k])));
        }
    }
}

/// All on `[m, k]` rows, `m <= LINEAR_MAX_ROWS`, -> `[m, n]`.
// Without wgpu no backend implements it, and the dispatch Burn generates from each method reads
// none of its arguments.
#[backend_extension(Cube: cfg(wgpu))]
trait LinearBackend: Backend {
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: u32,
    ) -> FloatTensor<Self>;

    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn linear_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn layer_norm_linear(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: u32,
    ) -> FloatTensor<Self>;
}

#[cfg(wgpu)]
/// The WGSL half: the kernels on wgpu.
mod wgpu {
    use burn::backend::Cube;
    use burn::backend::wgpu::CubeTensor;
    use cubecl::CubeCount;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size};

    const PLAIN: WgslSource = kernel_source!("activation.wgsl", "linear.wgsl", "linear_plain.wgsl");
    const RESIDUAL: WgslSource = kernel_source!("activation.wgsl", "linear.wgsl", "linear_residual.wgsl");
    const NORMED: WgslSource = kernel_source!("activation.wgsl", "linear.wgsl", "linear_normed.wgsl");
    /// Names `linear`'s kernel in launch counts.
    struct LinearShader;
    /// Names `linear_residual`'s kernel in launch counts.
    struct LinearResidualShader;
    /// Names `layer_norm_linear`'s kernel in launch counts.
    struct LayerNormLinearShader;

    /// 16 column lanes times 16 slices of the inputs (`shaders/linear.wgsl`).
    const WORKGROUP_SIZE: u32 = 256;

    impl LinearBackend for Cube {
        fn linear(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, activation: u32) -> CubeTensor {
            let n = weight.meta.shape()[1];
            launch_variant::<LinearShader>(PLAIN, [x, weight, bias].into(), n, activation, 0.0)
        }

        fn linear_residual(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, residual: CubeTensor) -> CubeTensor {
            let n = weight.meta.shape()[1];
            launch_variant::<LinearResidualShader>(RESIDUAL, [x, weight, bias, residual].into(), n, NO_ACTIVATION, 0.0)
        }

        fn layer_norm_linear(
            x: CubeTensor,
            gamma: CubeTensor,
            beta: CubeTensor,
            epsilon: f64,
            weight: CubeTensor,
            bias: CubeTensor,
            activation: u32,
        ) -> CubeTensor {
            let n = weight.meta.shape()[1];
            launch_variant::<LayerNormLinearShader>(
                NORMED,
                [x, gamma, beta, weight, bias].into(),
                n,
                activation,
                epsilon,
            )
        }
    }

    /// Launches a variant of `shaders/linear.wgsl` on `inputs`, bound in order as its variant file
    /// declares them, x `[m, k]` first. Returns the output `[m, n]`, bound after them.
    fn launch_variant<Name: 'static>(
        source: WgslSource,
        inputs: Vec<CubeTensor>,
        n: usize,
        activation: u32,
        epsilon: f64,
    ) -> CubeTensor {
        let inputs: Vec<CubeTensor> = inputs.into_iter().map(contiguous).collect();
        let (m, k) = (inputs[0].meta.shape()[0], inputs[0].meta.shape()[1]);
        launch_to_output(
            WgslKernel::<Name>::new(source, WORKGROUP_SIZE),
            CubeCount::Static(size(n.div_ceil(COLUMNS_PER_GROUP)), 1, 1),
            &inputs.iter().collect::<Vec<_>>(),
            [m, n],
            &[size(m), size(k), size(n), activation, (epsilon as f32).to_bits()],
        )
    }
}
