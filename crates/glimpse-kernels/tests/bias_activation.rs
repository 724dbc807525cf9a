//! `bias_activation`: the WGSL kernel against the Burn fallback, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

mod support;

use burn::prelude::*;
use glimpse_kernels::{Activation, bias_activation, bias_activation_fallback, bias_activation_uses_kernel};
use support::{read, relative_error, tensor, wgpu};

const TOLERANCE: f32 = 1e-4;
const ACTIVATIONS: [Option<Activation>; 4] =
    [Some(Activation::QuickGelu), Some(Activation::GeluTanh), Some(Activation::Gelu), None];

fn assert_kernel_matches_fallback<const D: usize>(y: Tensor<D>, seed: u64) {
    let dims = y.dims();
    let bias = tensor([dims[D - 1]], seed, 1.0, &y.device());
    assert!(bias_activation_uses_kernel(&y, Some(&bias)), "{dims:?}: the kernel was not chosen on wgpu");
    for activation in ACTIVATIONS {
        let kernel = read(bias_activation(y.clone(), Some(bias.clone()), activation));
        let fallback = read(bias_activation_fallback(y.clone(), Some(bias.clone()), activation));
        let error = relative_error(&kernel, &fallback);
        assert!(error <= TOLERANCE, "{dims:?}, {activation:?}: relative error {error:e}");
    }
}

#[test]
fn kernel_matches_fallback_for_mlp_shapes() {
    let Some(device) = wgpu() else { return };
    // GPT-2 decoding, CLIP's text-tower batch, and widths that are no multiple of the workgroup.
    assert_kernel_matches_fallback(tensor([1, 1, 3072], 1, 4.0, &device), 1);
    assert_kernel_matches_fallback(tensor([64, 16, 2048], 2, 4.0, &device), 2);
    assert_kernel_matches_fallback(tensor([3, 7, 37], 3, 4.0, &device), 3);
    assert_kernel_matches_fallback(tensor([5, 1], 4, 4.0, &device), 4);
}

#[test]
fn kernel_stays_finite_where_the_activations_saturate() {
    let Some(device) = wgpu() else { return };
    // Arguments far beyond the clamps: exp and tanh of these would overflow unclamped.
    assert_kernel_matches_fallback(tensor([4, 256], 11, 200.0, &device), 11);
}

#[test]
fn kernel_matches_fallback_beyond_one_dispatch_dimension() {
    let Some(device) = wgpu() else { return };
    // 65535 workgroups of 64 lanes hold 4194240 elements; this needs a second row of them.
    assert_kernel_matches_fallback(tensor([4_200_000 / 8, 8], 21, 2.0, &device), 21);
}

#[test]
fn kernel_reads_views_by_copying_them() {
    let Some(device) = wgpu() else { return };
    assert_kernel_matches_fallback(tensor([96, 6], 31, 2.0, &device).swap_dims(0, 1), 31);
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    for activation in ACTIVATIONS {
        let run = |device: &Device| {
            bias_activation(tensor([2, 5, 300], 41, 4.0, device), Some(tensor([300], 42, 1.0, device)), activation)
        };
        let error = relative_error(&read(run(&device)), &read(run(&Device::flex())));
        assert!(error <= TOLERANCE, "{activation:?}: relative error {error:e}");
    }
}

#[test]
fn cpu_tensors_autodiff_tensors_and_a_missing_bias_take_the_fallback() {
    let cpu = Device::flex();
    let (y, bias) = (tensor([2, 64], 51, 2.0, &cpu), tensor([64], 52, 1.0, &cpu));
    assert!(!bias_activation_uses_kernel(&y, Some(&bias)));
    assert_eq!(
        read(bias_activation(y.clone(), Some(bias.clone()), Some(Activation::GeluTanh))),
        read(bias_activation_fallback(y, Some(bias), Some(Activation::GeluTanh)))
    );
    let Some(device) = wgpu() else { return };
    let y = tensor([2, 64], 53, 2.0, &device);
    assert!(!bias_activation_uses_kernel(&y, None));
    let grad_device = device.autodiff();
    let y = tensor([2, 64], 54, 2.0, &grad_device).require_grad();
    let bias = tensor([64], 55, 1.0, &grad_device);
    assert!(!bias_activation_uses_kernel(&y, Some(&bias)));
    let gradients = bias_activation(y.clone(), Some(bias), Some(Activation::QuickGelu)).sum().backward();
    assert!(read(y.grad(&gradients).expect("no gradient for y")).iter().any(|g| *g != 0.0));
}

#[test]
#[should_panic(expected = "do not match")]
fn a_bias_of_another_width_is_refused() {
    let device = Device::flex();
    let _ =
        bias_activation(tensor([2, 6], 61, 1.0, &device), Some(tensor([5], 62, 1.0, &device)), Some(Activation::Gelu));
}
