// q8_matvec.wgsl's residual variant: out = residual + x @ w^T + bias, a sublayer's output
// projection and the residual add after it (three launches otherwise). bias: [n], residual: [m, n],
// contiguous. The output is a new buffer: WebGPU forbids binding one range twice where either
// binding is writable, so residual is not updated in place.

// All read_write: see q8_matvec_plain.wgsl.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> output: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

fn store(row: u32, column: u32, value: f32) {
    let at = row * params.n + column;
    output[at] = residual[at] + (value + bias[column]);
}
