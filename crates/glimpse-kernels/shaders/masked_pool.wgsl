// Masked temporal pooling with L2 normalisation, forward:
//   pooled = (masks / max(sum_t masks, 1e-6)) @ frames,  out = pooled / max(|pooled|, 1e-12).
//
// masks: [k, n] and frames: [n, d], read through their strides; out: [k, d] contiguous;
// stats: [k, 2] contiguous, each row's mask mass sum_t masks and |pooled| before clamping, which
// the backward kernel needs. One workgroup per mask row (workgroup_id.x); lanes take frames for
// the mass, output columns for the pooled vector.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl, put in front of this
// file by glimpse-kernels.

struct Params {
    frames: u32,
    dim: u32,
    // Element strides of masks [k, n] and frames [n, d].
    mask_strides: vec2<u32>,
    frame_strides: vec2<u32>,
}

// Read-only inputs are declared read_write too: CubeCL sub-allocates tensors from shared wgpu
// buffers, and wgpu refuses a buffer bound both read-only and writable in one dispatch.
@group(0) @binding(0) var<storage, read_write> masks: array<f32>;
@group(0) @binding(1) var<storage, read_write> frames: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
// CubeCL's launch metadata, bound after the buffers from its own uniform pool.
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let row = group_id.x;
    let mask_row = row * params.mask_strides.x;
    let out_row = row * params.dim;

    var lane_mass = 0.0;
    for (var t = lane; t < params.frames; t += WORKGROUP_SIZE) {
        lane_mass += masks[mask_row + t * params.mask_strides.y];
    }
    let mass = workgroup_sum(lane_mass, lane);
    let inverse_mass = 1.0 / max(mass, 1e-6);

    // Each lane writes the pooled columns it owns, then rescales those same columns: no other
    // lane touches them, so no barrier is needed in between.
    var lane_square = 0.0;
    for (var d = lane; d < params.dim; d += WORKGROUP_SIZE) {
        var pooled = 0.0;
        for (var t = 0u; t < params.frames; t++) {
            pooled += masks[mask_row + t * params.mask_strides.y]
                * frames[t * params.frame_strides.x + d * params.frame_strides.y];
        }
        pooled *= inverse_mass;
        output[out_row + d] = pooled;
        lane_square += pooled * pooled;
    }
    let norm = sqrt(workgroup_sum(lane_square, lane));
    let inverse_norm = 1.0 / max(norm, 1e-12);
    for (var d = lane; d < params.dim; d += WORKGROUP_SIZE) {
        output[out_row + d] *= inverse_norm;
    }
    if lane == 0u {
        stats[2u * row] = mass;
        stats[2u * row + 1u] = norm;
    }
}
