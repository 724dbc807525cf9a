// Shared by every kernel: glimpse-kernels puts this file in front of each one (WGSL has no
// includes). The workgroup size is filled in from Rust.

const WORKGROUP_SIZE: u32 = {{workgroup_size}}u;

// The number of a workgroup of a dispatch laid out by glimpse-kernels' `spread`: over x, then y
// (a dispatch dimension holds at most 65535 workgroups), `groups_x` per row.
fn spread_group(group_id: vec3<u32>, groups_x: u32) -> u32 {
    return group_id.y * groups_x + group_id.x;
}

var<workgroup> partials: array<f32, WORKGROUP_SIZE>;

// Lanes whose partials one lane adds up in workgroup_sum's first level.
const SPAN: u32 = 16u;
const SPANS: u32 = (WORKGROUP_SIZE + SPAN - 1u) / SPAN;
var<workgroup> span_sums: array<f32, SPANS>;

// The sum of `value` over the workgroup's lanes, returned to every lane. Every lane must call it
// (it holds barriers). Two levels (SPANS lanes add SPAN partials each, then every lane adds the
// SPANS sums) take three barriers where a tree over 256 lanes takes ten: each costs a pass over
// the workgroup's lanes on a CPU implementation such as lavapipe.
fn workgroup_sum(value: f32, lane: u32) -> f32 {
    partials[lane] = value;
    workgroupBarrier();
    if lane < SPANS {
        var sum = 0.0;
        for (var i = lane * SPAN; i < min(lane * SPAN + SPAN, WORKGROUP_SIZE); i++) {
            sum += partials[i];
        }
        span_sums[lane] = sum;
    }
    workgroupBarrier();
    var result = 0.0;
    for (var i = 0u; i < SPANS; i++) {
        result += span_sums[i];
    }
    // Nobody may overwrite `partials` or `span_sums` before every lane has read them.
    workgroupBarrier();
    return result;
}
