// The first half of attention.wgsl's gradient: each query's gradient, and the two numbers per
// query the second half (attention_backward_key.wgsl) needs.
//
// With s_ij = scale q_i . k_j, p_ij = softmax_j(s_ij), out_i = sum_j p_ij v_j and the output's
// gradient dout_i: dp_ij = dout_i . v_j, D_i = sum_j p_ij dp_ij (= dout_i . out_i),
// ds_ij = p_ij (dp_ij - D_i), and dq_i = scale sum_j ds_ij k_j.
//
// q, k, v, k_past, v_past as in attention.wgsl (through their strides); dout: [batch, queries,
// heads * head_dim], contiguous (the output's gradient). dq: [batch, heads, queries, head_dim]
// through the dq strides and offset of Params. stats: [batch, heads, queries, 2], contiguous:
// each query's log-sum-exp of its scores and D_i.
// One lane per query as in the forward: two walks over its keys (the log-sum-exp and D with an
// online softmax, then dq), no barrier; eight storage bindings, WebGPU's least limit. Its loops
// take four vec4s a turn: 3 * keys * head_dim / 16 turns in all, 49152 at most (see
// attention.wgsl on lavapipe's limit).

// WORKGROUP_SIZE comes from workgroup.wgsl, Params, MAX_COLUMNS and keys_seen() from
// attention_params.wgsl, `query`, load_query() and the key and value lookups from
// attention_keys.wgsl, all put in front of this file by glimpse-kernels.

// All read_write: see attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> k_past: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v_past: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dq: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(8) var<uniform> params: Params;

// The lane's row of the output's gradient.
var<private> d_out: array<vec4<f32>, MAX_COLUMNS>;

// The lane's score of key `j` and dp = dout . value j (starting at `key` and `value`), in one
// loop: four vec4s of each a turn.
fn score_and_dp(j: u32, key: u32, value: u32, columns: u32) -> vec2<f32> {
    var score = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < columns; c += 4u) {
        score += dot(query[c], key_at(j, key, c)) + dot(query[c + 1u], key_at(j, key, c + 1u))
            + dot(query[c + 2u], key_at(j, key, c + 2u)) + dot(query[c + 3u], key_at(j, key, c + 3u));
        dp += dot(d_out[c], value_at(j, value, c)) + dot(d_out[c + 1u], value_at(j, value, c + 1u))
            + dot(d_out[c + 2u], value_at(j, value, c + 2u)) + dot(d_out[c + 3u], value_at(j, value, c + 3u));
    }
    return vec2(score, dp);
}

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
    let out_row = ((batch * params.queries + position) * params.heads + head) * columns;
    for (var c = 0u; c < columns; c++) {
        d_out[c] = dout[out_row + c];
    }

    // The log-sum-exp of the scores and D = sum_j p_ij dp_ij, with the running maximum subtracted
    // as in the forward: both sums relative to exp(running_max).
    var running_max = -3.0e38;
    var denominator = 0.0;
    var weighted_dp = 0.0;
    for (var i = 0u; i < seq; i++) {
        let key = key_row(batch, head, i);
        let dots = score_and_dp(i, key, value_row(batch, head, i), columns);
        let score = dots.x;
        let dp = dots.y;
        let new_max = max(running_max, score);
        let correction = exp(running_max - new_max);
        let weight = exp(score - new_max);
        denominator = denominator * correction + weight;
        weighted_dp = weighted_dp * correction + weight * dp;
        running_max = new_max;
    }
    let log_sum = running_max + log(denominator);
    let d = weighted_dp / denominator;

    var d_query: array<vec4<f32>, MAX_COLUMNS>;
    for (var i = 0u; i < seq; i++) {
        let key = key_row(batch, head, i);
        let dots = score_and_dp(i, key, value_row(batch, head, i), columns);
        let score = dots.x;
        let dp = dots.y;
        let p = exp(score - log_sum);
        let ds = p * (dp - d);
        for (var c = 0u; c < columns; c += 4u) {
            d_query[c] += ds * key_at(i, key, c);
            d_query[c + 1u] += ds * key_at(i, key, c + 1u);
            d_query[c + 2u] += ds * key_at(i, key, c + 2u);
            d_query[c + 3u] += ds * key_at(i, key, c + 3u);
        }
    }

    let dq_row = batch * params.dq_batch + head * params.dq_head + position * params.dq_position + params.dq_offset;
    for (var c = 0u; c < columns; c++) {
        dq[dq_row + c] = d_query[c] * params.scale;
    }
    stats[(batch * params.heads + head) * params.queries + position] = vec2(log_sum, d);
}
