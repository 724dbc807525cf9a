//! `masked_pool`: the WGSL kernels (forward and gradient with respect to the masks) against the
//! Burn fallback, and the choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output or
//! gradient.

use crate::support::{read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{masked_pool, masked_pool_fallback, masked_pool_uses_kernel};

const TOLERANCE: f32 = 1e-4;

type Pool = fn(Tensor<2>, Tensor<2>) -> Tensor<2>;

/// Soft masks `[k, n]` with weights in [0, 1].
fn masks(k: usize, n: usize, seed: u64, device: &Device) -> Tensor<2> {
    (tensor([k, n], seed, 1.0, device) + 1.0) / 2.0
}

/// Unit-norm frame embeddings `[n, d]`, as CLIP gives them.
fn frames(n: usize, d: usize, seed: u64, device: &Device) -> Tensor<2> {
    let frames = tensor([n, d], seed, 1.0, device);
    frames.clone() / frames.square().sum_dim(1).sqrt()
}

fn assert_close(kernel: Vec<f32>, fallback: Vec<f32>, what: &str) {
    let error = relative_error(&kernel, &fallback);
    assert!(error <= TOLERANCE, "{what}: relative error {error:e}");
}

#[test]
fn forward_matches_fallback() {
    let Some(device) = wgpu() else { return };
    for (k, n, d) in [(4, 32, 512), (1, 7, 768), (6, 300, 64), (3, 100, 2048), (2, 1, 5)] {
        let (masks, frames) = (masks(k, n, 1, &device), frames(n, d, 2, &device));
        assert!(masked_pool_uses_kernel(&masks, &frames), "k {k}, n {n}, d {d}: kernel not chosen");
        let kernel = read(masked_pool(masks.clone(), frames.clone()));
        assert_close(kernel, read(masked_pool_fallback(masks, frames)), &format!("k {k}, n {n}, d {d}"));
    }
}

#[test]
fn forward_matches_fallback_for_strided_inputs() {
    let Some(device) = wgpu() else { return };
    let (k, n, d) = (3, 40, 512);
    let (masks, frames) = (masks(n, k, 3, &device).swap_dims(0, 1), frames(d, n, 4, &device).swap_dims(0, 1));
    assert!(masked_pool_uses_kernel(&masks, &frames));
    let kernel = read(masked_pool(masks.clone(), frames.clone()));
    assert_close(kernel, read(masked_pool_fallback(masks, frames)), "strided");
}

#[test]
fn forward_matches_fallback_for_an_empty_mask() {
    // A mask of zeros: its mass is clamped to 1e-6 and its pooled vector (zero) to norm 1e-12.
    let Some(device) = wgpu() else { return };
    let masks = Tensor::cat(vec![masks(2, 16, 5, &device), Tensor::zeros([1, 16], &device)], 0);
    let frames = frames(16, 64, 6, &device);
    let kernel = read(masked_pool(masks.clone(), frames.clone()));
    assert_close(kernel, read(masked_pool_fallback(masks, frames)), "empty mask");
}

/// `(loss, dloss/dmasks)` for `pool`: the inside/outside contrast of the alignment loop
/// (`glimpse-align`'s `pool_with_contrast`), which pools `masks` and `1 - masks`, plus a
/// random projection `target` `[d, k]` of the pooled moments so no gradient entry is trivial.
/// The pooled moments are used transposed only, so their gradient reaches `pool` as a
/// transposed view.
fn loss_and_gradient(pool: Pool, masks: Tensor<2>, frames: Tensor<2>, target: Tensor<2>) -> (Vec<f32>, Vec<f32>) {
    let masks = masks.require_grad();
    let inside = pool(masks.clone(), frames.clone()).swap_dims(0, 1);
    let outside = pool(masks.clone().neg() + 1.0, frames).swap_dims(0, 1);
    let loss = (inside.clone() * outside).sum_dim(0).mean() + (inside * target).sum();
    let gradients = loss.backward();
    let gradient = read(masks.grad(&gradients).expect("no gradient for the masks"));
    (read(loss), gradient)
}

#[test]
fn gradient_matches_fallback() {
    // Frames live on the plain device (constants in the graph), as the model's embeddings do.
    let Some(plain) = wgpu() else { return };
    for device in [plain.clone().autodiff(), plain.clone().autodiff().gradient_checkpointing()] {
        for (k, n, d) in [(4, 32, 512), (1, 7, 768), (5, 150, 64)] {
            let masks = masks(k, n, 5, &device);
            let (frames, target) = (frames(n, d, 6, &plain), tensor([d, k], 7, 1.0, &device));
            assert!(masked_pool_uses_kernel(&masks, &frames));
            let what = format!("k {k}, n {n}, d {d}, {device:?}");
            let (kernel_loss, kernel) = loss_and_gradient(masked_pool, masks.clone(), frames.clone(), target.clone());
            let (fallback_loss, fallback) = loss_and_gradient(masked_pool_fallback, masks, frames, target);
            assert_close(kernel_loss, fallback_loss, &format!("loss, {what}"));
            assert_close(kernel, fallback, &format!("gradient, {what}"));
        }
    }
}

#[test]
fn untracked_frames_on_the_autodiff_device_use_the_kernel() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let (masks, frames, target) =
        (masks(3, 20, 8, &device), frames(20, 64, 9, &device), tensor([64, 3], 10, 1.0, &device));
    assert!(masked_pool_uses_kernel(&masks, &frames));
    let (_, kernel) = loss_and_gradient(masked_pool, masks.clone(), frames.clone(), target.clone());
    let (_, fallback) = loss_and_gradient(masked_pool_fallback, masks, frames, target);
    assert_close(kernel, fallback, "gradient");
}

#[test]
fn tracked_frames_take_the_fallback_and_get_gradients() {
    let Some(device) = wgpu() else { return };
    let device = device.autodiff();
    let (masks, frames) = (masks(2, 10, 11, &device), frames(10, 32, 12, &device).require_grad());
    assert!(!masked_pool_uses_kernel(&masks, &frames));
    let gradients = masked_pool(masks, frames.clone()).sum().backward();
    assert!(frames.grad(&gradients).is_some(), "no gradient for the frames");
}

#[test]
fn cpu_tensors_take_the_fallback() {
    let device = Device::flex();
    let (masks, frames) = (masks(4, 32, 13, &device), frames(32, 512, 14, &device));
    assert!(!masked_pool_uses_kernel(&masks, &frames));
    assert_eq!(
        read(masked_pool(masks.clone(), frames.clone())),
        read(masked_pool_fallback(masks.clone(), frames.clone()))
    );

    let device = device.autodiff();
    let (masks, frames) = (masks.autodiff(), frames.autodiff());
    let target = tensor([512, 4], 15, 1.0, &device);
    assert!(!masked_pool_uses_kernel(&masks, &frames));
    let dispatched = loss_and_gradient(masked_pool, masks.clone(), frames.clone(), target.clone());
    assert_eq!(dispatched, loss_and_gradient(masked_pool_fallback, masks, frames, target));
}

#[test]
fn kernel_on_wgpu_matches_fallback_on_cpu() {
    let Some(device) = wgpu() else { return };
    let (k, n, d) = (4, 32, 512);
    let gradient = |device: Device, pool: Pool| {
        let ad = device.clone().autodiff();
        loss_and_gradient(pool, masks(k, n, 16, &ad), frames(n, d, 17, &device), tensor([d, k], 18, 1.0, &ad)).1
    };
    assert_close(gradient(device, masked_pool), gradient(Device::flex(), masked_pool_fallback), "gradient");
}

#[test]
fn frame_dims_beyond_the_backward_kernel_take_the_fallback() {
    let Some(device) = wgpu() else { return };
    let (masks, frames) = (masks(2, 5, 19, &device), frames(5, 2049, 20, &device));
    assert!(!masked_pool_uses_kernel(&masks, &frames));
    assert_eq!(read(masked_pool(masks.clone(), frames.clone())), read(masked_pool_fallback(masks, frames)));
}
