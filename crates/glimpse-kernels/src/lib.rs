//! Hand-written kernels for glimpse's hot operations: WGSL for wgpu, and Rust for the CPU
//! backend where Burn has no fitting operation (the 8-bit matrix product, [`q8_matmul`]), runs
//! it on one thread or in the slower orientation (the products with a constant weight in
//! [`linear`] and [`matmul_t`]) or in a dozen passes ([`bias_activation`]). In the wasm build the
//! larger f32 products run its own SIMD128 product rather than gemm's (`wasm_product`).
//!
//! Each operation is one backend-agnostic function over `Tensor<D>`: where its kernel applies
//! (f32 tensors on a wgpu device — Vulkan, Metal, DX12, or WebGPU in the browser — for the
//! kernels in the crate's `shaders/` folder; the CPU backend for the 8-bit and the constant-weight products
//! and the bias plus activation) it runs the kernel; everywhere else (other backends, shapes or
//! autodiff uses a kernel does not cover) it runs its portable fallback, written in plain Burn
//! operations and public so callers can compare the two. A `*_uses_kernel` function tells which path a call takes (`q8_dequantize` has none:
//! its two paths give the same values). [`masked_pool`], [`layer_norm`], [`bias_activation`],
//! [`attention`] and [`q8_matmul`] have hand-written backwards, so their kernels also run under
//! autodiff (for the masks, for attention's inputs, and for a LayerNorm's, an activation's or a
//! product's input when the parameters are frozen).
//!
//! The kernels reach the backends' tensor primitives (CubeCL's `CubeTensor`, the CPU backend's
//! `FlexTensor`) through Burn backend extensions; the wgpu primitive is raw because Burn's
//! `fusion` feature is off in this workspace.
//! They are WGSL text: burn's `wgpu` and `webgpu` features compile WGSL, whereas the SPIR-V and
//! MSL compilers of its `vulkan` and `metal` features would refuse them at launch.

mod activation;
mod attention;
mod cpu;
mod decode_attention;
mod layer_norm;
mod linear;
mod masked_pool;
mod matmul_t;
mod q8;
// The wasm build's product; natively only its tests run it.
#[cfg(any(test, all(target_family = "wasm", target_feature = "simd128")))]
mod wasm_product;
mod wgsl;

pub use activation::{Activation, bias_activation, bias_activation_fallback, bias_activation_uses_kernel};
pub use attention::{CausalMask, Mask, attention, attention_fallback, attention_qkv, attention_uses_kernel, qkv_heads};
pub use cpu::is_cpu;
pub use decode_attention::{decode_attention, decode_attention_fallback, decode_attention_uses_kernel};
pub use layer_norm::{layer_norm, layer_norm_fallback, layer_norm_uses_kernel};
pub use linear::{
    LINEAR_MAX_ROWS, layer_norm_linear, layer_norm_linear_fallback, layer_norm_linear_uses_kernel, linear,
    linear_fallback, linear_residual, linear_residual_fallback, linear_residual_uses_kernel, linear_uses_cpu_kernel,
    linear_uses_kernel,
};
pub use masked_pool::{masked_pool, masked_pool_fallback, masked_pool_uses_kernel};
pub use matmul_t::{MATMUL_T_MAX_ROWS, matmul_t, matmul_t_fallback, matmul_t_uses_cpu_kernel, matmul_t_uses_kernel};
pub use q8::{
    Q8_BLOCK, Q8_DIRECT_MAX_ROWS, q8_dequantize, q8_dequantize_fallback, q8_linear, q8_linear_fallback,
    q8_linear_residual, q8_linear_residual_fallback, q8_linear_residual_uses_kernel, q8_linear_uses_kernel, q8_matmul,
    q8_matmul_fallback, q8_matmul_uses_kernel, q8_pack, q8_padded,
};
