// What attention.wgsl and its two backward kernels share: their parameters, which keys a query
// sees, and where a key or value lies: the first `past` keys and values in k_past and v_past (a
// cache, through their own strides), the rest in k and v. Each kernel declares the four bindings.

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

// Where key `j` of (batch, head) starts, in vec4s of k_past (j < past) or of k.
fn key_row(batch: u32, head: u32, j: u32) -> u32 {
    if j < params.past {
        return batch * params.past_batch + head * params.past_head + j * params.past_position;
    }
    return batch * params.k_batch + head * params.k_head + (j - params.past) * params.k_position;
}

// As key_row(), for values.
fn value_row(batch: u32, head: u32, j: u32) -> u32 {
    if j < params.past {
        return batch * params.past_batch + head * params.past_head + j * params.past_position;
    }
    return batch * params.v_batch + head * params.v_head + (j - params.past) * params.v_position;
}

// The vec4 at `row + c` of key `j`.
fn key_at(j: u32, row: u32, c: u32) -> vec4<f32> {
    if j < params.past {
        return k_past[row + c];
    }
    return k[row + c];
}

// The vec4 at `row + c` of value `j`.
fn value_at(j: u32, row: u32, c: u32) -> vec4<f32> {
    if j < params.past {
        return v_past[row + c];
    }
    return v[row + c];
}
