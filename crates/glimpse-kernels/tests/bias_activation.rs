//! `bias_activation`: the WGSL kernel and the CPU backend's against the Burn fallback, and the
//! choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

use crate::support::{on_threads, read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{Activation, bias_activation, bias_activation_fallback, bias_activation_uses_kernel};

const TOLERANCE: f32 = 1e-4;
const ACTIVATIONS: [Option<Activation>; 6] = [
    Some(Activation::QuickGelu),
    Some(Activation::GeluTanh),
    Some(Activation::Gelu),
    Some(Activation::Relu),
    Some(Activation::Silu),
    None,
];

/// The devices with a kernel: the CPU backend always, wgpu where this run covers it.
fn devices() -> Vec<Device> {
    std::iter::once(Device::flex()).chain(wgpu()).collect()
}

fn assert_kernel_matches_fallback<const D: usize>(y: Tensor<D>, seed: u64) {
    let dims = y.dims();
    let bias = tensor([dims[D - 1]], seed, 1.0, &y.device());
    let on_cpu = y.device() == Device::flex();
    for activation in ACTIVATIONS {
        // On the CPU backend a bias alone is Burn's add.
        let chosen = !(on_cpu && activation.is_none());
        assert_eq!(
            bias_activation_uses_kernel(&y, Some(&bias), activation),
            chosen,
            "{dims:?}, {activation:?} on {:?}: the wrong path was chosen",
            y.device()
        );
        let kernel = read(bias_activation(y.clone(), Some(bias.clone()), activation));
        let fallback = read(bias_activation_fallback(y.clone(), Some(bias.clone()), activation));
        // A ReLU of values all negative gives zeros, which only zeros match.
        let error = if fallback.iter().all(|v| *v == 0.0) {
            assert_eq!(activation, Some(Activation::Relu), "{dims:?} on {:?}: an all-zero reference", y.device());
            assert_eq!(kernel, fallback, "{dims:?}, {activation:?} on {:?}", y.device());
            0.0
        } else {
            relative_error(&kernel, &fallback)
        };
        assert!(error <= TOLERANCE, "{dims:?}, {activation:?} on {:?}: relative error {error:e}", y.device());
    }
}

#[test]
fn kernel_matches_fallback_for_mlp_shapes() {
    for device in devices() {
        // GPT-2 decoding, CLIP's text-tower batch, and widths that are no multiple of the workgroup.
        assert_kernel_matches_fallback(tensor([1, 1, 3072], 1, 4.0, &device), 1);
        assert_kernel_matches_fallback(tensor([64, 16, 2048], 2, 4.0, &device), 2);
        assert_kernel_matches_fallback(tensor([3, 7, 37], 3, 4.0, &device), 3);
        assert_kernel_matches_fallback(tensor([5, 1], 4, 4.0, &device), 4);
    }
}

#[test]
fn kernel_stays_finite_where_the_activations_saturate() {
    for device in devices() {
        // Arguments far beyond the clamps: exp and tanh of these would overflow unclamped.
        assert_kernel_matches_fallback(tensor([4, 256], 11, 200.0, &device), 11);
    }
}

#[test]
fn cpu_kernel_gives_the_same_values_however_its_rows_are_split() {
    // 512 rows of 2048: tasks of 8 rows, so one thread runs 64 tasks and three share them.
    let cpu = Device::flex();
    let (y, bias) = (tensor([512, 2048], 5, 4.0, &cpu), tensor([2048], 6, 1.0, &cpu));
    let fallback = read(bias_activation_fallback(y.clone(), Some(bias.clone()), Some(Activation::QuickGelu)));
    let [one, three] = [1, 3].map(|threads| {
        on_threads(threads, || read(bias_activation(y.clone(), Some(bias.clone()), Some(Activation::QuickGelu))))
    });
    // Each element is computed alone: the split cannot change a bit.
    assert_eq!(one, three, "1 and 3 threads differ");
    let error = relative_error(&one, &fallback);
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn kernel_matches_fallback_beyond_one_dispatch_dimension() {
    let Some(device) = wgpu() else { return };
    // 65535 workgroups of 64 lanes hold 4194240 elements; this needs a second row of them.
    assert_kernel_matches_fallback(tensor([4_200_000 / 8, 8], 21, 2.0, &device), 21);
}

#[test]
fn kernel_reads_views_by_copying_them() {
    for device in devices() {
        assert_kernel_matches_fallback(tensor([96, 6], 31, 2.0, &device).swap_dims(0, 1), 31);
    }
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let cpu = Device::flex();
    for activation in ACTIVATIONS {
        let inputs = |device: &Device| (tensor([2, 5, 300], 41, 4.0, device), Some(tensor([300], 42, 1.0, device)));
        let ((y, bias), (y_cpu, bias_cpu)) = (inputs(&device), inputs(&cpu));
        let kernel = read(bias_activation(y, bias, activation));
        let error = relative_error(&kernel, &read(bias_activation_fallback(y_cpu, bias_cpu, activation)));
        assert!(error <= TOLERANCE, "{activation:?}: relative error {error:e}");
    }
}

#[test]
fn a_missing_bias_and_other_dtypes_take_the_fallback() {
    for device in devices() {
        let y = tensor([2, 64], 53, 2.0, &device);
        assert!(!bias_activation_uses_kernel(&y, None, Some(Activation::GeluTanh)));
    }
    // The CPU kernel reads f32 only.
    let cpu = Device::flex();
    let (y, bias) = (tensor([2, 64], 55, 2.0, &cpu).cast(burn::tensor::FloatDType::F64), tensor([64], 56, 1.0, &cpu));
    assert!(!bias_activation_uses_kernel(&y, Some(&bias), Some(Activation::GeluTanh)));
}

/// `(loss, dloss/dy)` for `f` applied to `2 y` with a constant bias; the loss weights each output by
/// a random tensor, and the gradient reaches `y` through the product (the kernel's must flow on).
fn loss_and_gradient<const D: usize>(
    f: fn(Tensor<D>, Option<Tensor<1>>, Option<Activation>) -> Tensor<D>,
    y: Tensor<D>,
    bias: Tensor<1>,
    activation: Activation,
    weights: Tensor<D>,
) -> (Vec<f32>, Vec<f32>) {
    let y = y.require_grad();
    let loss = (f(y.clone() * 2.0, Some(bias), Some(activation)) * weights).sum();
    let gradients = loss.backward();
    (read(loss), read(y.grad(&gradients).expect("no gradient for y")))
}

#[test]
fn gradient_of_y_matches_fallback_under_autodiff() {
    for device in
        devices().into_iter().flat_map(|plain| [plain.clone().autodiff(), plain.autodiff().gradient_checkpointing()])
    {
        // GPT-2's MLP at a guided step, a width no multiple of the workgroup, and arguments far
        // beyond the clamps (where the derivative is zero or one).
        for (shape, scale, seed) in [([2, 12, 3072], 3.0, 111), ([3, 5, 37], 3.0, 112), ([4, 1, 256], 200.0, 113)] {
            let y = tensor(shape, seed, scale, &device);
            let bias = tensor([shape[2]], seed + 10, 1.0, &device);
            let weights = tensor(shape, seed + 20, 1.0, &device);
            for activation in ACTIVATIONS.into_iter().flatten() {
                assert!(
                    bias_activation_uses_kernel(&y, Some(&bias), Some(activation)),
                    "{shape:?} on {device:?}: the kernel was not chosen under autodiff"
                );
                let run = |f| loss_and_gradient(f, y.clone(), bias.clone(), activation, weights.clone());
                let (kernel_loss, kernel) = run(bias_activation);
                let (fallback_loss, mut fallback) = run(bias_activation_fallback);
                if activation == Activation::Gelu {
                    // Burn's backward of the exact GELU is the tanh approximation's derivative
                    // (off by up to 1e-3); the kernel's is exact.
                    fallback = read(exact_gelu_gradient(y.clone(), bias.clone(), weights.clone()));
                }
                let what = format!("{shape:?}, {activation:?}, {device:?}");
                let error = relative_error(&kernel_loss, &fallback_loss);
                assert!(error <= TOLERANCE, "loss, {what}: relative error {error:e}");
                let error = relative_error(&kernel, &fallback);
                assert!(error <= TOLERANCE, "gradient, {what}: relative error {error:e}");
            }
        }
    }
}

/// dloss/dy of `loss_and_gradient` for the exact GELU, from its derivative
/// `0.5 (1 + erf(z / sqrt 2)) + z exp(-z^2 / 2) / sqrt(2 pi)` at `z = 2 y + bias`.
fn exact_gelu_gradient<const D: usize>(y: Tensor<D>, bias: Tensor<1>, weights: Tensor<D>) -> Tensor<D> {
    let z = (y * 2.0 + bias.unsqueeze()).detach();
    let derivative = ((z.clone() * std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
        + z.clone()
            * (z.clone() * z * -0.5).exp()
            * (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2);
    derivative * weights.detach() * 2.0
}

#[test]
fn gradient_of_a_view_matches_fallback() {
    for device in devices() {
        gradient_of_a_view_matches_fallback_on(device.autodiff());
    }
}

fn gradient_of_a_view_matches_fallback_on(device: Device) {
    // Rows of the transpose: the kernel copies the view, the gradient must land on the original.
    let transposed: fn(Tensor<2>, Option<Tensor<1>>, Option<Activation>) -> Tensor<2> =
        |y, bias, activation| bias_activation(y.swap_dims(0, 1), bias, activation).swap_dims(0, 1);
    let transposed_fallback: fn(Tensor<2>, Option<Tensor<1>>, Option<Activation>) -> Tensor<2> =
        |y, bias, activation| bias_activation_fallback(y.swap_dims(0, 1), bias, activation).swap_dims(0, 1);
    let (y, bias, weights) =
        (tensor([64, 6], 121, 2.0, &device), tensor([64], 122, 1.0, &device), tensor([64, 6], 123, 1.0, &device));
    let (_, kernel) = loss_and_gradient(transposed, y.clone(), bias.clone(), Activation::GeluTanh, weights.clone());
    let (_, fallback) = loss_and_gradient(transposed_fallback, y, bias, Activation::GeluTanh, weights);
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn under_autodiff_a_tracked_bias_or_no_activation_takes_the_fallback() {
    for device in devices() {
        under_autodiff_a_tracked_bias_or_no_activation_takes_the_fallback_on(device.autodiff());
    }
}

fn under_autodiff_a_tracked_bias_or_no_activation_takes_the_fallback_on(device: Device) {
    let y = tensor([2, 64], 131, 2.0, &device).require_grad();
    let bias = tensor([64], 132, 1.0, &device);
    // A bias alone is Burn's add, whose backward costs no launch.
    assert!(!bias_activation_uses_kernel(&y, Some(&bias), None));
    let bias = bias.require_grad();
    assert!(!bias_activation_uses_kernel(&y, Some(&bias), Some(Activation::QuickGelu)));
    let gradients = bias_activation(y.clone(), Some(bias.clone()), Some(Activation::QuickGelu)).sum().backward();
    assert!(y.grad(&gradients).is_some() && bias.grad(&gradients).is_some(), "no gradient for y or the bias");
}

#[test]
#[should_panic(expected = "do not match")]
fn a_bias_of_another_width_is_refused() {
    let device = Device::flex();
    let _ =
        bias_activation(tensor([2, 6], 61, 1.0, &device), Some(tensor([5], 62, 1.0, &device)), Some(Activation::Gelu));
}
