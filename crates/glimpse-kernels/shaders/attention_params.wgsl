// What attention.wgsl and its two backward kernels share: their parameters, which keys a query
// sees, and reading the sequence's own keys and values (each kernel declares q, k and v).

struct Params {
    heads: u32,
    queries: u32,
    // Every key, the past ones included.
    keys: u32,
    past: u32,
    head_dim: u32,
    scale: f32,
    causal: u32,
    // Strides in vec4s over batch, head and position.
    q_batch: u32,
    q_head: u32,
    q_position: u32,
    k_batch: u32,
    k_head: u32,
    k_position: u32,
    v_batch: u32,
    v_head: u32,
    v_position: u32,
    // k_past and v_past alike.
    past_batch: u32,
    past_head: u32,
    past_position: u32,
    // Where the backward kernels write the gradients of q, and of k and v (alike), in vec4s: strides
    // over batch, head and position, and the offset of each. Separate contiguous tensors, or
    // (for heads split out of one projection) the parts of the projection's gradient.
    dq_batch: u32,
    dq_head: u32,
    dq_position: u32,
    dkv_batch: u32,
    dkv_head: u32,
    dkv_position: u32,
    dq_offset: u32,
    dk_offset: u32,
    dv_offset: u32,
    // attention_backward_key.wgsl's part of the keys, `part_len` of them from key `part_first` on
    // (the cache's or the sequence's own), read through the k and v strides and written through
    // the dkv ones.
    part_first: u32,
    part_len: u32,
    // Whether q, k and v are the heads of one fused projection, bound once (as q): k's and v's
    // elements then lie k_offset and v_offset vec4s after q's, and dk binds the projection's
    // gradient, v's part included. WebGPU refuses writable bindings whose ranges overlap, so
    // views of one buffer cannot be bound apart.
    fused: u32,
    k_offset: u32,
    v_offset: u32,
}

// The sequence's own key vec4 at `index` (row and column) of k, or of the fused projection.
fn own_key(index: u32) -> vec4<f32> {
    if params.fused != 0u {
        return q[params.k_offset + index];
    }
    return k[index];
}

// As own_key(), for values.
fn own_value(index: u32) -> vec4<f32> {
    if params.fused != 0u {
        return q[params.v_offset + index];
    }
    return v[index];
}

// Most vec4 columns of a head (head_dim 256): each lane keeps rows of this length in private memory.
const MAX_COLUMNS: u32 = 64u;

// The keys query `position` sees: 0..keys_seen(position).
fn keys_seen(position: u32) -> u32 {
    if params.causal != 0u {
        return params.keys - params.queries + position + 1u;
    }
    return params.keys;
}

// The first query that sees key `key`.
fn first_query(key: u32) -> u32 {
    let past = params.keys - params.queries;
    if params.causal != 0u && key > past {
        return key - past;
    }
    return 0u;
}
