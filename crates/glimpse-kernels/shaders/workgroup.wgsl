// Shared by every kernel: glimpse-kernels puts this file in front of each one (WGSL has no
// includes). The workgroup size is filled in from Rust.

const WORKGROUP_SIZE: u32 = {{workgroup_size}}u;

var<workgroup> partials: array<f32, WORKGROUP_SIZE>;

// The sum of `value` over the workgroup's lanes, returned to every lane. Every lane must call it
// (it holds barriers).
fn workgroup_sum(value: f32, lane: u32) -> f32 {
    partials[lane] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane < stride {
            partials[lane] += partials[lane + stride];
        }
        workgroupBarrier();
    }
    let result = partials[0];
    // Nobody may overwrite `partials` before every lane has read the result.
    workgroupBarrier();
    return result;
}
