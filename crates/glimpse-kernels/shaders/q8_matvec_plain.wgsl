// q8_matvec.wgsl's plain variant: out = x @ w^T.

// Read-only inputs are declared read_write too: CubeCL sub-allocates tensors from shared wgpu
// buffers, so an input and the output may be one buffer, and wgpu refuses a buffer bound both
// read-only and writable in one dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
// CubeCL's launch metadata, bound after the buffers from its own uniform pool.
@group(0) @binding(4) var<uniform> params: Params;

fn store(row: u32, column: u32, value: f32) {
    output[row * params.n + column] = value;
}
