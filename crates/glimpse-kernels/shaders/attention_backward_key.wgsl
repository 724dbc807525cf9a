// The second half of attention.wgsl's gradient: each key's and value's, from the stats of the
// first half (attention_backward_query.wgsl, whose header has the formulas):
// dv_j = sum_i p_ij dout_i, dk_j = scale sum_i ds_ij q_i, over the queries i that see key j.
//
// One launch per part of the keys (the cache's, the sequence's own): `part_len` keys from key
// `part_first` on, which k and v hold ([batch, heads, part_len, head_dim] through the k and v
// strides of Params; the sequence's own may be the fused projection's, read through q); dk and dv
// receive their gradients through the dkv strides and offsets (fused: dk both). q as
// in attention.wgsl; dout: [batch, queries, heads * head_dim], contiguous; stats: [batch, heads,
// queries, 2] (log-sum-exp, D_i). Seven storage bindings: WebGPU guarantees eight.
// One lane per key, WORKGROUP_SIZE keys of one (head, batch row) per workgroup: workgroup_id x
// numbers the block of keys, y the head, z the batch row. One walk over the queries that see the
// key, its loops taking four vec4s a turn: 2 * queries * head_dim / 16 turns in all; no barrier.

// WORKGROUP_SIZE comes from workgroup.wgsl, Params, MAX_COLUMNS, first_query(), own_key() and
// own_value() from attention_params.wgsl, both put in front of this file by glimpse-kernels.

// All read_write: see attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> q: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> k: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dout: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> stats: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> dk: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dv: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // The key's place in its part, and among all keys.
    let local = group_id.x * WORKGROUP_SIZE + lane;
    let head = group_id.y;
    let batch = group_id.z;
    if local >= params.part_len {
        return;
    }
    let position = params.part_first + local;
    let columns = params.head_dim / 4u;
    let width = params.heads * columns;

    var key: array<vec4<f32>, MAX_COLUMNS>;
    var value: array<vec4<f32>, MAX_COLUMNS>;
    let k_row = batch * params.k_batch + head * params.k_head + local * params.k_position;
    let v_row = batch * params.v_batch + head * params.v_head + local * params.v_position;
    for (var c = 0u; c < columns; c++) {
        key[c] = own_key(k_row + c) * params.scale;
        value[c] = own_value(v_row + c);
    }
    let q_base = batch * params.q_batch + head * params.q_head;
    let stats_base = (batch * params.heads + head) * params.queries;

    var d_key: array<vec4<f32>, MAX_COLUMNS>;
    var d_value: array<vec4<f32>, MAX_COLUMNS>;
    for (var i = first_query(position); i < params.queries; i++) {
        let query = q_base + i * params.q_position;
        let out_row = (batch * params.queries + i) * width + head * columns;
        var score = 0.0;
        var dp = 0.0;
        for (var c = 0u; c < columns; c += 4u) {
            score += dot(key[c], q[query + c]) + dot(key[c + 1u], q[query + c + 1u])
                + dot(key[c + 2u], q[query + c + 2u]) + dot(key[c + 3u], q[query + c + 3u]);
            dp += dot(value[c], dout[out_row + c]) + dot(value[c + 1u], dout[out_row + c + 1u])
                + dot(value[c + 2u], dout[out_row + c + 2u]) + dot(value[c + 3u], dout[out_row + c + 3u]);
        }
        let stat = stats[stats_base + i];
        let p = exp(score - stat.x);
        let ds = p * (dp - stat.y);
        for (var c = 0u; c < columns; c += 4u) {
            d_value[c] += p * dout[out_row + c];
            d_value[c + 1u] += p * dout[out_row + c + 1u];
            d_value[c + 2u] += p * dout[out_row + c + 2u];
            d_value[c + 3u] += p * dout[out_row + c + 3u];
            d_key[c] += ds * q[query + c];
            d_key[c + 1u] += ds * q[query + c + 1u];
            d_key[c + 2u] += ds * q[query + c + 2u];
            d_key[c + 3u] += ds * q[query + c + 3u];
        }
    }

    let row = batch * params.dkv_batch + head * params.dkv_head + local * params.dkv_position;
    for (var c = 0u; c < columns; c++) {
        dk[row + params.dk_offset + c] = d_key[c] * params.scale;
        // Fused: the values' gradient goes into the projection's gradient too.
        if params.fused != 0u {
            dk[row + params.dv_offset + c] = d_value[c];
        } else {
            dv[row + params.dv_offset + c] = d_value[c];
        }
    }
}
