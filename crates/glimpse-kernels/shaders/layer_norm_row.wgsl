// Shared by layer_norm.wgsl and layer_norm_backward.wgsl, put in front of each: their parameters,
// the row a workgroup takes, and the row's mean and reciprocal spread, computed identically for
// the forward pass and its gradient. Each kernel file declares `x` and `params`.
//
// x: [rows, dim], contiguous. One workgroup per row, numbered by spread_group() (workgroup.wgsl).

struct Params {
    rows: u32,
    dim: u32,
    epsilon: f32,
    row_groups: u32,
}

fn row_of(group_id: vec3<u32>) -> u32 {
    return spread_group(group_id, params.row_groups);
}

// (mean, 1 / sqrt(var + epsilon)) of the row starting at `base`, with the biased variance of the
// centred row (two passes over the row, as Burn's LayerNorm computes it, rather than
// E[x^2] - mean^2). Every lane must call it (it holds barriers).
fn row_moments(base: u32, lane: u32) -> vec2<f32> {
    let dim = params.dim;
    var sum = 0.0;
    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(sum, lane) / f32(dim);
    var squares = 0.0;
    for (var i = lane; i < dim; i += WORKGROUP_SIZE) {
        let centred = x[base + i] - mean;
        squares += centred * centred;
    }
    return vec2<f32>(mean, 1.0 / sqrt(workgroup_sum(squares, lane) / f32(dim) + params.epsilon));
}
