// The gradient of layer_norm.wgsl with respect to x, for a gamma and beta that take none (a frozen
// model's LayerNorm on the way to a prefix or a mask):
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma, xhat = (x - mean) * rstd,
// with mean and rstd recomputed from x as the forward kernel computes them.
//
// x, dy, dx: [rows, dim], contiguous. gamma: [dim], contiguous.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl; Params, row_of() and
// row_moments() from layer_norm_row.wgsl: glimpse-kernels puts both in front of this file.

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
    let row = row_of(group_id);
    // The same for every lane of the workgroup, so the barriers below stay in uniform control flow.
    if row >= params.rows {
        return;
    }
    let dim = params.dim;
    let base = row * dim;
    let moments = row_moments(base, lane);
    let mean = moments.x;
    let rstd = moments.y;

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
