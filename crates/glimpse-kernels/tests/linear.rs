//! `linear` and its variants `linear_residual` and `layer_norm_linear`: the WGSL kernels and the
//! CPU backend's product against the Burn fallbacks, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

use crate::support::{on_threads, read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{
    Activation, LINEAR_MAX_ROWS, layer_norm_linear, layer_norm_linear_fallback, layer_norm_linear_uses_kernel, linear,
    linear_fallback, linear_residual, linear_residual_fallback, linear_residual_uses_kernel, linear_uses_cpu_kernel,
    linear_uses_kernel,
};

const TOLERANCE: f32 = 1e-4;

/// A layer as trained ones are scaled: weights of order 1/sqrt(k).
fn layer(k: usize, n: usize, seed: u64, device: &Device) -> (Tensor<2>, Tensor<1>) {
    (tensor([k, n], seed, 1.0 / (k as f32).sqrt(), device), tensor([n], seed + 1, 0.5, device))
}

fn assert_kernel_matches_fallback<const D: usize>(x: Tensor<D>, n: usize, activation: Option<Activation>, seed: u64) {
    let dims = x.dims();
    let (weight, bias) = layer(dims[D - 1], n, seed, &x.device());
    assert!(linear_uses_kernel(&x, &weight, Some(&bias)), "{dims:?} x {n}: the kernel was not chosen on wgpu");
    let kernel = read(linear(x.clone(), weight.clone(), Some(bias.clone()), activation));
    let fallback = read(linear_fallback(x, weight, Some(bias), activation));
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{dims:?} x {n}, {activation:?}: relative error {error:e}");
}

#[test]
fn kernel_matches_fallback_for_gpt2_decoding() {
    let Some(device) = wgpu() else { return };
    let x = |k, seed| tensor([1, 1, k], seed, 2.0, &device);
    // The four products of a layer: fused q/k/v, attention output, MLP in (with GELU) and out.
    assert_kernel_matches_fallback(x(768, 1), 2304, None, 1);
    assert_kernel_matches_fallback(x(768, 2), 768, None, 2);
    assert_kernel_matches_fallback(x(768, 3), 3072, Some(Activation::GeluTanh), 3);
    assert_kernel_matches_fallback(x(3072, 4), 768, None, 4);
}

#[test]
fn kernel_matches_fallback_for_every_row_count_and_activation() {
    let Some(device) = wgpu() else { return };
    for rows in 1..=LINEAR_MAX_ROWS {
        let x = tensor([rows, 512], 10 + rows as u64, 2.0, &device);
        assert_kernel_matches_fallback(x, 2048, Some(Activation::QuickGelu), 10 + rows as u64);
    }
    let others = [Activation::Gelu, Activation::GeluTanh, Activation::Relu, Activation::Silu];
    for activation in others.map(Some).into_iter().chain([None]) {
        assert_kernel_matches_fallback(tensor([2, 3, 64], 21, 2.0, &device), 256, activation, 21);
    }
}

#[test]
fn kernel_matches_fallback_for_sizes_off_its_tiles() {
    let Some(device) = wgpu() else { return };
    // Inputs not a multiple of the 16 slices, outputs not a multiple of the 64 a workgroup writes.
    assert_kernel_matches_fallback(tensor([3, 100], 31, 2.0, &device), 36, None, 31);
    assert_kernel_matches_fallback(tensor([1, 5], 32, 2.0, &device), 4, Some(Activation::Gelu), 32);
    assert_kernel_matches_fallback(tensor([2, 1], 33, 2.0, &device), 68, None, 33);
}

#[test]
fn kernel_copies_views_first() {
    let Some(device) = wgpu() else { return };
    // A transposed weight, as a checkpoint in the other layout would give, and a sliced input.
    let x = tensor([4, 96], 41, 2.0, &device).narrow(0, 1, 2);
    let weight = tensor([128, 96], 42, 0.1, &device).transpose();
    let bias = tensor([128], 43, 0.5, &device);
    assert!(linear_uses_kernel(&x, &weight, Some(&bias)));
    let kernel = read(linear(x.clone(), weight.clone(), Some(bias.clone()), None));
    let error = relative_error(&kernel, &read(linear_fallback(x, weight, Some(bias), None)));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn more_rows_odd_widths_and_no_bias_take_the_matmul() {
    let Some(device) = wgpu() else { return };
    let cases = [([LINEAR_MAX_ROWS + 1, 64], 128, true), ([2, 64], 30, true), ([2, 64], 128, false)];
    for (shape, n, with_bias) in cases {
        let x = tensor(shape, 51, 2.0, &device);
        let (weight, bias) = layer(64, n, 52, &device);
        let bias = with_bias.then_some(bias);
        assert!(!linear_uses_kernel(&x, &weight, bias.as_ref()), "{shape:?} x {n}, bias {with_bias}");
        let got = read(linear(x.clone(), weight.clone(), bias.clone(), Some(Activation::GeluTanh)));
        let error = relative_error(&got, &read(linear_fallback(x, weight, bias, Some(Activation::GeluTanh))));
        assert!(error <= TOLERANCE, "{shape:?} x {n}: relative error {error:e}");
    }
}

#[test]
fn kernel_on_wgpu_matches_the_cpu_backend() {
    let Some(device) = wgpu() else { return };
    let run = |device: &Device| {
        let (weight, bias) = layer(768, 3072, 61, device);
        linear(tensor([1, 1, 768], 62, 2.0, device), weight, Some(bias), Some(Activation::GeluTanh))
    };
    let cpu = Device::flex();
    let error = relative_error(&read(run(&device)), &read(run(&cpu)));
    assert!(error <= TOLERANCE, "relative error {error:e}");
    let (weight, bias) = layer(768, 3072, 61, &cpu);
    let x = tensor([1, 1, 768], 62, 2.0, &cpu);
    assert!(!linear_uses_kernel(&x, &weight, Some(&bias)));
}

#[test]
fn autodiff_tensors_take_the_fallback_and_get_gradients() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let x = tensor([1, 64], 71, 2.0, &device).require_grad();
    let (weight, bias) = layer(64, 128, 72, &device);
    assert!(!linear_uses_kernel(&x, &weight, Some(&bias)));
    let gradients = linear(x.clone(), weight, Some(bias), Some(Activation::QuickGelu)).sum().backward();
    assert!(read(x.grad(&gradients).expect("no gradient for x")).iter().any(|g| *g != 0.0));
}

#[test]
fn cpu_kernel_matches_fallback_for_every_row_count_layout_and_split() {
    let device = Device::flex();
    // (rows, k, n): every row count the few-row split takes; k split into parts of 16 rows and a
    // remainder, and too short to split; n of one column, and not a multiple of the column blocks;
    // more rows (one gemm call), written column-major for a transposed weight up to 256 rows.
    let mut shapes: Vec<(usize, usize, usize)> = (1..=LINEAR_MAX_ROWS).map(|rows| (rows, 100, 200)).collect();
    shapes.extend([(1, 768, 2304), (3, 5, 37), (2, 67, 1), (1, 130, 17)]);
    shapes.extend([(LINEAR_MAX_ROWS + 1, 100, 200), (40, 33, 1), (256, 64, 96), (257, 64, 96), (300, 20, 7)]);
    for threads in [1, 3, 8] {
        for &(rows, k, n) in &shapes {
            let x = tensor([rows, k], rows as u64, 2.0, &device);
            let (weight, bias) = layer(k, n, 7, &device);
            // The same matrix stored `[n, k]` and read transposed (the other split).
            let transposed = weight.clone().transpose().into_data();
            let viewed = Tensor::<2>::from_data(transposed, &device).transpose();
            for weight in [weight, viewed] {
                assert!(linear_uses_cpu_kernel(&x, &weight), "{rows} x {k} x {n}: the CPU kernel was not chosen");
                let got = on_threads(threads, || read(linear(x.clone(), weight.clone(), Some(bias.clone()), None)));
                let want = read(linear_fallback(x.clone(), weight, Some(bias.clone()), None));
                let error = relative_error(&got, &want);
                assert!(error <= TOLERANCE, "{rows} x {k} x {n} on {threads} threads: relative error {error:e}");
            }
        }
    }
    let (weight, _) = layer(64, 32, 8, &device);
    assert!(!linear_uses_cpu_kernel(&tensor([0, 64], 9, 1.0, &device), &weight));
}

#[test]
fn cpu_kernel_on_many_threads_and_views_matches_fallback() {
    let device = Device::flex();
    // More threads than the rows split evenly into: parts of 20 rows would leave a 40th part past
    // the end of a 768-row weight, and of 17 a 20th past 321 rows.
    for (threads, k) in [(40, 768), (20, 321), (64, 2000)] {
        let x = tensor([2, k], 1, 2.0, &device);
        let (weight, bias) = layer(k, 48, 2, &device);
        let got = on_threads(threads, || read(linear(x.clone(), weight.clone(), Some(bias.clone()), None)));
        let error = relative_error(&got, &read(linear_fallback(x, weight, Some(bias), None)));
        assert!(error <= TOLERANCE, "k {k} on {threads} threads: relative error {error:e}");
    }
    // A weight that starts inside its buffer with rows longer than it, in both layouts, and a
    // sliced input: few rows, and more in both orientations of the gemm call.
    let stored = tensor([80, 90], 4, 0.2, &device);
    let bias = tensor([50], 5, 0.5, &device);
    for rows in [3, 40, 300] {
        let x = tensor([rows + 2, 70], 3, 2.0, &device).narrow(0, 1, rows).narrow(1, 4, 60);
        for weight in [
            stored.clone().narrow(0, 7, 60).narrow(1, 3, 50),
            stored.clone().transpose().narrow(0, 2, 60).narrow(1, 9, 50),
        ] {
            assert!(linear_uses_cpu_kernel(&x, &weight));
            let got = on_threads(3, || read(linear(x.clone(), weight.clone(), Some(bias.clone()), None)));
            let error = relative_error(&got, &read(linear_fallback(x.clone(), weight, Some(bias.clone()), None)));
            assert!(error <= TOLERANCE, "weight view, {rows} rows: relative error {error:e}");
        }
    }
}

/// Under autodiff the CPU kernel's own backward gives the fallback's gradient for a tracked input
/// and a constant weight; a tracked weight takes the fallback and gets its gradient.
#[test]
fn cpu_kernel_under_autodiff_gives_the_fallback_gradient() {
    let device = Device::flex();
    let tracked = device.clone().autodiff();
    for (rows, k, n) in [(1, 100, 70), (LINEAR_MAX_ROWS, 40, 300), (40, 64, 300), (300, 32, 50)] {
        let (weight, bias) = layer(k, n, 11, &device);
        let gradient = |kernel: bool| {
            let x = tensor([rows, k], 12, 2.0, &tracked).require_grad();
            assert!(linear_uses_cpu_kernel(&x, &weight));
            let y = match kernel {
                true => linear(x.clone(), weight.clone(), Some(bias.clone()), Some(Activation::GeluTanh)),
                false => linear_fallback(x.clone(), weight.clone(), Some(bias.clone()), Some(Activation::GeluTanh)),
            };
            let grads = (y * tensor([rows, n], 13, 1.0, &tracked)).sum().backward();
            read(x.grad(&grads).expect("a gradient for x"))
        };
        let got = on_threads(3, || gradient(true));
        let error = relative_error(&got, &gradient(false));
        assert!(error <= TOLERANCE, "{rows} x {k} x {n}: relative error {error:e}");
    }
    let weight = tensor([16, 8], 14, 0.25, &tracked).require_grad();
    let x = tensor([1, 16], 15, 1.0, &tracked);
    assert!(!linear_uses_cpu_kernel(&x, &weight));
    let grads = linear(x, weight.clone(), None, None).sum().backward();
    assert!(read(weight.grad(&grads).expect("a gradient for the weight")).iter().any(|g| *g != 0.0));
}

#[test]
#[should_panic(expected = "do not match")]
fn a_weight_of_another_input_width_is_refused() {
    let device = Device::flex();
    let (weight, bias) = layer(8, 16, 81, &device);
    let _ = linear(tensor([2, 6], 82, 1.0, &device), weight, Some(bias), None);
}

/// LayerNorm parameters away from 1 and 0, so a kernel that skipped either would show.
fn norm(k: usize, seed: u64, device: &Device) -> (Tensor<1>, Option<Tensor<1>>, f64) {
    let gamma = tensor([k], seed, 0.5, device) + 1.0;
    (gamma, Some(tensor([k], seed + 1, 0.5, device)), 1e-5)
}

fn assert_variants_match_fallbacks<const D: usize>(x: Tensor<D>, n: usize, seed: u64) {
    let device = x.device();
    let dims = x.dims();
    let k = dims[D - 1];
    let (weight, bias) = layer(k, n, seed, &device);
    let mut out = dims;
    out[D - 1] = n;
    let residual = tensor(out, seed + 2, 3.0, &device);
    let (gamma, beta, epsilon) = norm(k, seed + 3, &device);
    let norm = || (gamma.clone(), beta.clone(), epsilon);

    assert!(linear_residual_uses_kernel(&x, &weight, Some(&bias), &residual), "{dims:?} x {n}: residual");
    let kernel = read(linear_residual(x.clone(), weight.clone(), Some(bias.clone()), residual.clone()));
    let fallback = read(linear_residual_fallback(x.clone(), weight.clone(), Some(bias.clone()), residual));
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{dims:?} x {n}, residual: relative error {error:e}");

    assert!(layer_norm_linear_uses_kernel(&x, (&gamma, beta.as_ref()), &weight, Some(&bias)), "{dims:?} x {n}: normed");
    for activation in [None, Some(Activation::GeluTanh)] {
        let kernel = read(layer_norm_linear(x.clone(), norm(), weight.clone(), Some(bias.clone()), activation));
        let fallback =
            read(layer_norm_linear_fallback(x.clone(), norm(), weight.clone(), Some(bias.clone()), activation));
        let error = relative_error(&kernel, &fallback);
        assert!(error <= TOLERANCE, "{dims:?} x {n}, normed, {activation:?}: relative error {error:e}");
    }
}

#[test]
fn variants_match_fallbacks_for_gpt2_decoding() {
    let Some(device) = wgpu() else { return };
    // Normed: fused q/k/v and the MLP's first layer; residual: the two output projections.
    assert_variants_match_fallbacks(tensor([1, 1, 768], 91, 2.0, &device), 2304, 91);
    assert_variants_match_fallbacks(tensor([1, 1, 3072], 92, 2.0, &device), 768, 92);
}

#[test]
fn variants_match_fallbacks_for_every_row_count_and_off_tile_sizes() {
    let Some(device) = wgpu() else { return };
    for rows in 1..=LINEAR_MAX_ROWS {
        assert_variants_match_fallbacks(tensor([rows, 100], 100 + rows as u64, 2.0, &device), 36, 100 + rows as u64);
    }
    // Rows with a mean of 30 and a spread of 1: E[x^2] - mean^2 would lose about 3e-4 of the
    // variance in f32, so the variance must be taken of the centred row, as the fallback does.
    let offset = tensor([2, 1, 256], 111, 1.0, &device) + 30.0;
    assert_variants_match_fallbacks(offset, 128, 111);
}

#[test]
fn variants_outside_the_wgsl_kernel_match_their_fallbacks() {
    let device = Device::flex();
    let x = tensor([2, 64], 121, 2.0, &device);
    let (weight, bias) = layer(64, 32, 122, &device);
    let residual = tensor([2, 32], 123, 1.0, &device);
    let (gamma, beta, epsilon) = norm(64, 124, &device);
    // On the CPU backend the variants are `linear` after or before the rest, its product split.
    assert!(!linear_residual_uses_kernel(&x, &weight, Some(&bias), &residual));
    assert!(!layer_norm_linear_uses_kernel(&x, (&gamma, beta.as_ref()), &weight, Some(&bias)));
    assert!(linear_uses_cpu_kernel(&x, &weight));
    let got = read(linear_residual(x.clone(), weight.clone(), Some(bias.clone()), residual.clone()));
    let want = read(linear_residual_fallback(x.clone(), weight.clone(), Some(bias.clone()), residual));
    let error = relative_error(&got, &want);
    assert!(error <= TOLERANCE, "residual on the CPU: relative error {error:e}");
    let layer_norm = (gamma, beta, epsilon);
    let got = read(layer_norm_linear(x.clone(), layer_norm.clone(), weight.clone(), Some(bias.clone()), None));
    let error = relative_error(&got, &read(layer_norm_linear_fallback(x, layer_norm, weight, Some(bias), None)));
    assert!(error <= TOLERANCE, "LayerNorm on the CPU: relative error {error:e}");

    let Some(device) = wgpu() else { return };
    // Too many rows, and a LayerNorm without beta: the matmul path, still the same values.
    let x = tensor([LINEAR_MAX_ROWS + 1, 64], 125, 2.0, &device);
    let (weight, bias) = layer(64, 32, 126, &device);
    let (gamma, _, epsilon) = norm(64, 127, &device);
    let residual = tensor([LINEAR_MAX_ROWS + 1, 32], 128, 1.0, &device);
    assert!(!linear_residual_uses_kernel(&x, &weight, Some(&bias), &residual));
    let got = read(linear_residual(x.clone(), weight.clone(), Some(bias.clone()), residual.clone()));
    let error = relative_error(&got, &read(linear_residual_fallback(x, weight, Some(bias), residual)));
    assert!(error <= TOLERANCE, "residual above the row limit: relative error {error:e}");
    let x = tensor([2, 64], 129, 2.0, &device);
    let (weight, bias) = layer(64, 32, 130, &device);
    assert!(!layer_norm_linear_uses_kernel(&x, (&gamma, None), &weight, Some(&bias)));
    let layer_norm = (gamma, None, epsilon);
    let got = read(layer_norm_linear(x.clone(), layer_norm.clone(), weight.clone(), Some(bias.clone()), None));
    let error = relative_error(&got, &read(layer_norm_linear_fallback(x, layer_norm, weight, Some(bias), None)));
    assert!(error <= TOLERANCE, "LayerNorm without beta: relative error {error:e}");
}

#[test]
fn variants_under_autodiff_get_gradients_through_every_input() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let x = tensor([1, 64], 131, 2.0, &device).require_grad();
    let (weight, bias) = layer(64, 32, 132, &device);
    let residual = tensor([1, 32], 133, 1.0, &device).require_grad();
    // The second layer reads the first's 32 outputs.
    let gamma = (tensor([32], 134, 0.5, &device) + 1.0).detach().require_grad();
    let beta = tensor([32], 135, 0.5, &device);
    assert!(!linear_residual_uses_kernel(&x, &weight, Some(&bias), &residual));
    let y = linear_residual(x.clone(), weight.clone(), Some(bias.clone()), residual.clone());
    let z = layer_norm_linear(y, (gamma.clone(), Some(beta), 1e-5), weight.transpose(), None, None);
    let gradients = (z.clone() * z).sum().backward();
    let gradients = [
        ("x", x.grad(&gradients).map(read)),
        ("residual", residual.grad(&gradients).map(read)),
        ("gamma", gamma.grad(&gradients).map(read)),
    ];
    for (name, gradient) in gradients {
        let gradient = gradient.unwrap_or_else(|| panic!("no gradient for {name}"));
        assert!(gradient.iter().any(|g| *g != 0.0), "zero gradient for {name}");
    }
}

#[test]
#[should_panic(expected = "is not the output's")]
fn a_residual_of_another_shape_is_refused() {
    let device = Device::flex();
    let (weight, bias) = layer(8, 16, 141, &device);
    let _ = linear_residual(tensor([2, 8], 142, 1.0, &device), weight, Some(bias), tensor([2, 8], 143, 1.0, &device));
}
