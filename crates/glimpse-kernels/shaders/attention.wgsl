// Attention over a sequence (an encoder layer, or a forward pass over several positions after a
// cache): out = softmax(q k^T * scale) v per head, optionally causal, with the heads merged.
//
// q: [batch, heads, queries, head_dim]; k, v: [batch, heads, keys - past, head_dim] (or, fused,
// the heads of one projection bound as q), after k_past, v_past: [batch, heads, past, head_dim] (a
// cache, sharing one set of strides; unread without one); each read through strides (in vec4s),
// so heads split out of a projection need no copy and a cache no concatenation; head_dim is dense
// and a multiple of 16 (the loops over a row take four vec4s a turn). Causal: query i sees keys
// 0..=keys - queries + i, otherwise every key.
// out: [batch, queries, heads * head_dim], contiguous (the heads merged, as the output
// projection reads them).
//
// One lane per query, WORKGROUP_SIZE queries of one (head, batch row) per workgroup: workgroup_id
// x numbers the block of queries, y the head, z the batch row. Each lane walks its keys once with
// an online softmax (the running maximum subtracted before exp, what was summed under an older
// maximum rescaled by exp(old - new) <= 1), keeping its query and output row in private memory:
// no workgroup memory and no barrier, which a CPU implementation such as lavapipe pays a pass over
// the lanes for. The sequences this serves are short (CLIP's 77 and 50 positions, a caption); the
// caller keeps keys to 1024 at most, as lavapipe cuts a shader's loops short after about 65535
// turns in all (its loop limiter), where 1024 keys of head_dim 256 take 32768.

// WORKGROUP_SIZE comes from workgroup.wgsl, Params, MAX_COLUMNS and keys_seen() from
// attention_params.wgsl, `query`, load_query(), score_of() and the value lookups from
// attention_keys.wgsl, all put in front of this file by glimpse-kernels.

// Read-only inputs are declared read_write too: CubeCL sub-allocates tensors from shared wgpu
// buffers, so an input and the output may be one buffer, and wgpu refuses a buffer bound both
// read-only and writable in one dispatch.
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> k_past: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_past: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: array<vec4<f32>>;
// CubeCL's launch metadata, bound after the buffers from its own uniform pool.
@group(0) @binding(6) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let position = group_id.x * WORKGROUP_SIZE + lane;
    let head = group_id.y;
    let batch = group_id.z;
    if position >= params.queries {
        return;
    }
    let columns = params.head_dim / 4u;
    let seq = keys_seen(position);

    load_query(batch, head, position, columns);

    // The output row and the softmax denominator, both relative to exp(running_max).
    var total: array<vec4<f32>, MAX_COLUMNS>;
    var denominator = 0.0;
    var running_max = -3.0e38;
    for (var i = 0u; i < seq; i++) {
        let score = score_of(i, key_row(batch, head, i), columns);
        let value = value_row(batch, head, i);
        // What was summed under the old maximum shrinks by exp(old - new) (1 mostly).
        let new_max = max(running_max, score);
        let correction = exp(running_max - new_max);
        let weight = exp(score - new_max);
        running_max = new_max;
        denominator = denominator * correction + weight;
        for (var c = 0u; c < columns; c += 4u) {
            total[c] = total[c] * correction + weight * value_at(i, value, c);
            total[c + 1u] = total[c + 1u] * correction + weight * value_at(i, value, c + 1u);
            total[c + 2u] = total[c + 2u] * correction + weight * value_at(i, value, c + 2u);
            total[c + 3u] = total[c + 3u] * correction + weight * value_at(i, value, c + 3u);
        }
    }

    let out = ((batch * params.queries + position) * params.heads + head) * columns;
    for (var c = 0u; c < columns; c++) {
        output[out + c] = total[c] / denominator;
    }
}
