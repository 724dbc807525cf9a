// linear.wgsl's plain variant: out = activate(x @ w + bias).

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> bias: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;

fn prepare(lane: u32) {}

fn input(row: u32, i: u32) -> f32 {
    return x[row * params.k + i];
}

fn store(row: u32, quad: u32, value: vec4<f32>) {
    output[row * (params.n / 4u) + quad] = value;
}
