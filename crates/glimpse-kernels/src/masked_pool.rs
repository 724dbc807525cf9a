//! Pooling video frames through soft temporal masks: the moment embedding of the alignment loop,
//! differentiated with respect to the masks on every optimisation step.

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::wgsl::wgpu_f32;

/// Largest frame dimension the backward kernel holds in workgroup memory (8 KiB).
const MAX_DIM: usize = 2048;

/// Frames pooled through each mask and L2-normalised:
/// `l2_normalize((masks / max(sum_t masks, 1e-6)) @ frames)`.
///
/// masks: `[k, n]` (weights in `[0, 1]`, usually tracked by autodiff), frames: `[n, d]` ->
/// `[k, d]`.
///
/// Runs the WGSL kernels `shaders/masked_pool.wgsl` and `shaders/masked_pool_backward.wgsl`
/// (gradient with respect to the masks) when both are f32 on a wgpu device, with or without
/// autodiff, `d <= 2048`, and the frames are not tracked by autodiff (the kernels compute no
/// gradient for them); otherwise [`masked_pool_fallback`].
pub fn masked_pool(masks: Tensor<2>, frames: Tensor<2>) -> Tensor<2> {
    // The kernels read through raw strides: a mismatch must stop here, not read out of bounds.
    assert_eq!(masks.dims()[1], frames.dims()[0], "masked_pool: masks {:?}, frames {:?}", masks.dims(), frames.dims());
    if !masked_pool_uses_kernel(&masks, &frames) {
        return masked_pool_fallback(masks, frames);
    }
    Tensor::from_dispatch(<Dispatch as MaskedPoolBackend>::masked_pool(masks.into_dispatch(), frames.into_dispatch()))
}

/// Whether [`masked_pool`] runs the WGSL kernels for these inputs (rather than the fallback).
pub fn masked_pool_uses_kernel(masks: &Tensor<2>, frames: &Tensor<2>) -> bool {
    frames.dims()[1] <= MAX_DIM && wgpu_f32(masks) && wgpu_f32(frames) && !frames.is_tracked()
}

/// [`masked_pool`] in plain Burn operations: any backend, gradients for both inputs. Same shapes.
pub fn masked_pool_fallback(masks: Tensor<2>, frames: Tensor<2>) -> Tensor<2> {
    let weights = masks.clone() / masks.sum_dim(1).clamp_min(1e-6);
    let pooled = weights.matmul(frames);
    // `glimpse_models::l2_normalize`, which this crate cannot call: glimpse-models depends on it.
    let norm = pooled.clone().square().sum_dim(1).clamp_min(1e-24).sqrt();
    pooled / norm
}

#[backend_extension(Cube: cfg(wgpu), Autodiff)]
trait MaskedPoolBackend: Backend {
    fn masked_pool(masks: FloatTensor<Self>, frames: FloatTensor<Self>) -> FloatTensor<Self>;
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
    use cubecl::CubeCount;
    use cubecl::ir::attributes::BufferIOAttr;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, empty_like, kernel_source, launch, size, strides, untiled};

    const FORWARD: WgslSource = kernel_source!("masked_pool.wgsl");
    /// Names the forward kernel in launch counts.
    struct MaskedPoolShader;
    const BACKWARD: WgslSource = kernel_source!("masked_pool_backward.wgsl");
    /// Names the backward kernel in launch counts.
    struct MaskedPoolBackwardShader;

    const WORKGROUP_SIZE: u32 = 64;

    impl MaskedPoolBackend for Cube {
        fn masked_pool(masks: CubeTensor, frames: CubeTensor) -> CubeTensor {
            forward(masks, frames).pooled
        }
    }

    impl<C: CheckpointStrategy> MaskedPoolBackend for Autodiff<Cube, C> {
        fn masked_pool(masks: FloatTensor<Self>, frames: FloatTensor<Self>) -> FloatTensor<Self> {
            // Only the masks are registered as a parent: a tracked `frames` would silently get no
            // gradient, and `masked_pool` sends those to the fallback.
            assert!(!frames.is_tracked(), "masked_pool kernel: frames must not be tracked by autodiff");
            match MaskedPoolBackward.prepare::<C>([masks.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let frames = frames.into_primitive();
                    let forward = forward(masks.into_primitive(), frames.clone());
                    let pooled = forward.pooled.clone();
                    prep.finish(BackwardState { frames, forward }, pooled)
                }
                OpsKind::UnTracked(prep) => {
                    prep.finish(forward(masks.into_primitive(), frames.into_primitive()).pooled)
                }
            }
        }
    }

    /// The forward kernel's outputs.
    #[derive(Debug, Clone)]
    struct Forward {
        /// `[k, d]`, the result.
        pooled: CubeTensor,
        /// `[k, 2]`: each row's mask mass and its pooled norm before clamping.
        stats: CubeTensor,
    }

    #[derive(Debug, Clone)]
    struct BackwardState {
        frames: CubeTensor,
        forward: Forward,
    }

    #[derive(Debug)]
    struct MaskedPoolBackward;

    impl Backward<Cube, 1> for MaskedPoolBackward {
        type State = BackwardState;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [masks_node] = ops.parents;
            let grad = grads.consume::<Cube>(&ops.node);
            if let Some(node) = masks_node {
                grads.register::<Cube>(node.id, backward(ops.state, grad));
            }
        }
    }

    fn forward(masks: CubeTensor, frames: CubeTensor) -> Forward {
        let (masks, frames) = (untiled(masks), untiled(frames));
        let [rows, count] = dims2(&masks);
        let dim = dims2(&frames)[1];
        let pooled = empty_like(&masks, [rows, dim]);
        let stats = empty_like(&masks, [rows, 2]);
        let mut params = vec![size(count), size(dim)];
        params.extend(strides::<2>(&masks));
        params.extend(strides::<2>(&frames));
        launch(
            &masks.client,
            WgslKernel::<MaskedPoolShader>::new(FORWARD, WORKGROUP_SIZE),
            CubeCount::Static(size(rows), 1, 1),
            vec![
                (masks.handle.clone(), BufferIOAttr::ReadOnly),
                (frames.handle.clone(), BufferIOAttr::ReadOnly),
                (pooled.handle.clone(), BufferIOAttr::WriteOnly),
                (stats.handle.clone(), BufferIOAttr::WriteOnly),
            ],
            &params,
        );
        Forward { pooled, stats }
    }

    /// dL/dmasks `[k, n]` from dL/dpooled `grad` `[k, d]`.
    fn backward(state: BackwardState, grad: CubeTensor) -> CubeTensor {
        let BackwardState { frames, forward } = state;
        let grad = untiled(grad);
        let [count, dim] = dims2(&frames);
        let rows = dims2(&grad)[0];
        let masks_grad = empty_like(&grad, [rows, count]);
        let mut params = vec![size(count), size(dim)];
        params.extend(strides::<2>(&frames));
        params.extend(strides::<2>(&grad));
        launch(
            &grad.client,
            WgslKernel::<MaskedPoolBackwardShader>::new(BACKWARD, WORKGROUP_SIZE),
            CubeCount::Static(size(rows), 1, 1),
            vec![
                (frames.handle.clone(), BufferIOAttr::ReadOnly),
                (forward.pooled.handle.clone(), BufferIOAttr::ReadOnly),
                (forward.stats.handle.clone(), BufferIOAttr::ReadOnly),
                (grad.handle.clone(), BufferIOAttr::ReadOnly),
                (masks_grad.handle.clone(), BufferIOAttr::WriteOnly),
            ],
            &params,
        );
        masks_grad
    }

    fn dims2(tensor: &CubeTensor) -> [usize; 2] {
        let shape = tensor.meta.shape();
        [shape[0], shape[1]]
    }
}
