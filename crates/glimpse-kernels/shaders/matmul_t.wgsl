// A few rows times a matrix stored as rows: out = x @ w^T. This is the tied LM head's product
// (GPT-2 small: 50257 x 768, the largest of a decoding step), where Burn's tiled matmul leaves
// most of each tile empty.
//
// x: [m, k] f32, contiguous, m <= MAX_ROWS, k % 4 == 0, read as vec4. w: [n, k], contiguous,
// read as vec4. out: [m, n], contiguous.
// Each workgroup computes COLUMNS outputs. LANES_PER_COLUMN lanes share an output: lane j of them
// takes the vec4s j, j + LANES_PER_COLUMN, ... of its weight row (neighbouring lanes read
// neighbouring memory), and their sums meet in workgroup memory, one row of x at a time.
// Column groups are numbered by spread_group().

// WORKGROUP_SIZE and spread_group() come from workgroup.wgsl, put in front of this file by
// glimpse-kernels.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    groups_x: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> output: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const MAX_ROWS: u32 = 8u;
const LANES_PER_COLUMN: u32 = 16u;
const COLUMNS: u32 = WORKGROUP_SIZE / LANES_PER_COLUMN;

var<workgroup> lane_sums: array<f32, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let part = lane % LANES_PER_COLUMN;
    let local_column = lane / LANES_PER_COLUMN;
    let column = spread_group(group_id, params.groups_x) * COLUMNS + local_column;
    // Lanes past the last column still take part in the barriers below.
    let in_range = column < params.n;
    let quads = params.k / 4u;

    var sums: array<f32, MAX_ROWS>;
    if in_range {
        let base = column * quads;
        if params.m == 1u {
            // Decoding's case, with its sum in a register (see linear.wgsl).
            var sum = 0.0;
            for (var j = part; j < quads; j += LANES_PER_COLUMN) {
                sum += dot(x[j], w[base + j]);
            }
            sums[0] = sum;
        } else {
            for (var j = part; j < quads; j += LANES_PER_COLUMN) {
                let weights = w[base + j];
                for (var row = 0u; row < params.m; row++) {
                    sums[row] += dot(x[row * quads + j], weights);
                }
            }
        }
    }

    for (var row = 0u; row < params.m; row++) {
        lane_sums[lane] = sums[row];
        workgroupBarrier();
        if part == 0u && in_range {
            var total = 0.0;
            for (var p = 0u; p < LANES_PER_COLUMN; p++) {
                total += lane_sums[local_column * LANES_PER_COLUMN + p];
            }
            output[row * params.n + column] = total;
        }
        // The next row overwrites `lane_sums`.
        workgroupBarrier();
    }
}
