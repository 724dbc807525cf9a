//! `decode_attention`: the WGSL kernel against the Burn fallback, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

mod support;

use burn::prelude::*;
use glimpse_kernels::{decode_attention, decode_attention_fallback, decode_attention_uses_kernel};
use support::{read, relative_error, tensor, wgpu};

const TOLERANCE: f32 = 1e-4;

struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    seq: usize,
    /// Input amplitude: large values make the softmax sharp.
    scale: f32,
}

const fn case(batch: usize, heads: usize, head_dim: usize, seq: usize) -> Case {
    Case { batch, heads, head_dim, seq, scale: 1.0 }
}

/// Inputs laid out as GPT-2 decoding makes them: q and the new k, v are sliced out of a fused
/// `[batch, 1, 3 d]` projection and have their head dims swapped (views, not contiguous), and the
/// cache grows by concatenation along the sequence.
fn inputs(case: &Case, seed: u64, device: &Device) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
    let &Case { batch, heads, head_dim, seq, scale } = case;
    let d = heads * head_dim;
    let qkv = tensor([batch, 1, 3 * d], seed, scale, device);
    let split = |part: usize| qkv.clone().narrow(2, part * d, d).reshape([batch, 1, heads, head_dim]).swap_dims(1, 2);
    let (q, k, v) = (split(0), split(1), split(2));
    if seq == 1 {
        return (q, k, v);
    }
    let past = |salt: u64| tensor([batch, heads, seq - 1, head_dim], seed + salt, scale, device);
    (q, Tensor::cat(vec![past(1), k], 2), Tensor::cat(vec![past(2), v], 2))
}

fn assert_kernel_matches_fallback(case: &Case, seed: u64) {
    let Some(device) = wgpu() else { return };
    let (q, k, v) = inputs(case, seed, &device);
    assert!(decode_attention_uses_kernel(&q, &k, &v), "the kernel was not chosen on wgpu");
    let kernel = read(decode_attention(q.clone(), k.clone(), v.clone()));
    let fallback = read(decode_attention_fallback(q, k, v));
    let error = relative_error(&kernel, &fallback);
    let Case { batch, heads, head_dim, seq, scale } = case;
    assert!(
        error <= TOLERANCE,
        "batch {batch}, heads {heads}, head_dim {head_dim}, seq {seq}, scale {scale}: relative error {error:e}"
    );
}

#[test]
fn kernel_matches_fallback_for_gpt2_shapes() {
    for seq in [1, 17, 300] {
        assert_kernel_matches_fallback(&case(3, 12, 64, seq), seq as u64);
    }
    assert_kernel_matches_fallback(&case(1, 12, 64, 72), 5);
}

#[test]
fn kernel_matches_fallback_for_other_head_dims() {
    // Not a power of two, the largest head_dim the kernel takes, and one below its workgroup size.
    assert_kernel_matches_fallback(&case(2, 3, 40, 33), 11);
    assert_kernel_matches_fallback(&case(1, 2, 256, 50), 12);
    assert_kernel_matches_fallback(&case(2, 2, 16, 9), 13);
}

#[test]
fn kernel_matches_fallback_across_several_key_tiles() {
    // The kernel takes keys 1024 at a time; 2500 spans three tiles, the last one partial.
    assert_kernel_matches_fallback(&case(2, 4, 64, 2500), 21);
}

#[test]
fn kernel_matches_fallback_for_a_sharp_softmax() {
    // Scores in the hundreds: without subtracting the maximum, exp would overflow.
    assert_kernel_matches_fallback(&Case { scale: 6.0, ..case(2, 4, 64, 1100) }, 31);
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let case = case(3, 12, 64, 17);
    let (q, k, v) = inputs(&case, 41, &device);
    let kernel = read(decode_attention(q, k, v));
    let (q, k, v) = inputs(&case, 41, &Device::flex());
    let cpu = read(decode_attention_fallback(q, k, v));
    let error = relative_error(&kernel, &cpu);
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn cpu_tensors_take_the_fallback() {
    let (q, k, v) = inputs(&case(3, 12, 64, 17), 51, &Device::flex());
    assert!(!decode_attention_uses_kernel(&q, &k, &v));
    let dispatched = read(decode_attention(q.clone(), k.clone(), v.clone()));
    assert_eq!(dispatched, read(decode_attention_fallback(q, k, v)));
}

#[test]
fn autodiff_tensors_take_the_fallback_and_get_gradients() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let (q, k, v) = inputs(&case(1, 2, 64, 5), 61, &device);
    let q = q.detach().require_grad();
    assert!(!decode_attention_uses_kernel(&q, &k, &v));
    let output = decode_attention(q.clone(), k.clone(), v.clone());
    assert_eq!(read(output.clone()), read(decode_attention_fallback(q.clone(), k, v)));
    let gradients = output.sum().backward();
    let gradient = read(q.grad(&gradients).expect("no gradient for q"));
    assert!(gradient.iter().any(|g| *g != 0.0));
}

#[test]
fn kernel_reads_permuted_queries_and_transposed_caches() {
    let Some(device) = wgpu() else { return };
    let (batch, heads, head_dim, seq) = (2, 3, 64, 20);
    // q with a last-dim stride of `heads`; k and v with a last-dim stride of `seq`.
    let q = tensor([batch, head_dim, heads, 1], 81, 1.0, &device).permute([0, 2, 3, 1]);
    let transposed = |seed| tensor([batch, heads, head_dim, seq], seed, 1.0, &device).swap_dims(2, 3);
    let (k, v) = (transposed(82), transposed(83));
    assert!(decode_attention_uses_kernel(&q, &k, &v));
    let kernel = read(decode_attention(q.clone(), k.clone(), v.clone()));
    let error = relative_error(&kernel, &read(decode_attention_fallback(q, k, v)));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn unsupported_head_dims_take_the_fallback() {
    let Some(device) = wgpu() else { return };
    // Beyond the kernel's largest, and not a multiple of 4.
    for head_dim in [320, 42] {
        let (q, k, v) = inputs(&case(1, 1, head_dim, 4), 71, &device);
        assert!(!decode_attention_uses_kernel(&q, &k, &v), "head_dim {head_dim}");
        let dispatched = read(decode_attention(q.clone(), k.clone(), v.clone()));
        assert_eq!(dispatched, read(decode_attention_fallback(q, k, v)), "head_dim {head_dim}");
    }
}
