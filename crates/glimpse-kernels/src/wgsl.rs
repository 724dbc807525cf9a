//! Launching hand-written WGSL on the wgpu runtime: where a tensor qualifies, and (in `launch`,
//! in every build with wgpu) the kernel source type, buffers, and the launch itself.

#[cfg(wgpu)]
use burn::backend::{CubeDevice, DispatchDevice};
use burn::prelude::*;
#[cfg(wgpu)]
use burn::tensor::DType;

#[cfg(wgpu)]
mod launch;
#[cfg(wgpu)]
pub(crate) use launch::*;

/// Workgroups one dispatch dimension takes (WebGPU's guaranteed `maxComputeWorkgroupsPerDimension`).
pub(crate) const MAX_WORKGROUPS: usize = 65_535;

/// Whether `tensor` is f32 on a wgpu device (or on an autodiff device over one); never in the build
/// without wgpu.
pub(crate) fn wgpu_f32<const D: usize>(tensor: &Tensor<D>) -> bool {
    #[cfg(wgpu)]
    return matches!(tensor.device().inner().as_dispatch(), DispatchDevice::Cube(CubeDevice::Wgpu(_)))
        && tensor.dtype() == DType::F32;
    #[cfg(not(wgpu))]
    {
        let _ = tensor;
        false
    }
}

/// Whether a kernel without a backward can take `tensor`: f32 on a wgpu device, outside autodiff.
pub(crate) fn kernel_input<const D: usize>(tensor: &Tensor<D>) -> bool {
    wgpu_f32(tensor) && !tensor.is_autodiff()
}

/// The [`WgslSource`] of `shaders/<file>`s, in order, with `shaders/workgroup.wgsl` (the workgroup
/// size and reductions every kernel uses) in front of them: WGSL has no includes.
#[cfg(wgpu)]
macro_rules! kernel_source {
    ($($file:literal),+) => {
        $crate::wgsl::WgslSource::new(concat!(
            include_str!("../shaders/workgroup.wgsl"),
            $(include_str!(concat!("../shaders/", $file))),+
        ))
    };
}
#[cfg(wgpu)]
pub(crate) use kernel_source;
