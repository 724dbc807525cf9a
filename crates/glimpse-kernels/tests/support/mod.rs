//! Devices and inputs shared by the kernel tests.

use std::sync::OnceLock;

use burn::prelude::*;
use burn::tensor::wgpu::WgpuBackend;

/// wgpu on Vulkan (lavapipe in CI), set up once per process, where this run covers it
/// (`glimpse_test_device`); `None` otherwise, and a kernel test then has nothing to test. Pinned
/// to Vulkan: wgpu's automatic choice may fall back to OpenGL, and a parity test on GL would say
/// nothing about Vulkan.
pub fn wgpu() -> Option<Device> {
    static DEVICE: OnceLock<Option<Device>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            glimpse_test_device::wgpu(|| {
                Device::wgpu_options().graphics_api(WgpuBackend::Vulkan).init().map_err(|e| e.to_string())
            })
        })
        .clone()
}

/// Deterministic values in [-scale, scale), the same on every device and run.
pub fn values(count: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let unit = (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

pub fn tensor<const D: usize>(shape: [usize; D], seed: u64, scale: f32, device: &Device) -> Tensor<D> {
    let count = shape.iter().product();
    Tensor::from_data(TensorData::new(values(count, seed, scale), shape), device)
}

pub fn read<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().unwrap()
}

/// `max |actual - expected| / max |expected|`: the error relative to the output's scale, so
/// entries near zero are not held to an impossible relative precision.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    // `f32::max` skips NaN, so a NaN would otherwise pass unseen.
    assert!(actual.iter().chain(expected).all(|x| x.is_finite()), "non-finite output");
    let scale = expected.iter().fold(0.0f32, |max, x| max.max(x.abs()));
    let worst = actual.iter().zip(expected).fold(0.0f32, |max, (a, e)| max.max((a - e).abs()));
    assert!(scale > 0.0, "all-zero reference");
    worst / scale
}

/// `f` on a rayon pool of `threads` threads: the CPU backend's kernels split their work by the
/// pool they run in, so each split is tested whatever the machine's core count.
pub fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool").install(f)
}
