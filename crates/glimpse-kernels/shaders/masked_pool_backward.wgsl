// Masked temporal pooling with L2 normalisation, gradient with respect to the masks.
//
// With S = max(sum_t m_t, 1e-6), w = m / S, p = w @ frames, N = max(|p|, 1e-12), y = p / N and
// g = dL/dy, for each mask row:
//   dL/dp   = (g - y (y . g) [|p| >= 1e-12]) / N
//   dL/dm_t = (dL/dp . frames_t) / S
// (the bracket is where Burn's clamp_min passes gradient: at or above its minimum). The path
// through S drops out: y does not change when p is scaled, so (dL/dp) . p = 0 whenever |p| is not
// clamped; it would only count for a pooled vector of norm below 1e-12.
//
// frames: [n, d] and grad: [k, d], read through their strides; pooled (y): [k, d] and stats:
// [k, 2] (mass and |p|), contiguous, as the forward kernel wrote them; out: [k, n] contiguous.
// One workgroup per mask row (workgroup_id.x). d <= MAX_DIM.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl, put in front of this
// file by glimpse-kernels.

struct Params {
    frames: u32,
    dim: u32,
    // Element strides of frames [n, d] and grad [k, d].
    frame_strides: vec2<u32>,
    grad_strides: vec2<u32>,
}

// Read-only inputs are declared read_write too: CubeCL sub-allocates tensors from shared wgpu
// buffers, and wgpu refuses a buffer bound both read-only and writable in one dispatch.
@group(0) @binding(0) var<storage, read_write> frames: array<f32>;
@group(0) @binding(1) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> output: array<f32>;
// CubeCL's launch metadata, bound after the buffers from its own uniform pool.
@group(0) @binding(5) var<uniform> params: Params;

const MAX_DIM: u32 = 2048u;

// dL/dp of this row.
var<workgroup> pooled_grad: array<f32, MAX_DIM>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = group_id.x;
    let grad_row = row * params.grad_strides.x;
    let pooled_row = row * params.dim;
    let out_row = row * params.frames;
    let inverse_mass = 1.0 / max(stats[2u * row], 1e-6);
    let norm = stats[2u * row + 1u];
    let inverse_norm = 1.0 / max(norm, 1e-12);

    var lane_projection = 0.0;
    for (var d = lane; d < params.dim; d += WORKGROUP_SIZE) {
        lane_projection += pooled[pooled_row + d] * grad[grad_row + d * params.grad_strides.y];
    }
    var projection = workgroup_sum(lane_projection, lane);
    if norm < 1e-12 {
        projection = 0.0;
    }
    for (var d = lane; d < params.dim; d += WORKGROUP_SIZE) {
        let g = grad[grad_row + d * params.grad_strides.y];
        pooled_grad[d] = (g - pooled[pooled_row + d] * projection) * inverse_norm;
    }
    workgroupBarrier();

    for (var t = lane; t < params.frames; t += WORKGROUP_SIZE) {
        let frame = t * params.frame_strides.x;
        var weight_grad = 0.0;
        for (var d = 0u; d < params.dim; d++) {
            weight_grad += pooled_grad[d] * frames[frame + d * params.frame_strides.y];
        }
        output[out_row + t] = weight_grad * inverse_mass;
    }
}
