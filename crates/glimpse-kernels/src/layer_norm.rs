//! LayerNorm over the last dimension in one kernel: every LayerNorm of the towers and of decoding.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_input, kernel_source, launch_to_output, size, spread};

const SOURCE: WgslSource = kernel_source!("layer_norm.wgsl");
/// Names the kernel in launch_to_output counts.
struct LayerNormShader;

/// Lanes per workgroup, each taking every 64th element of the row.
const WORKGROUP_SIZE: u32 = 64;

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last dimension, `var` biased.
///
/// x: `[..., dim]`, gamma and beta: `[dim]` -> `[..., dim]`.
///
/// Runs the WGSL kernel `shaders/layer_norm.wgsl` when all are f32 on a wgpu device outside
/// autodiff and `beta` is given; otherwise [`layer_norm_fallback`].
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Option<Tensor<1>>, epsilon: f64) -> Tensor<D> {
    let dim = x.dims()[D - 1];
    // The kernel indexes gamma and beta by column: a mismatch must stop here, not read out of bounds.
    assert!(
        gamma.dims() == [dim] && beta.as_ref().is_none_or(|b| b.dims() == [dim]),
        "layer_norm: x {:?}, gamma {:?}, beta {:?} do not match",
        x.dims(),
        gamma.dims(),
        beta.as_ref().map(Tensor::dims)
    );
    match beta {
        Some(beta) if layer_norm_uses_kernel(&x, &gamma, Some(&beta)) => {
            let shape = x.dims();
            let rows = x.reshape([-1, dim as i32]);
            let output = <Dispatch as LayerNormBackend>::layer_norm(
                rows.into_dispatch(),
                gamma.into_dispatch(),
                beta.into_dispatch(),
                epsilon,
            );
            Tensor::<2>::from_dispatch(output).reshape(shape)
        }
        beta => layer_norm_fallback(x, gamma, beta, epsilon),
    }
}

/// Whether [`layer_norm`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn layer_norm_uses_kernel<const D: usize>(x: &Tensor<D>, gamma: &Tensor<1>, beta: Option<&Tensor<1>>) -> bool {
    let Some(beta) = beta else { return false };
    x.shape().num_elements() > 0 && kernel_input(x) && kernel_input(gamma) && kernel_input(beta)
}

/// [`layer_norm`] as Burn computes it (its `layer_norm` operation, nine kernels on wgpu): any
/// backend, autodiff included. Same shapes.
pub fn layer_norm_fallback<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    burn::tensor::module::layer_norm(x, gamma, beta, epsilon)
}

#[backend_extension(Cube)]
trait LayerNormBackend: Backend {
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

impl LayerNormBackend for Cube {
    fn layer_norm(x: CubeTensor, gamma: CubeTensor, beta: CubeTensor, epsilon: f64) -> CubeTensor {
        let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
        let shape = x.meta.shape().clone();
        let (rows, dim) = (shape[0], shape[1]);
        let (workgroups, row_groups) = spread(rows);
        let params = [size(rows), size(dim), (epsilon as f32).to_bits(), row_groups];
        launch_to_output(
            WgslKernel::<LayerNormShader>::new(SOURCE, WORKGROUP_SIZE),
            workgroups,
            &[&x, &gamma, &beta],
            shape,
            &params,
        )
    }
}
