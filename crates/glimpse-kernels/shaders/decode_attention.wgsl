// One decoding step's attention: the new token's key and value are written into the KV cache at
// position `len`, then out = softmax(q k^T * scale) v over positions 0..=len.
//
// qkv: [batch, 3 * heads * head_dim], contiguous: the fused projection q | k | v, heads side by
// side inside each (head_dim % 4 == 0, so rows and heads start on vec4s).
// k_cache, v_cache: [batch, heads, capacity, head_dim], contiguous, positions 0..len filled.
// out: [batch, heads * head_dim], contiguous (the heads merged back, as the output projection
// reads them).
// One workgroup per (head, batch): workgroup_id.x is the head, workgroup_id.y the batch row. The
// workgroup writes its head's new row itself and reads only its own head's rows, so writing and
// reading the cache in one dispatch needs only the workgroup's own storage barrier.
//
// Scores: lane i takes keys i, i + WORKGROUP_SIZE, ... Weighted sum of values: the lanes form
// `groups` groups of `columns` = head_dim / 4 lanes; lane (group, column) sums the vec4 column of
// the keys i = group (mod groups), and the groups are added up at the end.
//
// Keys are walked in tiles of TILE positions with an online softmax: a tile's scores sit in
// workgroup memory, the running maximum is subtracted before exp, and what was accumulated under
// an older maximum is rescaled by exp(old - new) <= 1. Every intermediate stays finite (WGSL lets
// implementations assume finite arithmetic).

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl, put in front of this
// file by glimpse-kernels.

struct Params {
    heads: u32,
    // Positions already in the cache: the new one goes at `len`.
    len: u32,
    capacity: u32,
    head_dim: u32,
    scale: f32,
}

// Read-only inputs are declared read_write too: CubeCL sub-allocates tensors from shared wgpu
// buffers, so an input and the output may be one buffer, and wgpu refuses a buffer bound both
// read-only and writable in one dispatch.
@group(0) @binding(0) var<storage, read_write> qkv: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;
// CubeCL's launch metadata, bound after the buffers from its own uniform pool.
@group(0) @binding(4) var<uniform> params: Params;

const TILE: u32 = 1024u;
const MAX_COLUMNS: u32 = 64u;

var<workgroup> query: array<vec4<f32>, MAX_COLUMNS>;
// Scores of the current tile, then their exponentials.
var<workgroup> weights: array<f32, TILE>;
var<workgroup> column_partials: array<vec4<f32>, WORKGROUP_SIZE>;

fn workgroup_max(value: f32, lane: u32) -> f32 {
    partials[lane] = value;
    workgroupBarrier();
    for (var stride = WORKGROUP_SIZE / 2u; stride > 0u; stride /= 2u) {
        if lane < stride {
            partials[lane] = max(partials[lane], partials[lane + stride]);
        }
        workgroupBarrier();
    }
    let result = partials[0];
    // Nobody may overwrite `partials` before every lane has read the result.
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let head = group_id.x;
    let batch = group_id.y;
    let seq = params.len + 1u;
    let columns = params.head_dim / 4u;
    let groups = WORKGROUP_SIZE / columns;
    let column = lane % columns;
    let group = lane / columns;
    let width = params.heads * columns;
    let q_base = batch * 3u * width + head * columns;
    // This head's rows in either cache.
    let cache_base = (batch * params.heads + head) * params.capacity * columns;

    if lane < columns {
        query[lane] = qkv[q_base + lane] * params.scale;
        k[cache_base + params.len * columns + lane] = qkv[q_base + width + lane];
        v[cache_base + params.len * columns + lane] = qkv[q_base + 2u * width + lane];
    }
    // Publishes the new cache row to the workgroup's reads below, as well as `query`.
    storageBarrier();
    workgroupBarrier();

    var running_max = 0.0;
    // This lane's vec4 share of the output and of the softmax denominator, both relative to
    // exp(running_max).
    var numerator = vec4(0.0);
    var lane_denominator = 0.0;
    for (var tile_start = 0u; tile_start < seq; tile_start += TILE) {
        let tile_len = min(TILE, seq - tile_start);

        var lane_max = -3.0e38;
        for (var i = lane; i < tile_len; i += WORKGROUP_SIZE) {
            let row = cache_base + (tile_start + i) * columns;
            var score = 0.0;
            for (var c = 0u; c < columns; c++) {
                score += dot(query[c], k[row + c]);
            }
            weights[i] = score;
            lane_max = max(lane_max, score);
        }
        // The reduction's barriers also publish `weights`.
        let tile_max = workgroup_max(lane_max, lane);

        var new_max = tile_max;
        var correction = 0.0;
        if tile_start > 0u {
            new_max = max(running_max, tile_max);
            correction = exp(running_max - new_max);
        }
        running_max = new_max;

        var tile_denominator = 0.0;
        for (var i = lane; i < tile_len; i += WORKGROUP_SIZE) {
            let weight = exp(weights[i] - new_max);
            weights[i] = weight;
            tile_denominator += weight;
        }
        lane_denominator = lane_denominator * correction + tile_denominator;
        workgroupBarrier();

        if group < groups {
            var tile_numerator = vec4(0.0);
            for (var i = group; i < tile_len; i += groups) {
                tile_numerator += weights[i] * v[cache_base + (tile_start + i) * columns + column];
            }
            numerator = numerator * correction + tile_numerator;
        }
        // The next tile overwrites `weights`.
        workgroupBarrier();
    }

    column_partials[lane] = numerator;
    let denominator = workgroup_sum(lane_denominator, lane);
    if lane < columns {
        var total = vec4(0.0);
        for (var g = 0u; g < groups; g++) {
            total += column_partials[g * columns + lane];
        }
        output[batch * width + head * columns + lane] = total / denominator;
    }
}
