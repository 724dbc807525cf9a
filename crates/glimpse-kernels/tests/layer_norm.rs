//! `layer_norm`: the WGSL kernel against Burn's LayerNorm, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

use crate::support::{read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{layer_norm, layer_norm_fallback, layer_norm_uses_kernel};

const TOLERANCE: f32 = 1e-4;
const EPSILON: f64 = 1e-5;

/// Gamma around 1 and beta around 0, as trained LayerNorms have them.
fn affine(dim: usize, seed: u64, device: &Device) -> (Tensor<1>, Tensor<1>) {
    (tensor([dim], seed, 0.5, device) + 1.0, tensor([dim], seed + 1, 0.5, device))
}

fn assert_kernel_matches_fallback<const D: usize>(x: Tensor<D>, seed: u64) {
    let dims = x.dims();
    let (gamma, beta) = affine(dims[D - 1], seed, &x.device());
    assert!(layer_norm_uses_kernel(&x, &gamma, Some(&beta)), "{dims:?}: the kernel was not chosen on wgpu");
    let kernel = read(layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), EPSILON));
    let fallback = read(layer_norm_fallback(x, gamma, Some(beta), EPSILON));
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{dims:?}: relative error {error:e}");
}

#[test]
fn kernel_matches_fallback_for_model_shapes() {
    let Some(device) = wgpu() else { return };
    // GPT-2 decoding and a prompt, CLIP's text-tower batch and its image tower's tokens.
    assert_kernel_matches_fallback(tensor([1, 1, 768], 1, 3.0, &device), 1);
    assert_kernel_matches_fallback(tensor([2, 9, 768], 2, 3.0, &device), 2);
    assert_kernel_matches_fallback(tensor([64, 16, 512], 3, 3.0, &device), 3);
    assert_kernel_matches_fallback(tensor([8 * 50, 768], 4, 3.0, &device), 4);
}

#[test]
fn kernel_matches_fallback_for_rows_shorter_or_not_a_multiple_of_the_workgroup() {
    let Some(device) = wgpu() else { return };
    for (dim, seed) in [(1, 11), (5, 12), (37, 13), (64, 14), (1000, 15)] {
        assert_kernel_matches_fallback(tensor([3, dim], seed, 2.0, &device), seed);
    }
}

#[test]
fn kernel_stays_accurate_for_rows_far_from_zero() {
    let Some(device) = wgpu() else { return };
    // A mean of 300 and a spread of 0.1: f32 holds x only to ~3e-4 of the spread, so kernel and
    // fallback are compared with an f64 reference, not with each other. E[x^2] - mean^2 would
    // lose the variance entirely (9e4 against 3e-3).
    let dim = 768;
    let x = tensor([4, dim], 21, 0.1, &device) + 300.0;
    let (gamma, beta) = affine(dim, 22, &device);
    let (xs, gs, bs) = (read(x.clone()), read(gamma.clone()), read(beta.clone()));
    let reference: Vec<f32> = xs
        .chunks(dim)
        .flat_map(|row| {
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / dim as f64;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / dim as f64;
            let scale = 1.0 / (var + EPSILON).sqrt();
            row.iter()
                .zip(gs.iter().zip(&bs))
                .map(move |(&v, (&g, &b))| ((f64::from(v) - mean) * scale * f64::from(g) + f64::from(b)) as f32)
        })
        .collect();
    let kernel = read(layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), EPSILON));
    let fallback = read(layer_norm_fallback(x, gamma, Some(beta), EPSILON));
    let (kernel_error, fallback_error) = (relative_error(&kernel, &reference), relative_error(&fallback, &reference));
    assert!(
        kernel_error <= 1e-2 && kernel_error <= 2.0 * fallback_error.max(1e-4),
        "kernel {kernel_error:e}, fallback {fallback_error:e}"
    );
}

#[test]
fn kernel_matches_fallback_beyond_one_dispatch_dimension() {
    let Some(device) = wgpu() else { return };
    // More rows than the 65535 workgroups one dispatch dimension holds.
    assert_kernel_matches_fallback(tensor([70_000, 4], 31, 1.0, &device), 31);
}

#[test]
fn kernel_reads_views_by_copying_them() {
    let Some(device) = wgpu() else { return };
    // A transposed view and a slice starting mid-buffer.
    assert_kernel_matches_fallback(tensor([96, 6], 41, 1.0, &device).swap_dims(0, 1), 41);
    assert_kernel_matches_fallback(tensor([10, 96], 42, 1.0, &device).narrow(0, 3, 5), 42);
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let run = |device: &Device| {
        let (gamma, beta) = affine(768, 51, device);
        layer_norm(tensor([2, 5, 768], 52, 3.0, device), gamma, Some(beta), EPSILON)
    };
    let error = relative_error(&read(run(&device)), &read(run(&Device::flex())));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn cpu_tensors_and_a_missing_beta_take_the_fallback() {
    let device = Device::flex();
    let x = tensor([2, 5, 64], 61, 1.0, &device);
    let (gamma, beta) = affine(64, 62, &device);
    assert!(!layer_norm_uses_kernel(&x, &gamma, Some(&beta)));
    let dispatched = read(layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), EPSILON));
    assert_eq!(dispatched, read(layer_norm_fallback(x, gamma, Some(beta), EPSILON)));
    let Some(device) = wgpu() else { return };
    let x = tensor([2, 64], 63, 1.0, &device);
    let (gamma, _) = affine(64, 64, &device);
    assert!(!layer_norm_uses_kernel(&x, &gamma, None));
    assert_eq!(
        read(layer_norm(x.clone(), gamma.clone(), None, EPSILON)),
        read(layer_norm_fallback(x, gamma, None, EPSILON))
    );
}

type Norm<const D: usize> = fn(Tensor<D>, Tensor<1>, Option<Tensor<1>>, f64) -> Tensor<D>;

/// `(loss, dloss/dx)` for `norm` applied to `2 x`, with gamma and beta constants; the loss weights
/// each output by a random tensor so the gradient is not the zero a plain sum of a normalised row
/// gives, and reaches `x` through the product (the kernel's gradient must flow on).
fn loss_and_gradient<const D: usize>(
    norm: Norm<D>,
    x: Tensor<D>,
    (gamma, beta): (Tensor<1>, Tensor<1>),
    weights: Tensor<D>,
) -> (Vec<f32>, Vec<f32>) {
    let x = x.require_grad();
    let loss = (norm(x.clone() * 2.0, gamma, Some(beta), EPSILON) * weights).sum();
    let gradients = loss.backward();
    (read(loss), read(x.grad(&gradients).expect("no gradient for x")))
}

#[test]
fn gradient_of_x_matches_fallback_under_autodiff() {
    let Some(plain) = wgpu() else { return };
    for device in [plain.clone().autodiff(), plain.autodiff().gradient_checkpointing()] {
        for (shape, seed) in [([2, 3, 64], 71), ([1, 1, 768], 72), ([2, 77, 512], 73), ([3, 5, 100], 74)] {
            let x = tensor(shape, seed, 1.0, &device);
            let affine = affine(shape[2], seed + 10, &device);
            assert!(
                layer_norm_uses_kernel(&x, &affine.0, Some(&affine.1)),
                "{shape:?}: the kernel was not chosen under autodiff"
            );
            let weights = tensor(shape, seed + 20, 1.0, &device);
            let (kernel_loss, kernel) = loss_and_gradient(layer_norm, x.clone(), affine.clone(), weights.clone());
            let (fallback_loss, fallback) = loss_and_gradient(layer_norm_fallback, x, affine, weights);
            let what = format!("{shape:?}, {device:?}");
            let error = relative_error(&kernel_loss, &fallback_loss);
            assert!(error <= TOLERANCE, "loss, {what}: relative error {error:e}");
            let error = relative_error(&kernel, &fallback);
            assert!(error <= TOLERANCE, "gradient, {what}: relative error {error:e}");
        }
    }
}

#[test]
fn gradient_of_a_view_matches_fallback() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    // Rows of the transpose: the kernel copies the view, the gradient must land on the original.
    let x = tensor([64, 6], 81, 1.0, &device);
    let affine = affine(64, 82, &device);
    let weights = tensor([64, 6], 83, 1.0, &device);
    let transposed: Norm<2> =
        |x, gamma, beta, epsilon| layer_norm(x.swap_dims(0, 1), gamma, beta, epsilon).swap_dims(0, 1);
    let transposed_fallback: Norm<2> =
        |x, gamma, beta, epsilon| layer_norm_fallback(x.swap_dims(0, 1), gamma, beta, epsilon).swap_dims(0, 1);
    let (_, kernel) = loss_and_gradient(transposed, x.clone(), affine.clone(), weights.clone());
    let (_, fallback) = loss_and_gradient(transposed_fallback, x, affine, weights);
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn untracked_input_on_the_autodiff_device_uses_the_kernel() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let x = tensor([2, 3, 64], 91, 1.0, &device);
    let (gamma, beta) = affine(64, 92, &device);
    assert!(layer_norm_uses_kernel(&x, &gamma, Some(&beta)));
    let kernel = read(layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), EPSILON));
    let error = relative_error(&kernel, &read(layer_norm_fallback(x, gamma, Some(beta), EPSILON)));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn a_tracked_gamma_takes_the_fallback_and_gets_its_gradient() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let x = tensor([2, 3, 64], 101, 1.0, &device).require_grad();
    let (gamma, beta) = affine(64, 102, &device);
    let gamma = gamma.require_grad();
    assert!(!layer_norm_uses_kernel(&x, &gamma, Some(&beta)));
    let weights = tensor([2, 3, 64], 103, 1.0, &device);
    let gradients = (layer_norm(x.clone(), gamma.clone(), Some(beta), EPSILON) * weights).sum().backward();
    assert!(x.grad(&gradients).is_some() && gamma.grad(&gradients).is_some(), "no gradient for x or gamma");
}

#[test]
#[should_panic(expected = "do not match")]
fn a_gamma_of_another_width_is_refused() {
    let device = Device::flex();
    let (gamma, beta) = affine(8, 81, &device);
    let _ = layer_norm(tensor([2, 6], 82, 1.0, &device), gamma, Some(beta), EPSILON);
}
