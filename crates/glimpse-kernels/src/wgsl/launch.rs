//! The kernel source type, buffers and the launch itself, in builds with wgpu.

use std::marker::PhantomData;

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::DType;
use cubecl::ir::attributes::BufferIOAttr;
use cubecl::prelude::KernelId;
use cubecl::server::{Handle, KernelArguments, MetadataBindingInfo};
use cubecl::{CubeCount, CubeDim};

use super::MAX_WORKGROUPS;

/// A kernel's WGSL text, named by a hash of it: every compiled-pipeline cache is keyed by the
/// kernel id and never sees the text.
#[derive(Clone, Copy)]
pub(crate) struct WgslSource {
    text: &'static str,
    hash: u64,
}

impl WgslSource {
    /// Hashes at compile time (FNV-1a), so launches don't rehash the text.
    pub(crate) const fn new(text: &'static str) -> Self {
        let bytes = text.as_bytes();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut i = 0;
        while i < bytes.len() {
            hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        Self { text, hash }
    }
}

/// A WGSL template whose only placeholder is `{{workgroup_size}}`, entry point `main`.
///
/// `Name` is a unit type naming the kernel: CubeCL names a launch by its kernel's Rust type, and
/// `glimpse bench` counts launches by that name.
pub(crate) struct WgslKernel<Name> {
    source: WgslSource,
    workgroup_size: u32,
    name: PhantomData<fn() -> Name>,
}

impl<Name> WgslKernel<Name> {
    pub(crate) fn new(source: WgslSource, workgroup_size: u32) -> Self {
        Self { source, workgroup_size, name: PhantomData }
    }
}

impl<Name: 'static> KernelSource for WgslKernel<Name> {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source.text).register("workgroup_size", self.workgroup_size.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
            .info((self.source.hash, self.workgroup_size))
            .cube_dim(CubeDim::new_1d(self.workgroup_size).0)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Launches `kernel` on `workgroups`. `buffers` are bound in order as `@group(0) @binding(i)`,
/// each declared with what the kernel does to it (a failed launch taints only written buffers);
/// `params` (shapes, strides, `f32` bits) follow as a uniform at the next binding.
pub(crate) fn launch<Name: 'static>(
    client: &cubecl::client::Client,
    kernel: WgslKernel<Name>,
    workgroups: CubeCount,
    buffers: Vec<(Handle, BufferIOAttr)>,
    params: &[u32],
) {
    let cube_dim = CubeDim::new_1d(kernel.workgroup_size);
    // The metadata travels as 64-bit words; on the little-endian targets wgpu runs on, the first
    // `u32` of each pair is its low half.
    let words = params.chunks(2).map(|pair| pair.iter().rev().fold(0u64, |word, &half| word << 32 | u64::from(half)));
    let arguments = buffers
        .into_iter()
        .fold(KernelArguments::new(), |arguments, (handle, io)| arguments.with_buffer_io(handle.binding(), io))
        .with_info(MetadataBindingInfo::custom(words.collect()));
    client.launch(Box::new(SourceKernel::new(kernel, cube_dim)), workgroups, arguments);
}

/// Launches `kernel` on `inputs`, read only and bound in order, and on a new contiguous f32 output
/// of `shape` bound after them: the shape of every kernel here that writes one fresh tensor.
/// Returns the output.
pub(crate) fn launch_to_output<Name: 'static>(
    kernel: WgslKernel<Name>,
    workgroups: CubeCount,
    inputs: &[&CubeTensor],
    shape: impl Into<burn::tensor::Shape>,
    params: &[u32],
) -> CubeTensor {
    let output = empty_like(inputs[0], shape);
    let buffers = inputs
        .iter()
        .map(|input| (input.handle.clone(), BufferIOAttr::ReadOnly))
        .chain([(output.handle.clone(), BufferIOAttr::WriteOnly)])
        .collect();
    launch(&output.client, kernel, workgroups, buffers, params);
    output
}

/// `groups` workgroups laid over x then y, for kernels that number them with `spread_group()`
/// (`shaders/workgroup.wgsl`) and skip any past `groups`; with `groups_x`, the kernel's parameter.
pub(crate) fn spread(groups: usize) -> (CubeCount, u32) {
    let groups_x = groups.clamp(1, MAX_WORKGROUPS);
    (CubeCount::Static(size(groups_x), size(groups.div_ceil(groups_x)), 1), size(groups_x))
}

/// A new contiguous f32 tensor of `shape` on `like`'s device, contents undefined.
pub(crate) fn empty_like(like: &CubeTensor, shape: impl Into<burn::tensor::Shape>) -> CubeTensor {
    let shape = shape.into();
    let handle = like.client.empty(shape.num_elements() * DType::F32.size());
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, DType::F32)
}

/// `tensor` with strides a kernel can index through: a storage-tiled layout is made contiguous,
/// any other layout (transposed, broadcast, sliced) is kept as it is.
pub(crate) fn untiled(tensor: CubeTensor) -> CubeTensor {
    if tensor.meta.is_tiled() { into_contiguous(tensor) } else { tensor }
}

/// `tensor` as a dense row-major block a kernel can index directly (copied only if it is not).
pub(crate) fn contiguous(tensor: CubeTensor) -> CubeTensor {
    if tensor.is_contiguous() && !tensor.meta.is_tiled() { tensor } else { into_contiguous(tensor) }
}

/// Element strides of a rank-`D` tensor, for a kernel's `Params`.
pub(crate) fn strides<const D: usize>(tensor: &CubeTensor) -> [u32; D] {
    let strides = tensor.meta.strides();
    std::array::from_fn(|dim| size(strides[dim]))
}

/// A size or stride as the kernels' `u32`.
pub(crate) fn size(n: usize) -> u32 {
    u32::try_from(n).expect("size beyond u32")
}
