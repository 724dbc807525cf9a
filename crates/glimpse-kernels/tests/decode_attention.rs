//! `decode_attention`: the WGSL kernel against the Burn fallback, the caches each writes, and the
//! choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output; the
//! caches, which both only copy values into, must match exactly.

use crate::support::{read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{decode_attention, decode_attention_fallback, decode_attention_uses_kernel};

const TOLERANCE: f32 = 1e-4;

struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    /// Positions already cached; the call appends one.
    len: usize,
    capacity: usize,
    /// Input amplitude: large values make the softmax sharp.
    amplitude: f32,
    /// What the scores are scaled by.
    attention_scale: f32,
}

fn case(batch: usize, heads: usize, head_dim: usize, len: usize) -> Case {
    let attention_scale = 1.0 / (head_dim as f32).sqrt();
    Case { batch, heads, head_dim, len, capacity: len + 7, amplitude: 1.0, attention_scale }
}

/// The fused `[batch, 1, 3 d]` projection and two caches of `capacity` positions (all of them
/// random: what lies past `len` must not matter).
fn inputs(case: &Case, seed: u64, device: &Device) -> (Tensor<3>, Tensor<4>, Tensor<4>) {
    let &Case { batch, heads, head_dim, capacity, amplitude, .. } = case;
    let cache = |salt: u64| tensor([batch, heads, capacity, head_dim], seed + salt, amplitude, device);
    (tensor([batch, 1, 3 * heads * head_dim], seed, amplitude, device), cache(1), cache(2))
}

/// The output, k cache and v cache of one call, read back.
type Read = (Vec<f32>, Vec<f32>, Vec<f32>);
/// `decode_attention` or its fallback.
type Attend = fn(Tensor<3>, usize, Tensor<4>, Tensor<4>, usize, f32) -> (Tensor<3>, Tensor<4>, Tensor<4>);

fn run(attend: Attend, case: &Case, (qkv, k, v): (Tensor<3>, Tensor<4>, Tensor<4>)) -> Read {
    let (output, k, v) = attend(qkv, case.heads, k, v, case.len, case.attention_scale);
    (read(output), read(k), read(v))
}

fn assert_match(kernel: &Read, fallback: &Read, what: &str) {
    let error = relative_error(&kernel.0, &fallback.0);
    assert!(error <= TOLERANCE, "{what}: relative error {error:e}");
    assert!(kernel.1 == fallback.1 && kernel.2 == fallback.2, "{what}: the caches differ");
}

fn assert_kernel_matches_fallback(case: &Case, seed: u64) {
    let Some(device) = wgpu() else { return };
    let (qkv, k, v) = inputs(case, seed, &device);
    assert!(decode_attention_uses_kernel(&qkv, case.heads, &k, &v), "the kernel was not chosen on wgpu");
    let kernel = run(decode_attention, case, inputs(case, seed, &device));
    let fallback = run(decode_attention_fallback, case, inputs(case, seed, &device));
    let Case { batch, heads, head_dim, len, amplitude, attention_scale, .. } = case;
    assert_match(
        &kernel,
        &fallback,
        &format!(
            "batch {batch}, heads {heads}, head_dim {head_dim}, len {len}, amplitude {amplitude}, attention scale \
             {attention_scale}"
        ),
    );
}

#[test]
fn kernel_matches_fallback_for_gpt2_shapes() {
    for len in [0, 16, 299] {
        assert_kernel_matches_fallback(&case(3, 12, 64, len), len as u64);
    }
    assert_kernel_matches_fallback(&Case { capacity: 128, ..case(1, 12, 64, 71) }, 5);
}

#[test]
fn kernel_matches_fallback_for_other_head_dims() {
    // Not a power of two, the largest head_dim the kernel takes, and one below its workgroup size.
    assert_kernel_matches_fallback(&case(2, 3, 40, 32), 11);
    assert_kernel_matches_fallback(&case(1, 2, 256, 49), 12);
    assert_kernel_matches_fallback(&case(2, 2, 16, 8), 13);
}

#[test]
fn kernel_matches_fallback_across_several_key_tiles() {
    // The kernel takes keys 1024 at a time; 2500 spans three tiles, the last one partial, and
    // the new key, written by the same dispatch, sits in the last.
    assert_kernel_matches_fallback(&case(2, 4, 64, 2499), 21);
}

#[test]
fn kernel_matches_fallback_for_a_sharp_softmax() {
    // Scores in the hundreds: without subtracting the maximum, exp would overflow.
    assert_kernel_matches_fallback(&Case { amplitude: 6.0, ..case(2, 4, 64, 1099) }, 31);
}

#[test]
fn kernel_and_fallback_take_the_models_scale() {
    // GPT-2 without scale_attn_weights (1), and with scale_attn_by_inverse_layer_idx in a 12th layer.
    for (attention_scale, seed) in [(1.0, 35), (1.0 / (8.0 * 12.0), 36)] {
        assert_kernel_matches_fallback(&Case { attention_scale, ..case(2, 4, 64, 30) }, seed);
    }
    let plain = case(1, 2, 16, 5);
    let halved = Case { attention_scale: plain.attention_scale / 2.0, ..case(1, 2, 16, 5) };
    let [plain_output, halved_output] = [&plain, &halved].map(|c| {
        let device = Device::flex();
        run(decode_attention_fallback, c, inputs(c, 37, &device)).0
    });
    assert_ne!(plain_output, halved_output, "the scale changed nothing");
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let case = case(3, 12, 64, 16);
    let kernel = run(decode_attention, &case, inputs(&case, 41, &device));
    let cpu = run(decode_attention_fallback, &case, inputs(&case, 41, &Device::flex()));
    assert_match(&kernel, &cpu, "wgpu against cpu");
}

#[test]
fn a_shared_cache_is_copied_not_written() {
    // A cloned cache (a beam's other hypothesis) must keep its values: both paths write a copy.
    let case = case(2, 3, 64, 5);
    let devices = [wgpu(), Some(Device::flex())];
    for device in devices.iter().flatten() {
        let (qkv, k, v) = inputs(&case, 91, device);
        let (k_before, v_before) = (read(k.clone()), read(v.clone()));
        let (_, k_written, v_written) =
            decode_attention(qkv, case.heads, k.clone(), v.clone(), case.len, case.attention_scale);
        assert_eq!((read(k), read(v)), (k_before.clone(), v_before.clone()), "{device:?}: a shared cache was written");
        assert_ne!(read(k_written), k_before, "{device:?}: the new key was not written");
        assert_ne!(read(v_written), v_before, "{device:?}: the new value was not written");
    }
}

#[test]
fn kernel_writes_a_transposed_cache_through_a_copy() {
    let Some(device) = wgpu() else { return };
    let case = case(2, 3, 64, 20);
    let Case { batch, heads, head_dim, capacity, .. } = case;
    let transposed = |seed| tensor([batch, heads, head_dim, capacity], seed, 1.0, &device).swap_dims(2, 3);
    let qkv = tensor([batch, 1, 3 * heads * head_dim], 81, 1.0, &device);
    assert!(decode_attention_uses_kernel(&qkv, heads, &transposed(82), &transposed(83)));
    let kernel = run(decode_attention, &case, (qkv.clone(), transposed(82), transposed(83)));
    let fallback = run(decode_attention_fallback, &case, (qkv, transposed(82), transposed(83)));
    assert_match(&kernel, &fallback, "transposed caches");
}

#[test]
fn cpu_tensors_take_the_fallback() {
    let case = case(3, 12, 64, 16);
    let (qkv, k, v) = inputs(&case, 51, &Device::flex());
    assert!(!decode_attention_uses_kernel(&qkv, case.heads, &k, &v));
    let dispatched = run(decode_attention, &case, (qkv.clone(), k.clone(), v.clone()));
    assert_eq!(dispatched, run(decode_attention_fallback, &case, (qkv, k, v)));
}

#[test]
fn autodiff_tensors_take_the_fallback_and_get_gradients() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let case = case(1, 2, 64, 4);
    let (qkv, k, v) = inputs(&case, 61, &device);
    let qkv = qkv.require_grad();
    assert!(!decode_attention_uses_kernel(&qkv, case.heads, &k, &v));
    let scale = case.attention_scale;
    let (output, _, _) = decode_attention(qkv.clone(), case.heads, k.clone(), v.clone(), case.len, scale);
    let (expected, _, _) = decode_attention_fallback(qkv.clone(), case.heads, k, v, case.len, scale);
    assert_eq!(read(output.clone()), read(expected));
    let gradients = output.sum().backward();
    let gradient = read(qkv.grad(&gradients).expect("no gradient for qkv"));
    // q and the new k and v all shape the output.
    let d = case.heads * case.head_dim;
    for (part, name) in gradient.chunks(d).zip(["q", "k", "v"]) {
        assert!(part.iter().any(|g| *g != 0.0), "no gradient reaches {name}");
    }
}

#[test]
fn unsupported_head_dims_take_the_fallback() {
    let Some(device) = wgpu() else { return };
    // Beyond the kernel's largest, and not a multiple of 4.
    for head_dim in [320, 42] {
        let case = case(1, 1, head_dim, 3);
        let (qkv, k, v) = inputs(&case, 71, &device);
        assert!(!decode_attention_uses_kernel(&qkv, case.heads, &k, &v), "head_dim {head_dim}");
        let dispatched = run(decode_attention, &case, (qkv.clone(), k.clone(), v.clone()));
        assert_eq!(dispatched, run(decode_attention_fallback, &case, (qkv, k, v)), "head_dim {head_dim}");
    }
}

#[test]
#[should_panic(expected = "do not match")]
fn a_full_cache_is_refused() {
    let case = Case { capacity: 4, ..case(1, 2, 64, 4) };
    let (qkv, k, v) = inputs(&case, 101, &Device::flex());
    decode_attention(qkv, case.heads, k, v, case.len, case.attention_scale);
}
