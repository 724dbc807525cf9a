// The gradient of bias_activation.wgsl's output with respect to y: dy = grad * activate'(y + bias),
// one lane per element as there. The bias is a frozen model's and gets no gradient.
//
// grad, dy: [rows, n], contiguous. activate_derivative() comes from activation.wgsl, the
// parameters, y, bias and the element numbering from bias_activation_element.wgsl.

@group(0) @binding(2) var<storage, read_write> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dy: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = element_of(group_id, lane);
    if e < params.len {
        dy[e] = grad[e] * activate_derivative(biased(e), params.activation);
    }
}
