// The gradient of bias_activation.wgsl's output with respect to y: dy = grad * activate'(y + bias),
// one lane per element as there. The bias is a frozen model's and gets no gradient.
//
// y, grad, dy: [rows, n], contiguous. bias: [n], contiguous. Element numbering as in
// bias_activation.wgsl.
//
// activate_derivative() comes from activation.wgsl.

struct Params {
    len: u32,
    n: u32,
    // As activate_derivative() takes it.
    activation: u32,
    groups_x: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = (group_id.y * params.groups_x + group_id.x) * WORKGROUP_SIZE + lane;
    if e < params.len {
        dy[e] = grad[e] * activate_derivative(y[e] + bias[e % params.n], params.activation);
    }
}
