//! 8-bit matrices: the packed layout against a host reference, the CPU backend's kernel and the
//! WGSL ones (direct and expanded, forward and backward) against the expanded fallback, and the
//! dense layers of 8-bit weights (`q8_linear`, `q8_linear_residual`) against theirs.
//!
//! Parity is measured as `max |a - b| / max |b|` over the whole output.

use crate::support::{read, relative_error, tensor, values, wgpu};
use burn::prelude::*;
use glimpse_kernels::{
    Activation, Q8_BLOCK, Q8_DIRECT_MAX_ROWS, q8_dequantize, q8_dequantize_fallback, q8_linear, q8_linear_fallback,
    q8_linear_residual, q8_linear_residual_fallback, q8_linear_residual_uses_kernel, q8_linear_uses_kernel, q8_matmul,
    q8_matmul_fallback, q8_matmul_uses_kernel, q8_pack, q8_padded,
};

const TOLERANCE: f32 = 1e-4;

/// The CPU backend, and wgpu where this run covers it.
fn devices() -> Vec<Device> {
    let mut devices = vec![Device::flex()];
    devices.extend(wgpu());
    devices
}

/// `[n, k]` bytes over the whole range (both extremes included) and positive scales.
fn matrix(n: usize, k: usize, seed: u64) -> (Vec<i8>, Vec<f32>) {
    let mut bytes: Vec<i8> = values(n * k, seed, 127.99).into_iter().map(|v| v.trunc() as i8).collect();
    bytes[0] = -127;
    bytes[n * k - 1] = 127;
    let scales = values(n * k.div_ceil(Q8_BLOCK), seed + 1, 0.01).into_iter().map(|v| v.abs() + 1e-3).collect();
    (bytes, scales)
}

/// `scale * byte` for every weight, in `[n, k]` order.
fn expanded(bytes: &[i8], scales: &[f32], n: usize, k: usize) -> Vec<f32> {
    let blocks = k.div_ceil(Q8_BLOCK);
    (0..n * k).map(|i| scales[i / k * blocks + i % k / Q8_BLOCK] * bytes[i] as f32).collect()
}

#[test]
fn dequantizing_gives_back_every_weight_on_every_backend() {
    // k a whole number of blocks, k with a partial block, k not a multiple of four.
    for (n, k) in [(3, 64), (5, 40), (2, 7)] {
        let (bytes, scales) = matrix(n, k, n as u64);
        let want = expanded(&bytes, &scales, n, k);
        for device in devices() {
            let (packed, block_scales) = q8_pack(&bytes, scales.clone(), n, k, &device);
            assert_eq!(packed.dims(), [n, q8_padded(k) / 4]);
            for (path, got) in [
                ("dequantize", q8_dequantize(packed.clone(), block_scales.clone())),
                ("fallback", q8_dequantize_fallback(packed.clone(), block_scales.clone())),
            ] {
                let got = read(got);
                let padded = q8_padded(k);
                for row in 0..n {
                    assert_eq!(&got[row * padded..][..k], &want[row * k..][..k], "{path}, {n} x {k}, row {row}");
                    assert!(got[row * padded + k..][..padded - k].iter().all(|&v| v == 0.0), "{path}: padding");
                }
            }
        }
    }
}

/// The kernel `device` takes (the CPU backend's, or the WGSL one on wgpu) against the fallback.
fn assert_kernel_matches_fallback(device: &Device, rows: usize, n: usize, k: usize, seed: u64) {
    let (bytes, scales) = matrix(n, k, seed);
    let (packed, scales) = q8_pack(&bytes, scales, n, k, device);
    let x = tensor([1, rows, k], seed + 7, 2.0, device);
    assert!(q8_matmul_uses_kernel(&x, &packed, &scales), "{device:?}: no kernel was chosen for {rows} rows");
    let kernel = read(q8_matmul(x.clone(), packed.clone(), scales.clone()));
    let fallback = read(q8_matmul_fallback(x, packed, scales));
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{device:?}, {rows} rows, {n} x {k}: relative error {error:e}");
}

#[test]
fn the_cpu_kernel_matches_the_expanded_product() {
    // GPT-2 small's decode shapes (one row; c_attn and the MLP's way back), then odd sizes, then
    // more rows than the direct product takes (the kernel expands the matrix itself), up to 256
    // written column-major, and more.
    let cpu = Device::flex();
    assert_kernel_matches_fallback(&cpu, 1, 2304, 768, 1);
    assert_kernel_matches_fallback(&cpu, 1, 768, 3072, 2);
    assert_kernel_matches_fallback(&cpu, Q8_DIRECT_MAX_ROWS, 100, 70, 3);
    assert_kernel_matches_fallback(&cpu, 3, 1, 5, 4);
    assert_kernel_matches_fallback(&cpu, Q8_DIRECT_MAX_ROWS + 1, 100, 70, 5);
    assert_kernel_matches_fallback(&cpu, 50, 64, 45, 6);
    // Past the rows whose product is written column-major.
    assert_kernel_matches_fallback(&cpu, 300, 64, 45, 8);
    // A matrix expanded in three bands of rows (4 MiB of f32 each, the last one partial).
    assert_kernel_matches_fallback(&cpu, Q8_DIRECT_MAX_ROWS + 2, 600, 4100, 7);
}

#[test]
fn the_product_equals_the_host_reference() {
    // Direct, through the expanded matrix, and on wgpu more outputs than one dispatch dimension
    // takes (expanded too, though a single row).
    for (rows, n, k) in [(2, 9, 45), (Q8_DIRECT_MAX_ROWS + 3, 9, 45), (1, 70_000, 32)] {
        product_equals_the_host_reference(rows, n, k);
    }
}

/// `x @ w^T` against the product computed on the host, on every backend.
fn product_equals_the_host_reference(rows: usize, n: usize, k: usize) {
    let (bytes, scales) = matrix(n, k, 11);
    let weights = expanded(&bytes, &scales, n, k);
    let x = values(rows * k, 12, 1.0);
    let want: Vec<f32> =
        (0..rows * n).map(|i| (0..k).map(|c| x[i / n * k + c] * weights[i % n * k + c]).sum()).collect();
    for device in devices() {
        let (packed, block_scales) = q8_pack(&bytes, scales.clone(), n, k, &device);
        let input = Tensor::<3>::from_data(TensorData::new(x.clone(), [1, rows, k]), &device);
        let got = read(q8_matmul(input, packed, block_scales));
        let error = relative_error(&got, &want);
        assert!(error <= TOLERANCE, "{device:?}, {rows} rows: relative error {error:e}");
    }
}

/// Under autodiff the kernels' own backward gives the fallback's gradient, on each backend, for few
/// rows and many; on the CPU backend with the matrix expanded in one band of rows or in three.
#[test]
fn gradients_reach_the_input() {
    for (device, (rows, n, k)) in devices().into_iter().flat_map(|device| {
        // The last expands more weights than one dispatch dimension of the wgpu kernel covers
        // (65535 workgroups of 64), and in five bands on the CPU backend.
        [
            (1, 6, 45),
            (Q8_DIRECT_MAX_ROWS + 3, 6, 45),
            (1, 600, 4100),
            (Q8_DIRECT_MAX_ROWS + 3, 600, 4100),
            (1, 1100, 4100),
        ]
        .map(|shape| (device.clone(), shape))
    }) {
        let (bytes, scale_values) = matrix(n, k, 5);
        let (packed, scales) = q8_pack(&bytes, scale_values, n, k, &device);
        let tracked = device.clone().autodiff();
        let gradient = |kernel: bool| {
            let x = tensor([1, rows, k], 2, 1.0, &tracked).require_grad();
            assert!(q8_matmul_uses_kernel(&x, &packed, &scales));
            let weights = tensor([1, rows, n], 9, 1.0, &tracked);
            // The reference expands the matrix in plain Burn operations, independently of the
            // kernels (the fallback's `q8_dequantize` is one on both backends).
            let y = if kernel {
                q8_matmul(x.clone(), packed.clone(), scales.clone())
            } else {
                let weights = q8_dequantize_fallback(packed.clone(), scales.clone()).narrow(1, 0, k);
                x.clone().matmul(weights.transpose().unsqueeze::<3>())
            };
            let grads = (y * weights).sum().backward();
            read(x.grad(&grads).expect("a gradient for x"))
        };
        let (kernel, fallback) = (gradient(true), gradient(false));
        assert!(relative_error(&kernel, &fallback) <= TOLERANCE, "{device:?}, {rows} rows, {n} x {k}");
    }
}

#[test]
fn the_wgsl_kernel_matches_the_expanded_product() {
    // GPT-2 small's decode shapes, a k that is not a multiple of 4 (a partial word and block),
    // the most rows the direct kernel takes; beyond them the matrix expanded by the dequantizing
    // kernel.
    let Some(gpu) = wgpu() else { return };
    assert_kernel_matches_fallback(&gpu, 1, 2304, 768, 21);
    assert_kernel_matches_fallback(&gpu, 1, 768, 3072, 22);
    assert_kernel_matches_fallback(&gpu, 3, 100, 70, 23);
    assert_kernel_matches_fallback(&gpu, Q8_DIRECT_MAX_ROWS, 9, 5, 24);
    // Above them the fallback runs the same dequantizing kernel: this checks the product around it
    // (the kernel itself: `dequantizing_gives_back_every_weight_on_every_backend`).
    assert_kernel_matches_fallback(&gpu, Q8_DIRECT_MAX_ROWS + 1, 100, 70, 25);
}

/// `q8_linear` and `q8_linear_residual` on `x` `[..., k]` against their fallbacks, asserting which
/// path they take (`fused`: the WGSL variants).
fn assert_layers_match_fallback<const D: usize>(
    x: Tensor<D>,
    n: usize,
    activation: Option<Activation>,
    fused: bool,
    seed: u64,
) {
    let (dims, device) = (x.dims(), x.device());
    let k = dims[D - 1];
    // Another stream than x's: with the same seed x's first row would follow the first weights.
    let (bytes, scales) = matrix(n, k, seed + 7);
    let (packed, scales) = q8_pack(&bytes, scales, n, k, &device);
    let bias = tensor([n], seed + 1, 0.5, &device);
    let mut out = dims;
    out[D - 1] = n;
    let residual = tensor(out, seed + 2, 1.0, &device);
    assert_eq!(q8_linear_uses_kernel(&x, &packed, &scales, Some(&bias)), fused, "{dims:?} x {n}");
    assert_eq!(q8_linear_residual_uses_kernel(&x, &packed, &scales, Some(&bias), &residual), fused, "{dims:?} x {n}");
    let layer = q8_linear(x.clone(), packed.clone(), scales.clone(), Some(bias.clone()), activation);
    assert_eq!(layer.dims(), out);
    let want = q8_linear_fallback(x.clone(), packed.clone(), scales.clone(), Some(bias.clone()), activation);
    let error = relative_error(&read(layer), &read(want));
    assert!(error <= TOLERANCE, "{device:?}, {dims:?} x {n}, {activation:?}: relative error {error:e}");
    let summed = q8_linear_residual(x.clone(), packed.clone(), scales.clone(), Some(bias.clone()), residual.clone());
    let want = q8_linear_residual_fallback(x, packed, scales, Some(bias), residual);
    let error = relative_error(&read(summed), &read(want));
    assert!(error <= TOLERANCE, "{device:?}, {dims:?} x {n}, residual: relative error {error:e}");
}

#[test]
fn dense_layers_of_8_bit_weights_match_their_fallbacks() {
    // GPT-2 small's four products of a decoding step (the MLP's first with its GELU), every row
    // count the fused kernels take and every activation, a k with a partial word and block.
    let Some(gpu) = wgpu() else { return };
    let x = |shape: [usize; 3], seed| tensor(shape, seed, 2.0, &gpu);
    assert_layers_match_fallback(x([1, 1, 768], 31), 2304, None, true, 31);
    assert_layers_match_fallback(x([1, 1, 768], 32), 768, None, true, 32);
    assert_layers_match_fallback(x([1, 1, 768], 33), 3072, Some(Activation::GeluTanh), true, 33);
    assert_layers_match_fallback(x([1, 1, 3072], 34), 768, None, true, 34);
    for rows in 1..=Q8_DIRECT_MAX_ROWS {
        assert_layers_match_fallback(x([1, rows, 70], 40 + rows as u64), 9, Some(Activation::QuickGelu), true, 40);
    }
    let activations = [Activation::Gelu, Activation::Relu, Activation::Silu].map(Some);
    for activation in activations.into_iter().chain([None]) {
        assert_layers_match_fallback(tensor([2, 2, 45], 51, 2.0, &gpu), 33, activation, true, 51);
    }
}

#[test]
fn dense_layers_of_8_bit_weights_elsewhere_take_the_product_and_the_bias_apart() {
    // More rows than the fused kernels take, and no bias, on wgpu; the CPU backend; autodiff, whose
    // input gets the fallback's gradient (through q8_matmul's kernel and its own backward).
    if let Some(gpu) = wgpu() {
        let x = tensor([Q8_DIRECT_MAX_ROWS + 1, 40], 61, 2.0, &gpu);
        assert_layers_match_fallback(x, 24, Some(Activation::GeluTanh), false, 61);
        let x = tensor([2, 40], 66, 2.0, &gpu);
        let (bytes, scales) = matrix(24, 40, 67);
        let (packed, scales) = q8_pack(&bytes, scales, 24, 40, &gpu);
        assert!(!q8_linear_uses_kernel(&x, &packed, &scales, None));
        let got = q8_linear(x.clone(), packed.clone(), scales.clone(), None, Some(Activation::GeluTanh));
        let want = q8_linear_fallback(x.clone(), packed.clone(), scales.clone(), None, Some(Activation::GeluTanh));
        let error = relative_error(&read(got), &read(want));
        assert!(error <= TOLERANCE, "no bias: relative error {error:e}");
        let residual = tensor([2, 24], 68, 1.0, &gpu);
        let got = q8_linear_residual(x.clone(), packed.clone(), scales.clone(), None, residual.clone());
        let error = relative_error(&read(got), &read(q8_linear_residual_fallback(x, packed, scales, None, residual)));
        assert!(error <= TOLERANCE, "no bias, residual: relative error {error:e}");
    }
    assert_layers_match_fallback(tensor([3, 40], 65, 2.0, &Device::flex()), 24, None, false, 65);
    type Layer = fn(Tensor<3>, Tensor<2, Int>, Tensor<2>, Option<Tensor<1>>, Option<Activation>) -> Tensor<3>;
    for device in devices() {
        let tracked = device.clone().autodiff();
        let (bytes, scales) = matrix(24, 40, 63);
        let (packed, scales) = q8_pack(&bytes, scales, 24, 40, &device);
        let bias = tensor([24], 64, 0.5, &device);
        let weights = tensor([1, 2, 24], 69, 1.0, &tracked);
        let gradient = |layer: Layer| {
            let x = tensor([1, 2, 40], 62, 2.0, &tracked).require_grad();
            assert!(!q8_linear_uses_kernel(&x, &packed, &scales, Some(&bias)));
            // Not the exact GELU, whose derivative Burn's own backward takes from the tanh form.
            let y = layer(x.clone(), packed.clone(), scales.clone(), Some(bias.clone()), Some(Activation::GeluTanh));
            read(x.grad(&(y * weights.clone()).sum().backward()).expect("a gradient for x"))
        };
        let error = relative_error(&gradient(q8_linear), &gradient(q8_linear_fallback));
        assert!(error <= TOLERANCE, "{device:?}, autodiff: relative error {error:e}");
    }
}
