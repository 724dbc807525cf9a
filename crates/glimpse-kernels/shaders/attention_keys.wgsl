// What attention.wgsl and attention_backward_query.wgsl share, one lane per query: the lane's
// query, and where a key or value lies: the first `past` in k_past and v_past (a cache, through
// their own strides), the rest in k and v (or the fused projection). Each of the two kernels
// declares q and the four bindings.

// The lane's query, scaled: load_query() writes it.
var<private> query: array<vec4<f32>, MAX_COLUMNS>;

// Loads query `position` of (batch, head), scaled, into `query`.
fn load_query(batch: u32, head: u32, position: u32, columns: u32) {
    let row = batch * params.q_batch + head * params.q_head + position * params.q_position;
    for (var c = 0u; c < columns; c++) {
        query[c] = q[row + c] * params.scale;
    }
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
    return own_key(row + c);
}

// The vec4 at `row + c` of value `j`.
fn value_at(j: u32, row: u32, c: u32) -> vec4<f32> {
    if j < params.past {
        return v_past[row + c];
    }
    return own_value(row + c);
}

// The lane's score of key `j` (which starts at `row`): four vec4s a loop turn.
fn score_of(j: u32, row: u32, columns: u32) -> f32 {
    var score = 0.0;
    for (var c = 0u; c < columns; c += 4u) {
        score += dot(query[c], key_at(j, row, c)) + dot(query[c + 1u], key_at(j, row, c + 1u))
            + dot(query[c + 2u], key_at(j, row, c + 2u)) + dot(query[c + 3u], key_at(j, row, c + 3u));
    }
    return score;
}
