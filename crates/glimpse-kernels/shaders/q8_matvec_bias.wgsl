// q8_matvec.wgsl's dense-layer variant: out = activate(x @ w^T + bias), where the product, a bias
// add and the activation would otherwise be two launches. bias: [n].

// All read_write: see q8_matvec_plain.wgsl.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<f32>;
@group(0) @binding(3) var<storage, read_write> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

fn store(row: u32, column: u32, value: f32) {
    output[row * params.n + column] = activate(value + bias[column], params.activation);
}
