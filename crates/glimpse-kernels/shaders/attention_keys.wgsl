// Where attention.wgsl and attention_backward_query.wgsl find a key or value: the first `past`
// in k_past and v_past (a cache, through their own strides), the rest in k and v. Each of the two
// kernels declares the four bindings.

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
