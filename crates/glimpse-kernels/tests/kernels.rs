//! Every kernel's parity and dispatch tests, in one test binary: each binary links the whole of
//! Burn, CubeCL and wgpu (about 150 MB unoptimised), so one per kernel cost a link and its disk each.

mod support;

mod attention;
mod bias_activation;
mod decode_attention;
mod layer_norm;
mod linear;
mod masked_pool;
mod matmul_t;
mod q8;
