// LayerNorm over the last dim in one dispatch, where Burn's decomposition takes nine:
// out = (x - mean) / sqrt(var + epsilon) * gamma + beta.
//
// x, out: [rows, dim], contiguous. gamma, beta: [dim], contiguous.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl; Params, row_of() and
// row_moments() from layer_norm_row.wgsl: glimpse-kernels puts both in front of this file.

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
    let row = row_of(group_id);
    // The same for every lane of the workgroup, so the barriers below stay in uniform control flow.
    if row >= params.rows {
        return;
    }
    let base = row * params.dim;
    let moments = row_moments(base, lane);
    for (var i = lane; i < params.dim; i += WORKGROUP_SIZE) {
        output[base + i] = (x[base + i] - moments.x) * moments.y * gamma[i] + beta[i];
    }
}
