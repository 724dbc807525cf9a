//! `matmul_t`: the WGSL kernel and the CPU backend's product against the Burn fallback, and the
//! choice between them.
//!
//! Parity is measured as `max |kernel - fallback| / max |fallback|` over the whole output.

use crate::support::{on_threads, read, relative_error, tensor, wgpu};
use burn::prelude::*;
use glimpse_kernels::{MATMUL_T_MAX_ROWS, matmul_t, matmul_t_fallback, matmul_t_uses_cpu_kernel, matmul_t_uses_kernel};

const TOLERANCE: f32 = 1e-4;

fn assert_kernel_matches_fallback(x: Tensor<3>, w: Tensor<2>) {
    let (x_dims, w_dims) = (x.dims(), w.dims());
    assert!(matmul_t_uses_kernel(&x, &w), "{x_dims:?} x {w_dims:?}: the kernel was not chosen on wgpu");
    let kernel = read(matmul_t(x.clone(), w.clone()));
    let error = relative_error(&kernel, &read(matmul_t_fallback(x, w)));
    assert!(error <= TOLERANCE, "{x_dims:?} x {w_dims:?}: relative error {error:e}");
}

#[test]
fn kernel_matches_fallback_for_an_lm_head() {
    let Some(device) = wgpu() else { return };
    // A shard of GPT-2's tied head (its 50257 rows come in shards of at most 43690).
    assert_kernel_matches_fallback(tensor([1, 1, 768], 1, 2.0, &device), tensor([43690, 768], 2, 0.1, &device));
}

#[test]
fn kernel_matches_fallback_for_every_row_count() {
    let Some(device) = wgpu() else { return };
    let w = tensor([1000, 96], 11, 0.5, &device);
    for rows in 1..=MATMUL_T_MAX_ROWS {
        assert_kernel_matches_fallback(tensor([rows, 1, 96], 12 + rows as u64, 2.0, &device), w.clone());
    }
    assert_kernel_matches_fallback(tensor([2, 3, 96], 21, 2.0, &device), w);
}

#[test]
fn kernel_matches_fallback_for_sizes_off_its_tiles() {
    let Some(device) = wgpu() else { return };
    // Outputs not a multiple of the 16 a workgroup writes; inputs shorter than its 16 lanes' vec4s.
    assert_kernel_matches_fallback(tensor([1, 1, 4], 31, 2.0, &device), tensor([17, 4], 32, 0.5, &device));
    assert_kernel_matches_fallback(tensor([1, 2, 100], 33, 2.0, &device), tensor([5, 100], 34, 0.5, &device));
}

#[test]
fn kernel_matches_fallback_beyond_one_dispatch_dimension() {
    let Some(device) = wgpu() else { return };
    // 65535 workgroups of 16 outputs hold 1048560: a narrow table with more rows than that.
    assert_kernel_matches_fallback(tensor([1, 1, 4], 41, 2.0, &device), tensor([1_100_000, 4], 42, 0.5, &device));
}

#[test]
fn kernel_copies_views_first() {
    let Some(device) = wgpu() else { return };
    let x = tensor([1, 4, 64], 51, 2.0, &device).narrow(1, 1, 2);
    let w = tensor([64, 300], 52, 0.5, &device).transpose();
    assert_kernel_matches_fallback(x, w);
}

#[test]
fn kernel_on_wgpu_matches_the_cpu_backend() {
    let Some(device) = wgpu() else { return };
    let run = |device: &Device| matmul_t(tensor([1, 1, 512], 61, 2.0, device), tensor([4000, 512], 62, 0.1, device));
    let error = relative_error(&read(run(&device)), &read(run(&Device::flex())));
    assert!(error <= TOLERANCE, "relative error {error:e}");
}

#[test]
fn cpu_kernel_matches_fallback_and_gives_its_gradient() {
    let cpu = Device::flex();
    let w = tensor([4000, 96], 71, 0.1, &cpu);
    for threads in [1, 3] {
        for x in [tensor([1, 1, 96], 72, 2.0, &cpu), tensor([2, 4, 96], 73, 2.0, &cpu)] {
            assert!(matmul_t_uses_cpu_kernel(&x, &w) && !matmul_t_uses_kernel(&x, &w));
            let got = on_threads(threads, || read(matmul_t(x.clone(), w.clone())));
            let error = relative_error(&got, &read(matmul_t_fallback(x.clone(), w.clone())));
            assert!(error <= TOLERANCE, "{:?} on {threads} threads: relative error {error:e}", x.dims());
        }
    }
    // More rows: one gemm call, the product written column-major up to 256 rows.
    for x in [tensor([MATMUL_T_MAX_ROWS + 1, 1, 96], 74, 2.0, &cpu), tensor([3, 100, 96], 74, 2.0, &cpu)] {
        assert!(matmul_t_uses_cpu_kernel(&x, &w));
        let error = relative_error(&read(matmul_t(x.clone(), w.clone())), &read(matmul_t_fallback(x, w.clone())));
        assert!(error <= TOLERANCE, "more rows: relative error {error:e}");
    }
    // A tracked input and a constant weight: the kernel's backward gives the fallback's gradient.
    let tracked = cpu.autodiff();
    for t in [3, 30] {
        let gradient = |kernel: bool| {
            let x = tensor([1, t, 96], 75, 2.0, &tracked).require_grad();
            let y = if kernel { matmul_t(x.clone(), w.clone()) } else { matmul_t_fallback(x.clone(), w.clone()) };
            let grads = (y * tensor([1, t, 4000], 76, 1.0, &tracked)).sum().backward();
            read(x.grad(&grads).expect("a gradient for x"))
        };
        let got = on_threads(3, || gradient(true));
        let error = relative_error(&got, &gradient(false));
        assert!(error <= TOLERANCE, "gradient over {t} rows: relative error {error:e}");
    }
}

#[test]
fn more_rows_odd_widths_and_autodiff_take_the_fallback_on_wgpu() {
    let Some(device) = wgpu() else { return };
    let w = tensor([32, 64], 73, 0.5, &device);
    assert!(!matmul_t_uses_kernel(&tensor([MATMUL_T_MAX_ROWS + 1, 1, 64], 74, 2.0, &device), &w));
    assert!(!matmul_t_uses_kernel(&tensor([1, 1, 30], 75, 2.0, &device), &tensor([32, 30], 76, 0.5, &device)));
    let grad_device = device.autodiff();
    let x = tensor([1, 1, 64], 77, 2.0, &grad_device).require_grad();
    let w = tensor([32, 64], 78, 0.5, &grad_device);
    assert!(!matmul_t_uses_kernel(&x, &w) && !matmul_t_uses_cpu_kernel(&x, &w));
    let gradients = matmul_t(x.clone(), w).sum().backward();
    assert!(read(x.grad(&gradients).expect("no gradient for x")).iter().any(|g| *g != 0.0));
}

#[test]
#[should_panic(expected = "do not match")]
fn a_weight_of_another_width_is_refused() {
    let device = Device::flex();
    let _ = matmul_t(tensor([1, 1, 8], 81, 1.0, &device), tensor([4, 6], 82, 1.0, &device));
}
