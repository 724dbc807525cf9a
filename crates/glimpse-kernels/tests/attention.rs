//! `attention`: the WGSL kernel against the Burn fallback over whole sequences (causal or not,
//! after a cache or not, views of a fused projection or contiguous heads), its gradients against
//! the fallback's under autodiff, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

use crate::support::{read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{
    CausalMask, Mask, attention, attention_fallback, attention_qkv, attention_uses_kernel, qkv_heads,
};

const TOLERANCE: f32 = 1e-4;

#[derive(Clone)]
struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    /// Queries.
    t: usize,
    /// Keys before the queries' own (a cache); only under a causal mask.
    past: usize,
    causal: bool,
    /// Input amplitude: large values make the softmax sharp.
    amplitude: f32,
}

fn case(batch: usize, heads: usize, head_dim: usize, t: usize) -> Case {
    Case { batch, heads, head_dim, t, past: 0, causal: true, amplitude: 1.0 }
}

impl Case {
    fn scale(&self) -> f32 {
        (self.head_dim as f32).sqrt().recip()
    }
}

/// What `attention` takes besides the mask and scale.
#[derive(Clone)]
struct Inputs {
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    past: Option<[Tensor<4>; 2]>,
}

type Views = fn(&Case, u64, &Device) -> Inputs;

/// q, k and v as GPT-2 makes them: heads split out of one fused `[batch, t, 3 d]` projection
/// (views with a row stride of `3 d`), after `past` cached positions' keys and values.
fn fused_views(case: &Case, seed: u64, device: &Device) -> Inputs {
    let &Case { batch, heads, head_dim, t, past, amplitude, .. } = case;
    let qkv =
        tensor([batch, t, 3 * heads * head_dim], seed, amplitude, device).reshape([batch, t, 3 * heads, head_dim]);
    let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(2, i * heads, heads).swap_dims(1, 2));
    let past =
        (past > 0).then(|| [1, 2].map(|salt| tensor([batch, heads, past, head_dim], seed + salt, amplitude, device)));
    Inputs { q, k, v, past }
}

/// [`fused_views`] after a cache kept from an earlier pass as GPT-2 keeps one: the keys and values
/// are two views of that pass's projection (overlapping in one buffer, with its strides).
fn kept_cache_views(case: &Case, seed: u64, device: &Device) -> Inputs {
    let &Case { batch, heads, head_dim, past, amplitude, .. } = case;
    let earlier = tensor([batch, past, 3 * heads * head_dim], seed + 5, amplitude, device);
    let [_, k_past, v_past] = qkv_heads(&earlier, heads);
    Inputs { past: Some([k_past, v_past]), ..fused_views(&Case { past: 0, ..*case }, seed, device) }
}

/// [`fused_views`] with the cache concatenated before k and v by the caller.
fn concatenated_views(case: &Case, seed: u64, device: &Device) -> Inputs {
    let Inputs { q, k, v, past } = fused_views(case, seed, device);
    let [k_past, v_past] = past.expect("a cache to concatenate");
    Inputs { q, k: Tensor::cat(vec![k_past, k], 2), v: Tensor::cat(vec![v_past, v], 2), past: None }
}

/// q, k and v as CLIP makes them: three `[batch, t, d]` projections, each split into heads.
fn split_views(case: &Case, seed: u64, device: &Device) -> Inputs {
    let &Case { batch, heads, head_dim, t, amplitude, .. } = case;
    let [q, k, v] = [0, 1, 2].map(|i| {
        tensor([batch, t, heads * head_dim], seed + i, amplitude, device)
            .reshape([batch, t, heads, head_dim])
            .swap_dims(1, 2)
    });
    Inputs { q, k, v, past: None }
}

type Attend = fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<[Tensor<4>; 2]>, Mask, f32) -> Tensor<3>;

fn run(attend: Attend, case: &Case, Inputs { q, k, v, past }: Inputs) -> Vec<f32> {
    let causal = CausalMask::new(case.t, case.past, &q.device());
    let mask = if case.causal { Mask::Causal(&causal) } else { Mask::All };
    let output = attend(q, k, v, past, mask, case.scale());
    assert_eq!(output.dims(), [case.batch, case.t, case.heads * case.head_dim]);
    read(output)
}

fn uses_kernel(case: &Case, inputs: &Inputs) -> bool {
    let causal = CausalMask::new(case.t, case.past, &inputs.q.device());
    let mask = if case.causal { Mask::Causal(&causal) } else { Mask::All };
    attention_uses_kernel(&inputs.q, &inputs.k, &inputs.v, inputs.past.as_ref(), mask)
}

fn describe(case: &Case) -> String {
    let Case { batch, heads, head_dim, t, past, causal, amplitude } = case;
    format!(
        "batch {batch}, heads {heads}, head_dim {head_dim}, t {t}, past {past}, causal {causal}, amplitude {amplitude}"
    )
}

fn assert_kernel_matches_fallback(case: &Case, views: Views, seed: u64) {
    let Some(device) = wgpu() else { return };
    let inputs = views(case, seed, &device);
    assert!(uses_kernel(case, &inputs), "the kernel was not chosen on wgpu: {}", describe(case));
    let kernel = run(attention, case, inputs.clone());
    let fallback = run(attention_fallback, case, inputs);
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{}: relative error {error:e}", describe(case));
}

#[test]
fn kernel_matches_fallback_for_clip_shapes() {
    // The text tower at the candidate-scoring shape (causal) and the image tower (every key).
    assert_kernel_matches_fallback(&case(64, 8, 64, 16), split_views, 1);
    assert_kernel_matches_fallback(&Case { causal: false, ..case(2, 12, 64, 50) }, split_views, 2);
}

#[test]
fn kernel_matches_fallback_for_gpt2_views_after_a_cache() {
    // A guided step's context after a 5-position prefix, a prompt read at once, one position.
    assert_kernel_matches_fallback(&Case { past: 5, ..case(3, 12, 64, 7) }, fused_views, 11);
    assert_kernel_matches_fallback(&case(1, 12, 64, 33), fused_views, 12);
    assert_kernel_matches_fallback(&Case { causal: false, ..case(2, 12, 64, 1) }, fused_views, 13);
    // One position after the prefix (a guided step's first token), and the cache concatenated
    // before the call instead of handed over.
    assert_kernel_matches_fallback(&Case { past: 5, causal: false, ..case(1, 12, 64, 1) }, fused_views, 14);
    assert_kernel_matches_fallback(&Case { past: 5, ..case(3, 12, 64, 7) }, concatenated_views, 15);
    assert_kernel_matches_fallback(&Case { past: 6, ..case(2, 4, 64, 3) }, kept_cache_views, 16);
}

#[test]
fn the_fused_projection_matches_its_views() {
    // attention_qkv splits the projection itself; the same heads through `attention` (the kernel,
    // checked against the fallback above) must give the same output.
    let Some(device) = wgpu() else { return };
    let cases = [Case { past: 5, ..case(3, 12, 64, 7) }, Case { causal: false, ..case(2, 4, 48, 1) }];
    for (case, kept) in cases.into_iter().flat_map(|case| [(case.clone(), false), (case, true)]) {
        let qkv = tensor([case.batch, case.t, 3 * case.heads * case.head_dim], 131, 1.0, &device);
        let views = if kept && case.past > 0 { kept_cache_views } else { fused_views };
        let past = views(&case, 131, &device).past;
        let causal = CausalMask::new(case.t, case.past, &device);
        let mask = if case.causal { Mask::Causal(&causal) } else { Mask::All };
        let fused = read(attention_qkv(qkv.clone(), case.heads, past.clone(), mask, case.scale()));
        let [q, k, v] = qkv_heads(&qkv, case.heads);
        let views = read(attention(q, k, v, past, mask, case.scale()));
        assert!(relative_error(&fused, &views) <= TOLERANCE, "{}", describe(&case));
    }
}

#[test]
#[should_panic(expected = "does not split")]
fn a_projection_that_does_not_split_into_the_heads_is_refused() {
    let device = Device::flex();
    attention_qkv(tensor([1, 2, 100], 141, 1.0, &device), 3, None, Mask::All, 1.0);
}

#[test]
fn kernel_matches_fallback_for_other_head_dims() {
    // Not a power of two, the largest head_dim the kernel takes, and the smallest.
    assert_kernel_matches_fallback(&case(2, 3, 48, 9), split_views, 21);
    assert_kernel_matches_fallback(&Case { past: 3, ..case(1, 2, 256, 6) }, fused_views, 22);
    assert_kernel_matches_fallback(&Case { causal: false, ..case(2, 2, 16, 5) }, split_views, 23);
}

#[test]
fn kernel_matches_fallback_at_the_most_keys() {
    // 1024 keys, after a cache and in a sequence of its own, with the widest heads: the most turns
    // of the kernel's loops (lavapipe cuts them short past about 65535).
    assert_kernel_matches_fallback(&Case { past: 1020, ..case(1, 2, 256, 4) }, fused_views, 31);
    assert_kernel_matches_fallback(&Case { causal: false, ..case(1, 2, 64, 1024) }, split_views, 32);
}

#[test]
fn kernel_matches_fallback_for_a_sharp_softmax() {
    // Scores in the hundreds: without subtracting the maximum, exp would overflow.
    assert_kernel_matches_fallback(&Case { amplitude: 6.0, ..case(2, 4, 64, 40) }, split_views, 41);
}

#[test]
fn causal_and_full_attention_differ() {
    // Guards the tests above against a mask that changes nothing on either path.
    let device = Device::flex();
    let full = Case { causal: false, ..case(1, 2, 16, 6) };
    let causal = case(1, 2, 16, 6);
    let [a, b] = [&full, &causal].map(|c| run(attention_fallback, c, split_views(c, 51, &device)));
    assert_ne!(a, b, "the causal mask changed nothing");
    // The last query sees every key either way.
    let last = |out: &[f32]| out[5 * 32..].to_vec();
    assert!(relative_error(&last(&b), &last(&a)) < 1e-6);
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let case = Case { past: 4, ..case(2, 12, 64, 9) };
    let kernel = run(attention, &case, fused_views(&case, 61, &device));
    let cpu = run(attention_fallback, &case, fused_views(&case, 61, &Device::flex()));
    let error = relative_error(&kernel, &cpu);
    assert!(error <= TOLERANCE, "wgpu against cpu: relative error {error:e}");
}

#[test]
fn strided_views_the_kernel_cannot_read_are_copied() {
    // Keys transposed in memory (head_dim not the dense dimension): read through a copy.
    let case = Case { causal: false, ..case(2, 3, 64, 10) };
    let views = |case: &Case, seed: u64, device: &Device| {
        let k = tensor([case.batch, case.heads, case.head_dim, case.t], seed + 7, 1.0, device).swap_dims(2, 3);
        Inputs { k, ..split_views(case, seed, device) }
    };
    assert_kernel_matches_fallback(&case, views, 71);
}

#[test]
fn cpu_tensors_and_other_masks_take_the_fallback() {
    let cached = Case { past: 2, ..case(2, 3, 64, 5) };
    let inputs = fused_views(&cached, 81, &Device::flex());
    assert!(!uses_kernel(&cached, &inputs));
    assert_eq!(run(attention, &cached, inputs.clone()), run(attention_fallback, &cached, inputs));

    let Some(device) = wgpu() else { return };
    let Inputs { q, k, v, .. } = split_views(&case(2, 3, 64, 5), 82, &device);
    let hidden = Tensor::<4, Bool>::from_data(
        TensorData::new((0..25).map(|i| i % 7 == 3).collect::<Vec<_>>(), [1, 1, 5, 5]),
        &device,
    );
    assert!(!attention_uses_kernel(&q, &k, &v, None, Mask::Hidden(&hidden)), "a mask of any shape took the kernel");
}

/// The gradients of `sum(attention(q, k, v) * weights)` (random weights, so that every output
/// element counts differently) with respect to a fused `[batch, t, 3 d]` projection that q, k and
/// v are views of, and to the cached keys and values handed over before them (`past` > 0): as a guided step
/// differentiates GPT-2's attention. `tracked` says which of the projection and the cache take a
/// gradient; `attend` `None` is `attention_qkv` over the projection itself.
fn gradients(attend: Option<Attend>, case: &Case, tracked: [bool; 2], seed: u64, device: &Device) -> Vec<Vec<f32>> {
    let &Case { batch, heads, head_dim, t, past, amplitude, .. } = case;
    let leaf = |shape: [usize; 3], salt: u64, track: bool| {
        let leaf = tensor(shape, seed + salt, amplitude, device);
        if track { leaf.require_grad() } else { leaf }
    };
    let qkv = leaf([batch, t, 3 * heads * head_dim], 0, tracked[0]);
    let cached = [1, 2].map(|salt| leaf([batch * heads, past.max(1), head_dim], salt, tracked[1]));
    let [q, k, v] = qkv_heads(&qkv, heads);
    let cache = (past > 0).then(|| cached.clone().map(|cache| cache.reshape([batch, heads, past, head_dim])));
    let inputs = Inputs { q, k, v, past: cache };
    assert!(uses_kernel(case, &inputs), "{}: the kernel was not chosen", describe(case));
    let causal = CausalMask::new(t, past, device);
    let mask = if case.causal { Mask::Causal(&causal) } else { Mask::All };
    let weights = tensor([batch, t, heads * head_dim], seed + 3, 1.0, device);
    let Inputs { q, k, v, past: cache } = inputs;
    let output = match attend {
        Some(attend) => attend(q, k, v, cache, mask, case.scale()),
        None => attention_qkv(qkv.clone(), heads, cache, mask, case.scale()),
    };
    let gradients = (output * weights).sum().backward();
    [Some(&qkv), (past > 0).then_some(&cached[0]), (past > 0).then_some(&cached[1])]
        .into_iter()
        .flatten()
        .filter(|leaf| leaf.is_require_grad())
        .map(|leaf| read(leaf.grad(&gradients).expect("a tracked leaf without a gradient")))
        .collect()
}

fn assert_gradients_match(case: &Case, tracked: [bool; 2], seed: u64) {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let fallback = gradients(Some(attention_fallback), case, tracked, seed, &device);
    assert!(!fallback.is_empty(), "nothing was tracked");
    for (kernel, name) in [(Some(attention as Attend), "attention"), (None, "attention_qkv")] {
        let kernel = gradients(kernel, case, tracked, seed, &device);
        assert_eq!(kernel.len(), fallback.len());
        for (i, (kernel, fallback)) in kernel.iter().zip(&fallback).enumerate() {
            let error = relative_error(kernel, fallback);
            assert!(error <= TOLERANCE, "{name}, {}: gradient {i}: relative error {error:e}", describe(case));
        }
    }
}

#[test]
fn gradients_match_the_fallback_for_a_guided_step() {
    // GPT-2 small's heads over a caption after the 5-position prefix, every input tracked; the
    // prefix alone tracked (the projection a constant); the projection alone, no cache.
    assert_gradients_match(&Case { past: 5, ..case(3, 12, 64, 7) }, [true, true], 111);
    assert_gradients_match(&Case { past: 5, ..case(2, 4, 64, 9) }, [false, true], 112);
    assert_gradients_match(&case(2, 4, 64, 9), [true, false], 113);
    assert_gradients_match(&Case { past: 5, ..case(2, 4, 64, 9) }, [true, false], 114);
}

#[test]
fn gradients_match_the_fallback_at_the_edges() {
    // Every key seen, the widest heads at the most keys, the narrowest, and a sharp softmax.
    assert_gradients_match(&Case { causal: false, ..case(2, 3, 32, 11) }, [true, false], 121);
    assert_gradients_match(&Case { past: 1020, ..case(1, 1, 256, 4) }, [true, true], 122);
    assert_gradients_match(&Case { past: 2, ..case(1, 2, 16, 3) }, [true, true], 123);
    assert_gradients_match(&Case { amplitude: 4.0, past: 3, ..case(1, 2, 64, 30) }, [true, true], 124);
}

#[test]
fn other_head_dims_and_longer_sequences_take_the_fallback() {
    let Some(device) = wgpu() else { return };
    // Beyond the kernel's widest head, not a multiple of 16, more than 1024 keys, and more than 1024
    // queries.
    let long =
        [Case { past: 1022, causal: false, ..case(1, 1, 16, 3) }, Case { causal: false, ..case(1, 1, 16, 1025) }];
    for case in [case(1, 1, 320, 3), case(1, 1, 40, 3)].into_iter().chain(long) {
        let inputs = fused_views(&case, 91, &device);
        let what = describe(&case);
        assert!(!uses_kernel(&case, &inputs), "{what}");
        assert_eq!(run(attention, &case, inputs.clone()), run(attention_fallback, &case, inputs), "{what}");
    }
}

#[test]
#[should_panic(expected = "do not match")]
fn a_causal_mask_of_another_shape_is_refused() {
    let device = Device::flex();
    let case = case(1, 2, 16, 4);
    let Inputs { q, k, v, .. } = split_views(&case, 101, &device);
    let other = CausalMask::new(5, 0, &device);
    attention(q, k, v, None, Mask::Causal(&other), case.scale());
}
