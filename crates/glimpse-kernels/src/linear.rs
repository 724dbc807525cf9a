//! A dense layer for a few rows (decoding, a guided step's single positions) in one kernel: the
//! product, the bias and an optional activation.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use cubecl::CubeCount;
use cubecl::ir::attributes::BufferIOAttr;

use crate::activation::{Activation, NO_ACTIVATION, bias_activation, bias_activation_fallback};
use crate::wgsl::{
    MAX_WORKGROUPS, WgslKernel, WgslSource, contiguous, empty_like, kernel_source, launch, size, wgpu_f32,
};

const SOURCE: WgslSource = kernel_source!("activation.wgsl", "linear.wgsl");
/// Names the kernel in launch counts.
struct LinearShader;

/// Most rows the kernel takes (its per-lane sums); more rows are a matmul's job.
pub const LINEAR_MAX_ROWS: usize = 8;

/// 16 column lanes times 16 slices of the inputs (`shaders/linear.wgsl`).
const WORKGROUP_SIZE: u32 = 256;

/// Output columns per workgroup: 16 column lanes of 4.
const COLUMNS_PER_GROUP: usize = 64;

/// `activation(x W + b)`, or `x W + b` without an activation.
///
/// x: `[..., k]`, weight: `[k, n]` (Burn's `Linear` layout), bias: `[n]` -> `[..., n]`.
///
/// Runs the WGSL kernel `shaders/linear.wgsl` when all are f32 on a wgpu device outside autodiff,
/// with at most [`LINEAR_MAX_ROWS`] rows, `n` a multiple of 4 (within one dispatch dimension of
/// 64-column workgroups) and a bias; otherwise a Burn matmul,
/// then [`bias_activation`] (which picks its own kernel). [`linear_fallback`] is all Burn
/// operations.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    let dims = x.dims();
    let [k, n] = weight.dims();
    // The kernel indexes through these sizes: a mismatch must stop here, not read out of bounds.
    assert!(
        dims[D - 1] == k && bias.as_ref().is_none_or(|b| b.dims() == [n]),
        "linear: x {dims:?}, weight {:?}, bias {:?} do not match",
        weight.dims(),
        bias.as_ref().map(Tensor::dims)
    );
    match bias {
        Some(bias) if linear_uses_kernel(&x, &weight, Some(&bias)) => {
            let mut out = dims;
            out[D - 1] = n;
            let output = <Dispatch as LinearBackend>::linear(
                x.reshape([-1, k as i32]).into_dispatch(),
                weight.into_dispatch(),
                bias.into_dispatch(),
                activation.map_or(NO_ACTIVATION, Activation::code),
            );
            Tensor::<2>::from_dispatch(output).reshape(out)
        }
        bias => bias_activation(x.matmul(weight.unsqueeze()), bias, activation),
    }
}

/// Whether [`linear`] runs the WGSL kernel for these inputs.
pub fn linear_uses_kernel<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>, bias: Option<&Tensor<1>>) -> bool {
    let Some(bias) = bias else { return false };
    let rows = x.shape().num_elements() / x.dims()[D - 1].max(1);
    let [k, n] = weight.dims();
    (1..=LINEAR_MAX_ROWS).contains(&rows)
        && k > 0
        && n.is_multiple_of(4)
        && (1..=MAX_WORKGROUPS).contains(&n.div_ceil(COLUMNS_PER_GROUP))
        && wgpu_f32(x)
        && wgpu_f32(weight)
        && wgpu_f32(bias)
        && !(x.is_autodiff() || weight.is_autodiff() || bias.is_autodiff())
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

#[backend_extension(Cube)]
trait LinearBackend: Backend {
    /// `[m, k]` -> `[m, n]`, `m <= LINEAR_MAX_ROWS`.
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: u32,
    ) -> FloatTensor<Self>;
}

impl LinearBackend for Cube {
    fn linear(x: CubeTensor, weight: CubeTensor, bias: CubeTensor, activation: u32) -> CubeTensor {
        let [x, weight, bias] = [x, weight, bias].map(contiguous);
        let (m, k) = (x.meta.shape()[0], x.meta.shape()[1]);
        let n = weight.meta.shape()[1];
        let output = empty_like(&x, [m, n]);
        launch(
            &x.client,
            WgslKernel::<LinearShader>::new(SOURCE, WORKGROUP_SIZE),
            CubeCount::Static(size(n.div_ceil(COLUMNS_PER_GROUP)), 1, 1),
            vec![
                (x.handle.clone(), BufferIOAttr::ReadOnly),
                (weight.handle.clone(), BufferIOAttr::ReadOnly),
                (bias.handle.clone(), BufferIOAttr::ReadOnly),
                (output.handle.clone(), BufferIOAttr::WriteOnly),
            ],
            &[size(m), size(k), size(n), activation],
        );
        output
    }
}
