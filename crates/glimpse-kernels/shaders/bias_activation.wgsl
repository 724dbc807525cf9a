// An MLP's first bias and activation in one dispatch: out = activation(y + bias), where Burn's
// operations take one kernel for the bias and five to eight for the activation.
//
// y, out: [rows, n], contiguous. bias: [n], contiguous. Element e = workgroup_index *
// WORKGROUP_SIZE + lane, workgroup_index = workgroup_id.y * groups_x + workgroup_id.x (a
// dispatch dimension holds at most 65535 workgroups).
//
// activate() comes from activation.wgsl.

struct Params {
    len: u32,
    n: u32,
    // As activate() takes it.
    activation: u32,
    groups_x: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = (group_id.y * params.groups_x + group_id.x) * WORKGROUP_SIZE + lane;
    if e < params.len {
        output[e] = activate(y[e] + bias[e % params.n], params.activation);
    }
}
