// LayerNorm over the last dim in one dispatch, where Burn's decomposition takes nine:
// out = (x - mean) / sqrt(var + epsilon) * gamma + beta, with the biased variance of the centred
// row (two passes over the row, as the fallback computes it, rather than E[x^2] - mean^2).
//
// x, out: [rows, dim], contiguous. gamma, beta: [dim], contiguous.
// One workgroup per row. A dispatch has at most 65535 workgroups per dimension, so the rows are
// laid over x then y: row = workgroup_id.y * row_groups + workgroup_id.x.

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
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> output: array<f32>;
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
    let scale = 1.0 / sqrt(workgroup_sum(squares, lane) / f32(dim) + params.epsilon);

    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        output[base + i] = (x[base + i] - mean) * scale * gamma[i] + beta[i];
    }
}
