// An MLP's first bias and activation in one dispatch: out = activation(y + bias), where Burn's
// operations take one kernel for the bias and five to eight for the activation.
//
// out: [rows, n], contiguous. activate() comes from activation.wgsl, the parameters, y, bias and
// the element numbering from bias_activation_element.wgsl.

@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = element_of(group_id, lane);
    if e < params.len {
        output[e] = activate(biased(e), params.activation);
    }
}
