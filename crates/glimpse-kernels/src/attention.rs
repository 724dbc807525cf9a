//! Attention over a sequence, heads split in and merged out: a CLIP tower's layers, and GPT-2
//! reading several positions at once.

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use crate::wgsl::{MAX_WORKGROUPS, wgpu_f32};

/// Largest head dimension the kernel takes (each lane holds its query and output row as 64 `vec4`s).
const MAX_HEAD_DIM: usize = 256;
/// Most keys the kernels take: lavapipe cuts a shader's loops short after about 65535 turns in all
/// (NaN outputs past 2000 keys of head_dim 64 when each turn took one `vec4`), and the loops of the
/// busiest kernel (the queries' backward) turn `3 * keys * head_dim / 16` times, 49152 at 1024
/// keys of head_dim 256. Longer sequences are the fallback's matmuls' to begin with.
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
/// q `[batch, heads, t, head_dim]`, k and v `[batch, heads, s, head_dim]`, after `past` (a
/// cache's keys and values, `[batch, heads, p, head_dim]` each) when given -> `[batch, t, heads *
/// head_dim]`. `scale` is the model's: `1 / sqrt(head_dim)` for most.
///
/// Runs the WGSL kernel `shaders/attention.wgsl` (one launch, where the fallback takes a dozen
/// and a cache's concatenation two per tensor) when all are f32 on a wgpu device, under autodiff
/// too (with `shaders/attention_backward_query.wgsl` and `attention_backward_key.wgsl` for the
/// gradients of whichever inputs are tracked: two or three launches where the fallback's backward
/// takes about fifteen), the mask is [`Mask::All`] or [`Mask::Causal`], `head_dim` is a multiple
/// of 16 up to 256, `t` and `p + s` are at most 1024 and the batch and heads each fit a dispatch
/// dimension; otherwise [`attention_fallback`]. The kernel reads views (heads split out of a
/// projection) through their strides without copying them, unless two of them overlap in one
/// buffer (WebGPU refuses that): [`attention_qkv`] takes the heads of one projection.
///
/// # Panics
/// If the shapes do not match each other or the causal mask.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    past: Option<[Tensor<4>; 2]>,
    mask: Mask,
    scale: f32,
) -> Tensor<3> {
    check_shapes(&q, &k, &v, past.as_ref(), mask);
    if !attention_uses_kernel(&q, &k, &v, past.as_ref(), mask) {
        return attention_fallback(q, k, v, past, mask, scale);
    }
    let (has_past, [k_past, v_past]) = cache_or_stand_ins(past, &q.device());
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        k_past.into_dispatch(),
        v_past.into_dispatch(),
        (has_past, matches!(mask, Mask::Causal(_)), scale),
    ))
}

/// [`attention`] over the heads of a fused projection, as GPT-2 makes them: qkv `[batch, t, 3 *
/// heads * head_dim]` (q, then k, then v, heads side by side in each), after `past` when given ->
/// `[batch, t, heads * head_dim]`. The kernel reads the projection whole, and under autodiff its
/// backward writes the projection's gradient whole, where the gradients of three views of it
/// ([`qkv_heads`], which the fallback takes) take eight more launches to gather.
///
/// # Panics
/// If `qkv`'s width is not a multiple of `3 * heads`, or as [`attention`].
pub fn attention_qkv(qkv: Tensor<3>, heads: usize, past: Option<[Tensor<4>; 2]>, mask: Mask, scale: f32) -> Tensor<3> {
    let [batch, t, width] = qkv.dims();
    check_width(width, heads);
    let heads_shape = [batch, heads, t, width / 3 / heads];
    let past_shapes = past.as_ref().map(|[k_past, v_past]| [k_past.dims(), v_past.dims()]);
    check_dims([heads_shape; 3], past_shapes, mask);
    let on_wgpu = wgpu_f32(&qkv) && past.iter().flatten().all(wgpu_f32);
    if !(on_wgpu && fits_kernel(heads_shape, past_shapes.map_or(0, |[k_past, _]| k_past[2]) + t, mask)) {
        let [q, k, v] = qkv_heads(&qkv, heads);
        return attention_fallback(q, k, v, past, mask, scale);
    }
    let (has_past, [k_past, v_past]) = cache_or_stand_ins(past, &qkv.device());
    Tensor::from_dispatch(<Dispatch as AttentionBackend>::attention_qkv(
        qkv.into_dispatch(),
        k_past.into_dispatch(),
        v_past.into_dispatch(),
        (heads, has_past, matches!(mask, Mask::Causal(_)), scale),
    ))
}

/// Whether there is a cache, and the tensors the kernel is handed for it: without one, two tiny
/// tensors of no graph, which the kernel replaces (the dispatch takes tensors either way).
fn cache_or_stand_ins(past: Option<[Tensor<4>; 2]>, device: &Device) -> (bool, [Tensor<4>; 2]) {
    let has_past = past.is_some();
    (has_past, past.unwrap_or_else(|| [0; 2].map(|_| Tensor::empty([1, 1, 1, 4], device))))
}

/// The heads of a fused projection `[batch, t, 3 * heads * head_dim]` (q, then k, then v) as views,
/// `[batch, heads, t, head_dim]` each: split into heads first (the contiguous projection reshapes
/// for free), then narrowed (narrowing first made each reshape a copy: Burn's reshape copies a view
/// with a batch of 1).
///
/// # Panics
/// If the width is not a multiple of `3 * heads`.
pub fn qkv_heads(qkv: &Tensor<3>, heads: usize) -> [Tensor<4>; 3] {
    let [b, t, width] = qkv.dims();
    check_width(width, heads);
    let split = qkv.clone().reshape([b, t, 3 * heads, width / 3 / heads]);
    [0, 1, 2].map(|i| split.clone().narrow(2, i * heads, heads).swap_dims(1, 2))
}

fn check_width(width: usize, heads: usize) {
    assert!(
        heads > 0 && width.is_multiple_of(3 * heads),
        "attention_qkv: a projection of width {width} does not split into 3 x {heads} heads"
    );
}

/// The kernel indexes through these sizes: a mismatch must stop here, not read out of bounds.
fn check_shapes(q: &Tensor<4>, k: &Tensor<4>, v: &Tensor<4>, past: Option<&[Tensor<4>; 2]>, mask: Mask) {
    check_dims([q.dims(), k.dims(), v.dims()], past.map(|[k_past, v_past]| [k_past.dims(), v_past.dims()]), mask);
}

/// [`check_shapes`] over the shapes alone.
fn check_dims([q, k, v]: [[usize; 4]; 3], past: Option<[[usize; 4]; 2]>, mask: Mask) {
    let [batch, heads, t, head_dim] = q;
    let [k_batch, k_heads, s, k_head_dim] = k;
    let p = past.map_or(0, |[k_past, _]| k_past[2]);
    let past_fits =
        past.is_none_or(|[k_past, v_past]| k_past == [batch, heads, p, head_dim] && v_past == k_past && p > 0);
    let causal_fits = match mask {
        Mask::Causal(causal) => causal.hidden.dims()[2..] == [t, p + s],
        _ => true,
    };
    assert!(
        [k_batch, k_heads, k_head_dim] == [batch, heads, head_dim] && v == k && s > 0 && past_fits && causal_fits,
        "attention: q {q:?}, k {k:?}, v {v:?}, the cache {past:?} and the mask do not match"
    );
}

/// Whether [`attention`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn attention_uses_kernel(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    past: Option<&[Tensor<4>; 2]>,
    mask: Mask,
) -> bool {
    let p = past.map_or(0, |[k_past, _]| k_past.dims()[2]);
    fits_kernel(q.dims(), p + k.dims()[2], mask)
        && [q, k, v].into_iter().chain(past.into_iter().flatten()).all(wgpu_f32)
}

/// Whether the kernels take queries of shape `[batch, heads, t, head_dim]` against `keys` keys
/// under `mask`.
fn fits_kernel([batch, heads, t, head_dim]: [usize; 4], keys: usize, mask: Mask) -> bool {
    !matches!(mask, Mask::Hidden(_))
        && head_dim <= MAX_HEAD_DIM
        && head_dim.is_multiple_of(16)
        && keys <= MAX_KEYS
        && t <= MAX_KEYS
        && batch <= MAX_WORKGROUPS
        && heads <= MAX_WORKGROUPS
}

/// [`attention`] in plain Burn operations (the cache concatenated before k and v, matmul, scale,
/// mask, softmax, matmul, a copy to merge the heads): any backend, autodiff included. Same
/// shapes.
pub fn attention_fallback(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    past: Option<[Tensor<4>; 2]>,
    mask: Mask,
    scale: f32,
) -> Tensor<3> {
    check_shapes(&q, &k, &v, past.as_ref(), mask);
    let (k, v) = match past {
        Some([k_past, v_past]) => (Tensor::cat(vec![k_past, k], 2), Tensor::cat(vec![v_past, v], 2)),
        None => (k, v),
    };
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
    /// `settings`: whether `k_past` and `v_past` are a cache (rather than k and v again, unread),
    /// whether the mask is causal, and the scale.
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        k_past: FloatTensor<Self>,
        v_past: FloatTensor<Self>,
        settings: (bool, bool, f32),
    ) -> FloatTensor<Self>;

    /// As `attention` over the heads of the fused projection `qkv`; `settings` begins with the
    /// number of heads.
    #[cfg_attr(not(wgpu), allow(unused_variables))]
    fn attention_qkv(
        qkv: FloatTensor<Self>,
        k_past: FloatTensor<Self>,
        v_past: FloatTensor<Self>,
        settings: (usize, bool, bool, f32),
    ) -> FloatTensor<Self>;
}

#[cfg(wgpu)]
/// The WGSL half: the kernel on wgpu, and its backward under autodiff.
mod wgpu {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::wgpu::{CubeTensor, into_contiguous};
    use burn::backend::{Autodiff, Cube};
    use cubecl::CubeCount;
    use cubecl::ir::attributes::BufferIOAttr;
    use cubecl::server::Handle;

    use super::*;
    use crate::wgsl::{
        WgslKernel, WgslSource, contiguous, empty_like, kernel_source, launch, launch_to_output, size, strides, untiled,
    };

    const FORWARD: WgslSource = kernel_source!("attention_params.wgsl", "attention_keys.wgsl", "attention.wgsl");
    /// Names the kernel in launch counts.
    struct AttentionShader;
    const BACKWARD_QUERY: WgslSource =
        kernel_source!("attention_params.wgsl", "attention_keys.wgsl", "attention_backward_query.wgsl");
    /// Names the first backward kernel in launch counts.
    struct AttentionBackwardQueryShader;
    const BACKWARD_KEY: WgslSource = kernel_source!("attention_params.wgsl", "attention_backward_key.wgsl");
    /// Names the second backward kernel in launch counts.
    struct AttentionBackwardKeyShader;

    /// Queries (or keys, backward) per workgroup, one per lane.
    const WORKGROUP_SIZE: u32 = 32;

    /// What the kernels read q, k and v from.
    enum Reads {
        /// Three tensors, `[batch, heads, len, head_dim]` each; their gradients are three
        /// contiguous tensors.
        Separate(Box<[CubeTensor; 3]>),
        /// The heads of one fused projection `[batch, t, 3 * heads * head_dim]`, bound once:
        /// WebGPU refuses writable bindings whose ranges overlap, as views of one buffer do. Its
        /// gradient is one tensor of its shape.
        Fused { qkv: Box<CubeTensor>, heads: usize },
    }

    /// `shaders/attention_params.wgsl`'s `Params`: strides and offsets in `vec4`s.
    #[derive(Debug, Clone)]
    struct Params {
        heads: usize,
        queries: usize,
        keys: usize,
        past: usize,
        head_dim: usize,
        scale: f32,
        causal: bool,
        /// Batch, head and position strides of q, k, v and the cache.
        q: [u32; 3],
        k: [u32; 3],
        v: [u32; 3],
        past_strides: [u32; 3],
        /// Where the gradients go: strides of q's, strides of k's and v's, and the offsets of the
        /// three.
        dq: [u32; 3],
        dkv: [u32; 3],
        offsets: [usize; 3],
        /// The first key and the number of keys of a launch of the keys' backward.
        part: [usize; 2],
        /// Whether q, k and v are one fused projection bound as q, with k's and v's offsets in it.
        fused: bool,
        own_offsets: [usize; 2],
    }

    impl Params {
        fn words(&self) -> Vec<u32> {
            let sizes = [self.heads, self.queries, self.keys, self.past, self.head_dim].map(size);
            let strides = [self.q, self.k, self.v, self.past_strides, self.dq, self.dkv];
            sizes
                .into_iter()
                .chain([self.scale.to_bits(), u32::from(self.causal)])
                .chain(strides.into_iter().flatten())
                .chain(self.offsets.into_iter().chain(self.part).map(size))
                .chain([u32::from(self.fused)])
                .chain(self.own_offsets.map(size))
                .collect()
        }
    }

    /// The tensors bound for q, k, v, k_past and v_past (tiny stand-ins where a kernel reads none:
    /// k and v when fused, the cache without one), with the kernels' `Params`.
    #[derive(Debug, Clone)]
    struct Inputs {
        tensors: [CubeTensor; 5],
        /// `[batch, heads, queries, past, keys after the past, head_dim]`; `past` 0 without a cache.
        sizes: [usize; 6],
        params: Params,
    }

    impl Inputs {
        fn new(reads: Reads, past: Option<[CubeTensor; 2]>, (causal, scale): (bool, f32)) -> Self {
            let vec4_strides = |tensor: &CubeTensor| {
                let [batch, head, position, _] = strides::<4>(tensor);
                [batch, head, position].map(|stride| stride / 4)
            };
            let (bound, [batch, heads, queries, own, head_dim], [q, k, v], fused) = match reads {
                Reads::Separate(separate) => {
                    let [q, k, v] = *separate;
                    let q = in_vec4s(q);
                    let k = apart(in_vec4s(k), &[&q]);
                    let v = apart(in_vec4s(v), &[&q, &k]);
                    let shape = q.meta.shape();
                    let sizes = [shape[0], shape[1], shape[2], k.meta.shape()[2], shape[3]];
                    let strides = [&q, &k, &v].map(vec4_strides);
                    (vec![q, k, v], sizes, strides, false)
                }
                Reads::Fused { qkv, heads } => {
                    let qkv = contiguous(*qkv);
                    let shape = qkv.meta.shape();
                    let (batch, t, head_dim) = (shape[0], shape[1], shape[2] / 3 / heads);
                    let row = 3 * heads * head_dim / 4;
                    let strides = [t * row, head_dim / 4, row].map(size);
                    let stand_ins = [0; 2].map(|_| stand_in(&qkv));
                    let bound = [vec![qkv], stand_ins.to_vec()].concat();
                    (bound, [batch, heads, t, t, head_dim], [strides; 3], true)
                }
            };
            let past_len = past.as_ref().map_or(0, |[k_past, _]| k_past.meta.shape()[2]);
            let [k_past, v_past] = match past {
                Some([k_past, v_past]) => {
                    // Bound apart from the rest and from each other (a cache kept from an earlier
                    // pass is two views of its projection), then through one set of strides.
                    let k_past = apart(in_vec4s(k_past), &bound.iter().collect::<Vec<_>>());
                    let v_past = apart(in_vec4s(v_past), &bound.iter().chain([&k_past]).collect::<Vec<_>>());
                    if k_past.meta.strides() == v_past.meta.strides() {
                        [k_past, v_past]
                    } else {
                        [k_past, v_past].map(contiguous)
                    }
                }
                None => [0; 2].map(|_| stand_in(&bound[0])),
            };
            let columns = head_dim / 4;
            let (dq, dkv, offsets, own_offsets) = if fused {
                let gradient = [queries * 3 * heads * columns, columns, 3 * heads * columns].map(size);
                (gradient, gradient, [0, heads * columns, 2 * heads * columns], [heads * columns, 2 * heads * columns])
            } else {
                (contiguous_strides(heads, queries, columns), contiguous_strides(heads, own, columns), [0; 3], [0; 2])
            };
            let params = Params {
                heads,
                queries,
                keys: past_len + own,
                past: past_len,
                head_dim,
                scale,
                causal,
                q,
                k,
                v,
                past_strides: if past_len > 0 { vec4_strides(&k_past) } else { [0; 3] },
                dq,
                dkv,
                offsets,
                part: [0, 0],
                fused,
                own_offsets,
            };
            let [q, k, v]: [CubeTensor; 3] = bound.try_into().expect("three tensors bound for q, k and v");
            Self { tensors: [q, k, v, k_past, v_past], sizes: [batch, heads, queries, past_len, own, head_dim], params }
        }

        /// A lane for each of `rows` (queries or keys) of every head and batch row.
        fn workgroups(&self, rows: usize) -> CubeCount {
            let [batch, heads, ..] = self.sizes;
            CubeCount::Static(size(rows.div_ceil(WORKGROUP_SIZE as usize)), size(heads), size(batch))
        }

        fn read_only(&self) -> Vec<(Handle, BufferIOAttr)> {
            self.tensors.iter().map(|tensor| (tensor.handle.clone(), BufferIOAttr::ReadOnly)).collect()
        }

        fn q(&self) -> &CubeTensor {
            &self.tensors[0]
        }
    }

    /// `[batch, queries, heads * head_dim]`.
    fn forward(inputs: &Inputs) -> CubeTensor {
        let [batch, heads, queries, _, _, head_dim] = inputs.sizes;
        let [q, k, v, k_past, v_past] = &inputs.tensors;
        launch_to_output(
            WgslKernel::<AttentionShader>::new(FORWARD, WORKGROUP_SIZE),
            inputs.workgroups(queries),
            &[q, k, v, k_past, v_past],
            [batch, queries, heads * head_dim],
            &inputs.params.words(),
        )
    }

    /// The cache's keys and values where the call has a cache (its stand-ins are otherwise k and v
    /// themselves, which must not be bound twice).
    fn cache(k_past: CubeTensor, v_past: CubeTensor, has_past: bool) -> Option<[CubeTensor; 2]> {
        has_past.then_some([k_past, v_past])
    }

    /// A 16-byte tensor bound where a kernel reads nothing.
    fn stand_in(like: &CubeTensor) -> CubeTensor {
        empty_like(like, [1, 1, 1, 4])
    }

    /// `tensor`, copied where its memory overlaps one of `others`' (views of one buffer): WebGPU
    /// refuses writable bindings whose ranges overlap, and the kernels bind every tensor writable
    /// (see the shaders' README).
    fn apart(tensor: CubeTensor, others: &[&CubeTensor]) -> CubeTensor {
        let range = |tensor: &CubeTensor| {
            let handle = &tensor.handle;
            let start = handle.offset_start.unwrap_or(0);
            (handle.memory.descriptor().id, start..start + handle.size_in_used())
        };
        let (id, bytes) = range(&tensor);
        let overlaps = others.iter().any(|other| {
            let (other_id, other_bytes) = range(other);
            other_id == id && other_bytes.start < bytes.end && bytes.start < other_bytes.end
        });
        if overlaps { into_contiguous(tensor.copy()) } else { tensor }
    }

    impl AttentionBackend for Cube {
        fn attention(
            q: CubeTensor,
            k: CubeTensor,
            v: CubeTensor,
            k_past: CubeTensor,
            v_past: CubeTensor,
            settings: (bool, bool, f32),
        ) -> CubeTensor {
            forward(&Inputs::new(
                Reads::Separate(Box::new([q, k, v])),
                cache(k_past, v_past, settings.0),
                (settings.1, settings.2),
            ))
        }

        fn attention_qkv(
            qkv: CubeTensor,
            k_past: CubeTensor,
            v_past: CubeTensor,
            (heads, has_past, causal, scale): (usize, bool, bool, f32),
        ) -> CubeTensor {
            forward(&Inputs::new(
                Reads::Fused { qkv: Box::new(qkv), heads },
                cache(k_past, v_past, has_past),
                (causal, scale),
            ))
        }
    }

    impl<C: CheckpointStrategy> AttentionBackend for Autodiff<Cube, C> {
        fn attention(
            q: FloatTensor<Self>,
            k: FloatTensor<Self>,
            v: FloatTensor<Self>,
            k_past: FloatTensor<Self>,
            v_past: FloatTensor<Self>,
            settings: (bool, bool, f32),
        ) -> FloatTensor<Self> {
            let nodes = [q.node(), k.node(), v.node(), k_past.node(), v_past.node()];
            let [q, k, v, k_past, v_past] = [q, k, v, k_past, v_past].map(|tensor| tensor.into_primitive());
            let inputs = Inputs::new(
                Reads::Separate(Box::new([q, k, v])),
                cache(k_past, v_past, settings.0),
                (settings.1, settings.2),
            );
            match AttentionBackward.prepare::<C>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let output = forward(&inputs);
                    prep.finish(BackwardState { inputs }, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&inputs)),
            }
        }

        fn attention_qkv(
            qkv: FloatTensor<Self>,
            k_past: FloatTensor<Self>,
            v_past: FloatTensor<Self>,
            (heads, has_past, causal, scale): (usize, bool, bool, f32),
        ) -> FloatTensor<Self> {
            let nodes = [qkv.node(), k_past.node(), v_past.node()];
            let inputs = Inputs::new(
                Reads::Fused { qkv: Box::new(qkv.into_primitive()), heads },
                cache(k_past.into_primitive(), v_past.into_primitive(), has_past),
                (causal, scale),
            );
            match AttentionBackward.prepare::<C>(nodes).compute_bound().stateful() {
                OpsKind::Tracked(prep) => {
                    let output = forward(&inputs);
                    prep.finish(BackwardState { inputs }, output)
                }
                OpsKind::UnTracked(prep) => prep.finish(forward(&inputs)),
            }
        }
    }

    #[derive(Debug, Clone)]
    struct BackwardState {
        inputs: Inputs,
    }

    #[derive(Debug)]
    struct AttentionBackward;

    /// Where the backward kernels write: the gradients of q, k and v as the inputs' layout puts
    /// them (one tensor thrice when fused; k's and v's only with `keys`), and of the cache's keys
    /// and values when wanted.
    struct Written<'a> {
        dq: &'a CubeTensor,
        keys: Option<[&'a CubeTensor; 2]>,
        past: Option<[&'a CubeTensor; 2]>,
    }

    /// Launches the first backward kernel, then the second over each part of the keys whose
    /// gradients are wanted.
    fn launch_backward(inputs: &Inputs, d_output: &CubeTensor, written: Written) {
        let [batch, heads, queries, past, own, head_dim] = inputs.sizes;
        let q = inputs.q();
        // The per-query numbers the keys' kernel needs.
        let stats = empty_like(q, [batch, heads, queries, 2]);
        let mut buffers = inputs.read_only();
        buffers.extend([
            (d_output.handle.clone(), BufferIOAttr::ReadOnly),
            (written.dq.handle.clone(), BufferIOAttr::WriteOnly),
            (stats.handle.clone(), BufferIOAttr::WriteOnly),
        ]);
        let query_kernel = WgslKernel::<AttentionBackwardQueryShader>::new(BACKWARD_QUERY, WORKGROUP_SIZE);
        launch(&q.client, query_kernel, inputs.workgroups(queries), buffers, &inputs.params.words());

        let [_, k, v, k_past, v_past] = &inputs.tensors;
        let own_part = written.keys.map(|gradients| (k, v, gradients, inputs.params.clone(), [past, own]));
        let past_part = written.past.map(|gradients| {
            let strides = inputs.params.past_strides;
            let params = Params {
                k: strides,
                v: strides,
                dkv: contiguous_strides(heads, past, head_dim / 4),
                offsets: [0; 3],
                fused: false,
                ..inputs.params.clone()
            };
            (k_past, v_past, gradients, params, [0, past])
        });
        for (k, v, [dk, dv], params, part) in own_part.into_iter().chain(past_part) {
            let buffers = vec![
                (q.handle.clone(), BufferIOAttr::ReadOnly),
                (k.handle.clone(), BufferIOAttr::ReadOnly),
                (v.handle.clone(), BufferIOAttr::ReadOnly),
                (d_output.handle.clone(), BufferIOAttr::ReadOnly),
                (stats.handle.clone(), BufferIOAttr::ReadOnly),
                (dk.handle.clone(), BufferIOAttr::WriteOnly),
                (dv.handle.clone(), BufferIOAttr::WriteOnly),
            ];
            let key_kernel = WgslKernel::<AttentionBackwardKeyShader>::new(BACKWARD_KEY, WORKGROUP_SIZE);
            let words = Params { part, ..params }.words();
            launch(&q.client, key_kernel, inputs.workgroups(part[1]), buffers, &words);
        }
    }

    /// The cache's gradients, `[batch, heads, past, head_dim]` each, where there is a cache and
    /// either is tracked.
    fn past_gradients(inputs: &Inputs, tracked: bool) -> Option<[CubeTensor; 2]> {
        let [batch, heads, _, past, _, head_dim] = inputs.sizes;
        (past > 0 && tracked).then(|| [0; 2].map(|_| empty_like(inputs.q(), [batch, heads, past, head_dim])))
    }

    /// Batch, head and position strides, in `vec4`s, of a contiguous `[batch, heads, len, head_dim]`.
    fn contiguous_strides(heads: usize, len: usize, columns: usize) -> [u32; 3] {
        [heads * len * columns, len * columns, columns].map(size)
    }

    impl Backward<Cube, 5> for AttentionBackward {
        type State = BackwardState;

        fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [q_node, k_node, v_node, k_past_node, v_past_node] = ops.parents;
            let d_output = contiguous(grads.consume::<Cube>(&ops.node));
            let inputs = ops.state.inputs;
            let [batch, heads, queries, _, own, head_dim] = inputs.sizes;
            let dq = empty_like(inputs.q(), [batch, heads, queries, head_dim]);
            let keys = (k_node.is_some() || v_node.is_some())
                .then(|| [0; 2].map(|_| empty_like(inputs.q(), [batch, heads, own, head_dim])));
            let past = past_gradients(&inputs, k_past_node.is_some() || v_past_node.is_some());
            let written =
                Written { dq: &dq, keys: keys.as_ref().map(|[k, v]| [k, v]), past: past.as_ref().map(|[k, v]| [k, v]) };
            launch_backward(&inputs, &d_output, written);
            let [dk, dv] = keys.map_or([None, None], |[dk, dv]| [Some(dk), Some(dv)]);
            let [dk_past, dv_past] = past.map_or([None, None], |[dk, dv]| [Some(dk), Some(dv)]);
            for (node, gradient) in
                [(q_node, Some(dq)), (k_node, dk), (v_node, dv), (k_past_node, dk_past), (v_past_node, dv_past)]
            {
                if let (Some(node), Some(gradient)) = (node, gradient) {
                    grads.register::<Cube>(node.id, gradient);
                }
            }
        }
    }

    impl Backward<Cube, 3> for AttentionBackward {
        type State = BackwardState;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
            let [qkv_node, k_past_node, v_past_node] = ops.parents;
            let d_output = contiguous(grads.consume::<Cube>(&ops.node));
            let inputs = ops.state.inputs;
            let [batch, heads, queries, _, _, head_dim] = inputs.sizes;
            let past = past_gradients(&inputs, k_past_node.is_some() || v_past_node.is_some());
            // Every part of the projection's gradient is written: q's by the first kernel, k's and
            // v's by the second, which therefore runs over the sequence's own keys whenever the
            // projection is tracked.
            let d_qkv = qkv_node.is_some().then(|| empty_like(inputs.q(), [batch, queries, 3 * heads * head_dim]));
            // Without it the first kernel still writes q's part somewhere.
            let scratch;
            let dq = match &d_qkv {
                Some(d_qkv) => d_qkv,
                None => {
                    scratch = empty_like(inputs.q(), [batch, queries, 3 * heads * head_dim]);
                    &scratch
                }
            };
            // The keys' kernel writes the values' gradient into the projection's too (dk), and
            // nothing into its dv binding.
            let unwritten = d_qkv.as_ref().map(|_| stand_in(inputs.q()));
            let written = Written {
                dq,
                keys: d_qkv.as_ref().zip(unwritten.as_ref()).map(|(d_qkv, unwritten)| [d_qkv, unwritten]),
                past: past.as_ref().map(|[k, v]| [k, v]),
            };
            launch_backward(&inputs, &d_output, written);
            let [dk_past, dv_past] = past.map_or([None, None], |[dk, dv]| [Some(dk), Some(dv)]);
            for (node, gradient) in [(qkv_node, d_qkv), (k_past_node, dk_past), (v_past_node, dv_past)] {
                if let (Some(node), Some(gradient)) = (node, gradient) {
                    grads.register::<Cube>(node.id, gradient);
                }
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
