// An MLP's first bias and activation in one dispatch: out = activation(y + bias), where Burn's
// operations take one kernel for the bias and five to eight for the activation.
//
// y, out: [rows, n], contiguous. bias: [n], contiguous. Element e = workgroup_index *
// WORKGROUP_SIZE + lane, workgroup_index = workgroup_id.y * groups_x + workgroup_id.x (a
// dispatch dimension holds at most 65535 workgroups).
//
// The activations match glimpse_kernels::Activation::apply, clamps included: WGSL lets
// implementations assume finite arithmetic, so exp and tanh never see an argument whose result
// overflows.

struct Params {
    len: u32,
    n: u32,
    // 0: QuickGELU x sigmoid(1.702 x); 1: GELU, tanh approximation; 2: GELU, exact (erf).
    activation: u32,
    groups_x: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> y: array<f32>;
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const SIGMOID_SATURATES: f32 = 30.0;
const TANH_SATURATES: f32 = 10.0;

// erf(x) by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7); WGSL has no erf.
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-a * a));
}

fn activate(x: f32) -> f32 {
    switch params.activation {
        case 0u: {
            let z = clamp(1.702 * x, -SIGMOID_SATURATES, SIGMOID_SATURATES);
            return x / (1.0 + exp(-z));
        }
        case 1u: {
            let inner = (x + 0.044715 * x * x * x) * 0.7978845608028654;
            return 0.5 * x * (1.0 + tanh(clamp(inner, -TANH_SATURATES, TANH_SATURATES)));
        }
        default: {
            return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
        }
    }
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = (group_id.y * params.groups_x + group_id.x) * WORKGROUP_SIZE + lane;
    if e < params.len {
        output[e] = activate(y[e] + bias[e % params.n]);
    }
}
