// Shared by bias_activation.wgsl and bias_activation_backward.wgsl, put in front of each: their
// parameters, inputs and the element a lane takes. Each kernel file declares the rest of its
// bindings and `params`.
//
// y: [rows, n], contiguous. bias: [n], contiguous. One lane per element of y, workgroups numbered
// by spread_group().

struct Params {
    len: u32,
    n: u32,
    // As activate() and activate_derivative() take it.
    activation: u32,
    groups_x: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;

fn element_of(group_id: vec3<u32>, lane: u32) -> u32 {
    return spread_group(group_id, params.groups_x) * WORKGROUP_SIZE + lane;
}

// y + bias at element e.
fn biased(e: u32) -> f32 {
    return y[e] + bias[e % params.n];
}
