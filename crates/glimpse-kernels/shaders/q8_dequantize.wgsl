// A matrix of 8-bit weights in f32, for the products with more rows than q8_matvec.wgsl takes and
// for their gradient: out[r, c] = scale * byte (q8.rs's layout), the first `columns` inputs of
// each row.
//
// packed: [n, words] u32, four signed bytes per word, little-endian (input 4j + i in bits
// 8i..8i + 8 of word j). scales: [n, blocks] f32, one per 32 inputs. out: [n, columns] f32,
// contiguous. One lane per output element, workgroups numbered by spread_group() (workgroup.wgsl).

struct Params {
    len: u32,
    columns: u32,
    words: u32,
    blocks: u32,
    groups_x: u32,
}

// All read_write: see q8_matvec.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> packed: array<u32>;
@group(0) @binding(1) var<storage, read_write> scales: array<f32>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let e = spread_group(group_id, params.groups_x) * WORKGROUP_SIZE + lane;
    if e >= params.len {
        return;
    }
    let row = e / params.columns;
    let column = e % params.columns;
    let word = packed[row * params.words + column / 4u];
    // The byte shifted to the top, then arithmetically back down: sign-extended.
    let byte = bitcast<i32>(word << (24u - 8u * (column % 4u))) >> 24u;
    output[e] = scales[row * params.blocks + column / 32u] * f32(byte);
}
