//! `x @ w^T` with the weight stored as rows (`[n, k]`): the tied LM head, GPT-2's largest product,
//! for a decoding step's few rows (a kernel on wgpu and on the CPU backend) and for a sequence's
//! rows (the CPU backend's gemm call).

use burn::backend::{Backend, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::linear::{cpu_product, linear_uses_cpu_kernel};
use crate::wgsl::kernel_input;

/// Most rows of `x` the WGSL kernel takes (its per-lane sums), and the CPU backend's split over
/// threads (`linear`'s).
pub const MATMUL_T_MAX_ROWS: usize = crate::linear::LINEAR_MAX_ROWS;

/// `x @ w^T`: x `[batch, t, k]`, w `[n, k]` -> `[batch, t, n]`.
///
/// Runs the WGSL kernel `shaders/matmul_t.wgsl` when both are f32 on a wgpu device outside
/// autodiff, with at most [`MATMUL_T_MAX_ROWS`] rows (`batch * t`) and `k` a multiple of 4; on
/// the CPU backend, `linear`'s product with `w` read transposed: for a few rows split over threads
/// by blocks of its rows, for more one product call, written column-major up to 256 rows where gemm
/// computes it ([`matmul_t_uses_cpu_kernel`]);
/// otherwise [`matmul_t_fallback`].
pub fn matmul_t(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [batch, t, k] = x.dims();
    let [n, w_k] = w.dims();
    // The kernel indexes through these sizes: a mismatch must stop here, not read out of bounds.
    assert_eq!(k, w_k, "matmul_t: x {:?} and w {:?} do not match", x.dims(), w.dims());
    if matmul_t_uses_cpu_kernel(&x, &w) {
        return cpu_product(x, w.transpose());
    }
    if !matmul_t_uses_kernel(&x, &w) {
        return matmul_t_fallback(x, w);
    }
    let output = <Dispatch as MatmulTBackend>::matmul_t(x.reshape([batch * t, k]).into_dispatch(), w.into_dispatch());
    Tensor::<2>::from_dispatch(output).reshape([batch, t, n])
}

/// Whether [`matmul_t`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn matmul_t_uses_kernel(x: &Tensor<3>, w: &Tensor<2>) -> bool {
    let [batch, t, k] = x.dims();
    (1..=MATMUL_T_MAX_ROWS).contains(&(batch * t))
        && k.is_multiple_of(4)
        && k > 0
        && w.dims()[0] > 0
        && kernel_input(x)
        && kernel_input(w)
}

/// Whether [`matmul_t`] multiplies on the CPU backend's kernel: where `linear` would with the
/// weight `w^T` (f32, at least one row, `w` a constant; `x` may be tracked).
pub fn matmul_t_uses_cpu_kernel(x: &Tensor<3>, w: &Tensor<2>) -> bool {
    linear_uses_cpu_kernel(x, w)
}

/// [`matmul_t`] as `(w @ x^T)^T` in Burn operations: any backend, autodiff included. Written
/// that way so that `x`, the small operand, is the one transposed: a backend that copies a
/// transposed operand before multiplying would otherwise copy GPT-2's 154 MB token table at every
/// step.
pub fn matmul_t_fallback(x: Tensor<3>, w: Tensor<2>) -> Tensor<3> {
    let [batch, t, k] = x.dims();
    let n = w.dims()[0];
    w.matmul(x.reshape([batch * t, k]).transpose()).transpose().reshape([batch, t, n])
}

#[backend_extension(Cube: cfg(wgpu))]
trait MatmulTBackend: Backend {
    /// `[m, k]` and `[n, k]` -> `[m, n]`, `m <= MATMUL_T_MAX_ROWS`.
    fn matmul_t(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
}

#[cfg(wgpu)]
/// The WGSL half: the kernel on wgpu.
mod wgpu {
    use burn::backend::Cube;
    use burn::backend::wgpu::CubeTensor;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size, spread};

    const SOURCE: WgslSource = kernel_source!("matmul_t.wgsl");
    /// Names the kernel in launch counts.
    struct MatmulTShader;

    /// 16 outputs per workgroup, 16 lanes each (`shaders/matmul_t.wgsl`).
    const WORKGROUP_SIZE: u32 = 256;
    const COLUMNS_PER_GROUP: usize = 16;

    impl MatmulTBackend for Cube {
        fn matmul_t(x: CubeTensor, w: CubeTensor) -> CubeTensor {
            let [x, w] = [x, w].map(contiguous);
            let (m, k) = (x.meta.shape()[0], x.meta.shape()[1]);
            let n = w.meta.shape()[0];
            let (workgroups, groups_x) = spread(n.div_ceil(COLUMNS_PER_GROUP));
            launch_to_output(
                WgslKernel::<MatmulTShader>::new(SOURCE, WORKGROUP_SIZE),
                workgroups,
                &[&x, &w],
                [m, n],
                &[size(m), size(k), size(n), groups_x],
            )
        }
    }
}
