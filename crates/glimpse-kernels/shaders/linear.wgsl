// A few rows through a dense layer in one dispatch: out = activate(x @ w + bias), where Burn takes
// a tiled matmul (whose tiles a single row mostly leaves empty), a bias add and, for an MLP's
// first layer, the activation's kernels.
//
// x: [m, k] f32, contiguous, m <= MAX_ROWS. w: [k, n], contiguous (Burn's Linear layout: each
// input's weights to all outputs side by side), n % 4 == 0, read as vec4 along n. bias: [n].
// out: [m, n], contiguous.
// One workgroup per COLUMN_LANES * 4 output columns. Its lanes are COLUMN_LANES column lanes
// (a vec4 of columns each, so neighbouring lanes read neighbouring weights) times SLICES slices
// of the inputs: slice s takes inputs s, s + SLICES, ...; the slices' sums meet in workgroup
// memory, one row of x at a time.

// WORKGROUP_SIZE comes from workgroup.wgsl, activate() from activation.wgsl, both put in front of
// this file by glimpse-kernels.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    // As activate() takes it.
    activation: u32,
}

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> bias: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> params: Params;

const MAX_ROWS: u32 = 8u;
const COLUMN_LANES: u32 = 16u;
const SLICES: u32 = WORKGROUP_SIZE / COLUMN_LANES;

var<workgroup> slice_sums: array<vec4<f32>, WORKGROUP_SIZE>;

@compute @workgroup_size(WORKGROUP_SIZE)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let column_lane = lane % COLUMN_LANES;
    let slice = lane / COLUMN_LANES;
    let quads = params.n / 4u;
    let quad = group_id.x * COLUMN_LANES + column_lane;
    // Lanes past the last column still take part in the barriers below.
    let in_range = quad < quads;

    var sums: array<vec4<f32>, MAX_ROWS>;
    if in_range {
        if params.m == 1u {
            // Decoding's case, with its sum in a register: the general loop below keeps `sums` in
            // memory on lavapipe (a dynamically indexed array), which halves its speed there.
            var sum = vec4(0.0);
            for (var i = slice; i < params.k; i += SLICES) {
                sum += x[i] * w[i * quads + quad];
            }
            sums[0] = sum;
        } else {
            for (var i = slice; i < params.k; i += SLICES) {
                let weights = w[i * quads + quad];
                for (var row = 0u; row < params.m; row++) {
                    sums[row] += x[row * params.k + i] * weights;
                }
            }
        }
    }

    for (var row = 0u; row < params.m; row++) {
        slice_sums[lane] = sums[row];
        workgroupBarrier();
        if slice == 0u && in_range {
            var total = bias[quad];
            for (var s = 0u; s < SLICES; s++) {
                total += slice_sums[s * COLUMN_LANES + column_lane];
            }
            let a = params.activation;
            output[row * quads + quad] = vec4(activate(total.x, a), activate(total.y, a), activate(total.z, a), activate(total.w, a));
        }
        // The next row overwrites `slice_sums`.
        workgroupBarrier();
    }
}
