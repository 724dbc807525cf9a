//! Attention over a sequence, heads split in and merged out: a CLIP tower's layers, and GPT-2
//! reading several positions at once.

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::wgsl::{MAX_WORKGROUPS, wgpu_f32};

/// Largest head dimension the kernel takes (each lane holds its query and output row as 64 `vec4`s).
const MAX_HEAD_DIM: usize = 256;
/// Most keys the kernel takes: lavapipe cuts a shader's loops short after about 65535 turns in all
/// (NaN outputs past 2000 keys of head_dim 64), and the kernel's two loops over a key's `vec4`s
/// turn `keys * head_dim / 8` times. Longer sequences are the fallback's matmuls' to begin with.
const MAX_KEYS: usize = 1024;

/// The keys each query may not see under causal attention over `t` positions after `past` cached
/// ones: query `i` sees keys `0..=past + i`. Made once per forward pass and shared by its layers:
/// the fallback applies it as a tensor (three kernel launches on wgpu to make), the kernel by its
/// shape alone.
pub struct CausalMask {
    /// `[1, 1, t, past + t]`, `true` where a key is hidden.
    hidden: Tensor<4, Bool>,
}

impl CausalMask {
    pub fn new(t: usize, past: usize, device: &Device) -> Self {
        Self { hidden: Tensor::<2, Bool>::tril_mask([t, past + t], past as i64, device).unsqueeze() }
    }
}

/// Which keys each query of [`attention`] sees.
#[derive(Clone, Copy)]
pub enum Mask<'a> {
    /// Every key.
    All,
    /// The causal mask of the call's own shape.
    Causal(&'a CausalMask),
    /// Any other: `true` hides a key, `[batch or 1, 1, t, s]`. Only the fallback takes it.
    Hidden(&'a Tensor<4, Bool>),
}

impl Mask<'_> {
    /// The mask as the fallback applies it.
    fn hidden(&self) -> Option<&Tensor<4, Bool>> {
        match self {
            Self::All => None,
            Self::Causal(causal) => Some(&causal.hidden),
            Self::Hidden(hidden) => Some(hidden),
        }
    }
}

/// Scaled dot-product attention, `softmax(scale q k^T) v` per head, with the heads merged:
/// q `[batch, heads, t, head_dim]`, k and v `[batch, heads, s, head_dim]` -> `[batch, t, heads *
/// head_dim]`. `scale` is the model's: `1 / sqrt(head_dim)` for most.
///
/// Runs the WGSL kernel `shaders/attention.wgsl` (one launch, where the fallback takes a dozen)
/// when all three are f32 on a wgpu device, under autodiff too (with
/// `shaders/attention_backward_query.wgsl` and `attention_backward_key.wgsl` for the gradients of
/// whichever of q, k and v are tracked: two launches where the fallback's backward takes about
/// fifteen), the mask is [`Mask::All`] or
/// [`Mask::Causal`], `head_dim` is a multiple of 16 up to 256, `s` is at most 1024 and the batch,
/// heads each fit a dispatch dimension; otherwise [`attention_fallback`]. The kernel reads views (heads split
/// out of a projection) through their strides, without copying them.
///
/// # Panics
/// If the shapes do not match each other or the causal mask.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Mask, scale: f32) -> Tensor<3> {
    check_shapes(&q, &k, &v, mask);
    if !attention_uses_kernel(&q, &k, &v, mask) {
        return attention_fallback(q, k, v, mask, scale);
    }
    let causal = matches!(mask, Mask::Causal(_));
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        causal,
        scale,
    ))
}

/// The kernel indexes through these sizes: a mismatch must stop here, not read out of bounds.
fn check_shapes(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, mask: Mask) {
    let [batch, heads, t, head_dim] = q.dims();
    let [k_batch, k_heads, s, k_head_dim] = k.dims();
    let causal_fits = match mask {
        Mask::Causal(causal) => causal.hidden.dims()[2..] == [t, s],
        _ => true,
    };
    assert!(
        [k_batch, k_heads, k_head_dim] == [batch, heads, head_dim] && v.dims() == k.dims() && s > 0 && causal_fits,
        "attention: q {:?}, k {:?}, v {:?} and the mask do not match",
        q.dims(),
        k.dims(),
        v.dims()
    );
}

/// Whether [`attention`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn attention_uses_kernel(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, mask: Mask) -> bool {
    let [batch, heads, _, head_dim] = q.dims();
    !matches!(mask, Mask::Hidden(_))
        && head_dim <= MAX_HEAD_DIM
        && head_dim.is_multiple_of(16)
        && k.dims()[2] <= MAX_KEYS
        && batch <= MAX_WORKGROUPS
        && heads <= MAX_WORKGROUPS
        && wgpu_f32(q)
        && wgpu_f32(k)
        && wgpu_f32(v)
}

/// [`attention`] in plain Burn operations (matmul, scale, mask, softmax, matmul, a copy to merge
/// the heads): any backend, autodiff included. Same shapes.
pub fn attention_fallback(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Mask, scale: f32) -> Tensor<3> {
    check_shapes(&q, &k, &v, mask);
    let scores = q.matmul(k.swap_dims(2, 3)) * f64::from(scale);
    let scores = match mask.hidden() {
        // A large finite value, not -inf: a fully masked row would turn -inf into NaN.
        Some(hidden) => scores.mask_fill(hidden.clone(), -1.0e9),
        None => scores,
    };
    let attended = softmax(scores, 3).matmul(v);
    let [b, h, t, head_dim] = attended.dims();
    attended.swap_dims(1, 2).reshape([b, t, h * head_dim])
}

// Without wgpu no backend implements it, and the dispatch Burn generates from each method reads
// none of its arguments.
#[backend_extension(Cube: cfg(wgpu), Autodiff)]
trait AttentionBackend: Backend {
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        causal: bool,
        scale: f32,
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
    use cubecl::CubeCount;
    use cubecl::ir::attributes::BufferIOAttr;

    use super::*;
    use crate::wgsl::{
        WgslKernel, WgslSource, contiguous, empty_like, kernel_source, launch, launch_to_output, size, strides, untiled,
    };

    const FORWARD: WgslSource = kernel_source!("attention_params.wgsl", "attention.wgsl");
    /// Names the kernel in launch counts.
    struct AttentionShader;
    const BACKWARD_QUERY: WgslSource = kernel_source!("attention_params.wgsl", "attention_backward_query.wgsl");
    /// Names the first backward kernel in launch counts.
    struct AttentionBackwardQueryShader;
    const BACKWARD_KEY: WgslSource = kernel_source!("attention_params.wgsl", "attention_backward_key.wgsl");
    /// Names the second backward kernel in launch counts.
    struct AttentionBackwardKeyShader;

    /// Queries (or keys, backward) per workgroup, one per lane.
    const WORKGROUP_SIZE: u32 = 32;

    /// q, k and v as the kernels read them, with the kernels' `Params`.
    #[derive(Debug, Clone)]
    struct Inputs {
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        /// `[batch, heads, queries, keys, head_dim]`.
        sizes: [usize; 5],
        params: [u32; 15],
    }

    impl Inputs {
        fn new(q: CubeTensor, k: CubeTensor, v: CubeTensor, causal: bool, scale: f32) -> Self {
            let [q, k, v] = [q, k, v].map(in_vec4s);
            let q_shape = q.meta.shape();
            let sizes = [q_shape[0], q_shape[1], q_shape[2], k.meta.shape()[2], q_shape[3]];
            let [_, heads, queries, keys, head_dim] = sizes;
            let vec4_strides = |tensor: &CubeTensor| strides::<4>(tensor).map(|stride| stride / 4);
            let [qs, ks, vs] = [&q, &k, &v].map(vec4_strides);
            let params = [
                size(heads),
                size(queries),
                size(keys),
                size(head_dim),
                scale.to_bits(),
                u32::from(causal),
                qs[0],
                qs[1],
                qs[2],
                ks[0],
                ks[1],
                ks[2],
                vs[0],
                vs[1],
                vs[2],
            ];
            Self { q, k, v, sizes, params }
        }

        /// A lane for each of `rows` (queries or keys) of every head and batch row.
        fn workgroups(&self, rows: usize) -> CubeCount {
            let [batch, heads, ..] = self.sizes;
            CubeCount::Static(size(rows.div_ceil(WORKGROUP_SIZE as usize)), size(heads), size(batch))
        }

        fn read_only(&self) -> [(cubecl::server::Handle, BufferIOAttr); 3] {
            [&self.q, &self.k, &self.v].map(|tensor| (tensor.handle.clone(), BufferIOAttr::ReadOnly))
        }
    }

    /// `[batch, queries, heads * head_dim]`.
    fn forward(inputs: &Inputs) -> CubeTensor {
        let [batch, heads, queries, _, head_dim] = inputs.sizes;
        launch_to_output(
            WgslKernel::<AttentionShader>::new(FORWARD, WORKGROUP_SIZE),
            inputs.workgroups(queries),
            &[&inputs.q, &inputs.k, &inputs.v],
            [batch, queries, heads * head_dim],
            &inputs.params,
        )
    }

    impl AttentionBackend for Cube {
        fn attention(q: CubeTensor, k: CubeTensor, v: CubeTensor, causal: bool, scale: f32) -> CubeTensor {
            forward(&Inputs::new(q, k, v, causal, scale))
        }
    }

    impl<C: CheckpointStrategy> AttentionBackend for Autodiff<Cube, C> {
        fn attention(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            causal: bool,
            scale: f32,
        ) -> FloatTensor<Self> {
            match AttentionBackward.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let inputs = Inputs::new(q.into_primitive(), k.into_primitive(), v.into_primitive(), causal, scale);
                    let output = forward(&inputs);
                    prep.finish(BackwardState { inputs, output: output.clone() }, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&Inputs::new(
                    q.into_primitive(),
                    k.into_primitive(),
                    v.into_primitive(),
                    causal,
                    scale,
                ))),
            }
        }
    }

    #[derive(Debug, Clone)]
    struct BackwardState {
        inputs: Inputs,
        /// The forward's output, `[batch, queries, heads * head_dim]`, contiguous.
        output: CubeTensor,
    }

    #[derive(Debug)]
    struct AttentionBackward;

    impl Backward<Cube, 3> for AttentionBackward {
        type State = BackwardState;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [q_node, k_node, v_node] = ops.parents;
            let d_output = contiguous(grads.consume::<Cube>(&ops.node));
            let BackwardState { inputs, output } = ops.state;
            let [batch, heads, queries, keys, head_dim] = inputs.sizes;
            let client = &inputs.q.client;
            // The queries' gradient, and the per-query numbers the keys' need, whichever are tracked.
            let dq = empty_like(&inputs.q, [batch, heads, queries, head_dim]);
            let stats = empty_like(&inputs.q, [batch, heads, queries, 2]);
            let mut buffers = inputs.read_only().to_vec();
            buffers.extend([
                (output.handle.clone(), BufferIOAttr::ReadOnly),
                (d_output.handle.clone(), BufferIOAttr::ReadOnly),
                (dq.handle.clone(), BufferIOAttr::WriteOnly),
                (stats.handle.clone(), BufferIOAttr::WriteOnly),
            ]);
            let query_kernel = WgslKernel::<AttentionBackwardQueryShader>::new(BACKWARD_QUERY, WORKGROUP_SIZE);
            launch(client, query_kernel, inputs.workgroups(queries), buffers, &inputs.params);
            if k_node.is_some() || v_node.is_some() {
                let [dk, dv] = [0; 2].map(|_| empty_like(&inputs.q, [batch, heads, keys, head_dim]));
                let mut buffers = inputs.read_only().to_vec();
                buffers.extend([
                    (d_output.handle.clone(), BufferIOAttr::ReadOnly),
                    (stats.handle.clone(), BufferIOAttr::ReadOnly),
                    (dk.handle.clone(), BufferIOAttr::WriteOnly),
                    (dv.handle.clone(), BufferIOAttr::WriteOnly),
                ]);
                let key_kernel = WgslKernel::<AttentionBackwardKeyShader>::new(BACKWARD_KEY, WORKGROUP_SIZE);
                launch(client, key_kernel, inputs.workgroups(keys), buffers, &inputs.params);
                for (node, gradient) in [(k_node, dk), (v_node, dv)] {
                    if let Some(node) = node {
                        grads.register::<Cube>(node.id, gradient);
                    }
                }
            }
            if let Some(node) = q_node {
                grads.register::<Cube>(node.id, dq);
            }
        }
    }

    /// `tensor` with strides the kernels' `vec4` reads can follow: a dense last dimension and the
    /// others in whole `vec4`s (views of a projection split into heads are); copied otherwise.
    fn in_vec4s(tensor: CubeTensor) -> CubeTensor {
        let tensor = untiled(tensor);
        let strides = tensor.meta.strides();
        if strides[3] == 1 && strides[..3].iter().all(|stride| stride.is_multiple_of(4)) {
            tensor
        } else {
            contiguous(tensor)
        }
    }
}
