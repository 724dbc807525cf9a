// A few rows through a dense layer in one dispatch: out = activate(input @ w + bias), where Burn
// takes a tiled matmul (whose tiles a single row mostly leaves empty), a bias add and, for an
// MLP's first layer, the activation's kernels.
//
// This file is the product; a variant file after it declares the bindings and what happens
// around the product (WGSL resolves names across the module, so the body can call them):
//   linear_plain.wgsl:    input = x, out = the result.
//   linear_residual.wgsl: input = x, out = residual + the result (a block's residual add).
//   linear_normed.wgsl:   input = LayerNorm(x), out = the result (a pre-LN block's LayerNorm).
// Each variant defines prepare(lane) (run by every lane before the product), input(row, i) (the
// product's input element) and store(row, quad, value) (writes four output columns).
//
// x: [m, k] f32, contiguous, m <= MAX_ROWS. w: [k, n], contiguous (Burn's Linear layout: each
// input's weights to all outputs side by side), n % 4 == 0, read as vec4 along n. bias: [n].
// out: [m, n], contiguous.
// One workgroup per COLUMN_LANES * 4 output columns. Its lanes are COLUMN_LANES column lanes
// (a vec4 of columns each, so neighbouring lanes read neighbouring weights) times SLICES slices
// of the inputs: slice s takes inputs s, s + SLICES, ...; the slices' sums meet in workgroup
// memory, one row of x at a time.

// WORKGROUP_SIZE and workgroup_sum() come from workgroup.wgsl, activate() from activation.wgsl,
// both put in front of this file by glimpse-kernels.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    // As activate() takes it.
    activation: u32,
    // LayerNorm's, for linear_normed.wgsl.
    epsilon: f32,
}

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
    prepare(lane);

    var sums: array<vec4<f32>, MAX_ROWS>;
    if in_range {
        if params.m == 1u {
            // Decoding's case, with its sum in a register: the general loop below keeps `sums` in
            // memory on lavapipe (a dynamically indexed array), which halves its speed there.
            var sum = vec4(0.0);
            for (var i = slice; i < params.k; i += SLICES) {
                sum += input(0u, i) * w[i * quads + quad];
            }
            sums[0] = sum;
        } else {
            for (var i = slice; i < params.k; i += SLICES) {
                let weights = w[i * quads + quad];
                for (var row = 0u; row < params.m; row++) {
                    sums[row] += input(row, i) * weights;
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
            store(row, quad, vec4(activate(total.x, a), activate(total.y, a), activate(total.z, a), activate(total.w, a)));
        }
        // The next row overwrites `slice_sums`.
        workgroupBarrier();
    }
}
