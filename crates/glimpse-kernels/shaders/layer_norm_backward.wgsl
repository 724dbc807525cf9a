// The gradient of layer_norm.wgsl with respect to x, for a gamma and beta that take none (a frozen
// model's LayerNorm on the way to a prefix or a mask):
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, xhat = (x - mean) * rstd,
// with mean and rstd recomputed from x as the forward kernel computes them (two passes).
//
// x, dy, dx: [rows, dim], contiguous. gamma: [dim], contiguous.
// One workgroup per row, laid over x then y as in layer_norm.wgsl.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl, put in front of this
// file by glimpse-kernels.

struct Params {
    rows: u32,
    dim: u32,
    epsilon: f32,
    row_groups: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = group_id.y * params.row_groups + group_id.x;
    // The same for every lane of the workgroup, so the barriers below stay in uniform control flow.
    if row >= params.rows {
        return;
    }
    let dim = params.dim;
    let base = row * dim;

    var sum = 0.0;
    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(sum, lane) / f32(dim);

    var squares = 0.0;
    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        let centred = x[base + i] - mean;
        squares += centred * centred;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(squares, lane) / f32(dim) + params.epsilon);

    var g_sum = 0.0;
    var g_xhat_sum = 0.0;
    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        let g = dy[base + i] * gamma[i];
        g_sum += g;
        g_xhat_sum += g * (x[base + i] - mean) * rstd;
    }
    let g_mean = workgroup_sum(g_sum, lane) / f32(dim);
    let g_xhat_mean = workgroup_sum(g_xhat_sum, lane) / f32(dim);

    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        let xhat = (x[base + i] - mean) * rstd;
        dx[base + i] = rstd * (dy[base + i] * gamma[i] - g_mean - xhat * g_xhat_mean);
    }
}
