//! LayerNorm over the last dimension in one kernel: every LayerNorm of the towers and of decoding,
//! and with its gradient in one more under autodiff (a frozen model's LayerNorms on the way to a
//! prefix or a mask).

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::wgsl::wgpu_f32;

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last dimension, `var` biased.
///
/// x: `[..., dim]`, gamma and beta: `[dim]` -> `[..., dim]`.
///
/// Runs the WGSL kernel `shaders/layer_norm.wgsl` when all are f32 on a wgpu device and `beta` is
/// given, under autodiff too (with `shaders/layer_norm_backward.wgsl` for the gradient of `x`) as
/// long as `gamma` and `beta` are not tracked; otherwise [`layer_norm_fallback`].
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
    x.shape().num_elements() > 0
        && wgpu_f32(x)
        && wgpu_f32(gamma)
        && wgpu_f32(beta)
        && !gamma.is_tracked()
        && !beta.is_tracked()
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

// Without wgpu no backend implements it, and the dispatch Burn generates from each method reads
// none of its arguments.
#[backend_extension(Cube: cfg(wgpu), Autodiff)]
trait LayerNormBackend: Backend {
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
}

#[cfg(wgpu)]
/// The WGSL half: the kernel on wgpu, and its backward under autodiff.
mod wgpu {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::wgpu::CubeTensor;
    use burn::backend::{Autodiff, Cube};

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size, spread};

    const SOURCE: WgslSource = kernel_source!("layer_norm_row.wgsl", "layer_norm.wgsl");
    /// Names the kernel in launch counts.
    struct LayerNormShader;
    const BACKWARD: WgslSource = kernel_source!("layer_norm_row.wgsl", "layer_norm_backward.wgsl");
    /// Names the backward kernel in launch counts.
    struct LayerNormBackwardShader;

    /// Lanes per workgroup, each taking every 64th element of the row.
    const WORKGROUP_SIZE: u32 = 64;

    impl LayerNormBackend for Cube {
        fn layer_norm(x: CubeTensor, gamma: CubeTensor, beta: CubeTensor, epsilon: f64) -> CubeTensor {
            forward(x, gamma, beta, epsilon)
        }
    }

    impl<C: CheckpointStrategy> LayerNormBackend for Autodiff<Cube, C> {
        fn layer_norm(
            x: FloatTensor<Self>,
            gamma: FloatTensor<Self>,
            beta: FloatTensor<Self>,
            epsilon: f64,
        ) -> FloatTensor<Self> {
            // Only x is registered as a parent: a tracked gamma or beta would silently get no
            // gradient, and `layer_norm` sends those to the fallback.
            assert!(!gamma.is_tracked() && !beta.is_tracked(), "layer_norm kernel: gamma and beta must not be tracked");
            // Contiguous here, not only in `forward`: the backward kernel reads the gamma it is given.
            let (gamma, beta) = (contiguous(gamma.into_primitive()), beta.into_primitive());
            match LayerNormBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let x = contiguous(x.into_primitive());
                    let output = forward(x.clone(), gamma.clone(), beta, epsilon);
                    prep.finish(BackwardState { x, gamma, epsilon }, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive(), gamma, beta, epsilon)),
            }
        }
    }

    /// x: `[rows, dim]`.
    fn forward(x: CubeTensor, gamma: CubeTensor, beta: CubeTensor, epsilon: f64) -> CubeTensor {
        let [x, gamma, beta] = [x, gamma, beta].map(contiguous);
        launch_rows::<LayerNormShader>(SOURCE, [&x, &gamma, &beta], epsilon)
    }

    /// Launches one of the two shaders over `[x, gamma, third]` (beta forward, the output's gradient
    /// backward), all contiguous: one workgroup per row of x `[rows, dim]`, a new tensor of x's shape.
    fn launch_rows<Name: 'static>(source: WgslSource, inputs: [&CubeTensor; 3], epsilon: f64) -> CubeTensor {
        let shape = inputs[0].meta.shape().clone();
        let (rows, dim) = (shape[0], shape[1]);
        let (workgroups, row_groups) = spread(rows);
        let params = [size(rows), size(dim), (epsilon as f32).to_bits(), row_groups];
        launch_to_output(WgslKernel::<Name>::new(source, WORKGROUP_SIZE), workgroups, &inputs, shape, &params)
    }

    #[derive(Debug, Clone)]
    struct BackwardState {
        /// `[rows, dim]`, contiguous: the forward's input, from which mean and spread are recomputed.
        x: CubeTensor,
        /// `[dim]`, contiguous.
        gamma: CubeTensor,
        epsilon: f64,
    }

    #[derive(Debug)]
    struct LayerNormBackward;

    impl Backward<Cube, 1> for LayerNormBackward {
        type State = BackwardState;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [x_node] = ops.parents;
            let dy = grads.consume::<Cube>(&ops.node);
            if let Some(node) = x_node {
                let dy = contiguous(dy);
                let BackwardState { x, gamma, epsilon } = ops.state;
                let dx = launch_rows::<LayerNormBackwardShader>(BACKWARD, [&x, &gamma, &dy], epsilon);
                grads.register::<Cube>(node.id, dx);
            }
        }
    }
}
