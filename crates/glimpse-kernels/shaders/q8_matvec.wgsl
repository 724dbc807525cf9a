// A few rows times a matrix of 8-bit weights: out = x @ w^T, w = scale * byte (q8.rs's layout),
// and what a dense layer does after it.
//
// This file is the product; a variant file after it declares the bindings and what happens to
// each output (WGSL resolves names across the module, so the body can call it):
//   q8_matvec_plain.wgsl:    the product alone.
//   q8_matvec_bias.wgsl:     activate(product + bias), a dense layer (activation.wgsl in front).
//   q8_matvec_residual.wgsl: residual + product + bias, a sublayer and the residual add after it.
// Each variant defines store(row, column, value).
//
// x: [m, k] f32, contiguous, m <= MAX_ROWS. packed: [n, words] u32, four signed bytes per word,
// little-endian (input 4j + i in bits 8i..8i + 8 of word j), zero past k. scales: [n, blocks] f32,
// one per 32 inputs (8 words). out: [m, n] f32, contiguous.
// One workgroup per output column: lane i takes words i, i + WORKGROUP_SIZE, ... of that weight
// row, for every row of x at once, and the lanes' sums are added up at the end.

// WORKGROUP_SIZE, `partials` and workgroup_sum() come from workgroup.wgsl, put in front of this
// file by glimpse-kernels.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    words: u32,
    blocks: u32,
    // As activate() takes it, for q8_matvec_bias.wgsl.
    activation: u32,
}

const MAX_ROWS: u32 = 8u;
const WORDS_PER_BLOCK: u32 = 8u;

// Input `index` of row `row`, or 0 past the row's end (the padding bytes are zero, but an
// out-of-bounds read may be anything, NaN included).
fn input(row: u32, index: u32) -> f32 {
    if index < params.k {
        return x[row * params.k + index];
    }
    return 0.0;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let column = group_id.x;
    var sums: array<f32, MAX_ROWS>;
    for (var word_index = lane; word_index < params.words; word_index += WORKGROUP_SIZE) {
        let word = packed[column * params.words + word_index];
        let scale = scales[column * params.blocks + word_index / WORDS_PER_BLOCK];
        // Each byte sign-extended: shifted to the top, then arithmetically back down.
        let weights = scale * vec4<f32>(
            f32(bitcast<i32>(word << 24u) >> 24u),
            f32(bitcast<i32>(word << 16u) >> 24u),
            f32(bitcast<i32>(word << 8u) >> 24u),
            f32(bitcast<i32>(word) >> 24u),
        );
        let first = 4u * word_index;
        for (var row = 0u; row < params.m; row++) {
            let inputs = vec4<f32>(input(row, first), input(row, first + 1u), input(row, first + 2u), input(row, first + 3u));
            sums[row] += dot(inputs, weights);
        }
    }
    for (var row = 0u; row < params.m; row++) {
        let total = workgroup_sum(sums[row], lane);
        if lane == 0u {
            store(row, column, total);
        }
    }
}
