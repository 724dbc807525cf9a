// linear.wgsl's LayerNorm variant: out = activate(LayerNorm(x) @ w + bias), a pre-LN block's
// LayerNorm and the projection after it in one dispatch. gamma, beta: [k].
// Every workgroup computes the rows' mean and variance itself (at most 8 rows of k, next to the
// k x 64 weights it reads), in one reduction of per-lane (count, mean, sum of squared deviations)
// combined as Chan et al. do: as stable as two passes over the centred row, with a third of the
// barriers.

// All read_write: see decode_attention.wgsl (one wgpu buffer may hold several tensors).
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> bias: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> output: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> params: Params;

// Each row's mean and 1 / sqrt(var + epsilon), the same in every lane (each lane gets them from
// the reduction), so private: no barrier to publish them.
var<private> row_stats: array<vec2<f32>, MAX_ROWS>;

// The first level's combined moments (count, mean, M2) of SPAN lanes each.
var<workgroup> span_moments: array<vec3<f32>, SPANS>;

// Moments a and b of two disjoint sets, as those of their union.
fn combine(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let count = a.x + b.x;
    if count == 0.0 {
        return a;
    }
    let delta = b.y - a.y;
    return vec3(count, a.y + delta * b.x / count, a.z + b.z + delta * delta * a.x * b.x / count);
}

fn prepare(lane: u32) {
    let k = params.k;
    for (var row = 0u; row < params.m; row++) {
        // Welford over this lane's elements.
        var moments = vec3(0.0);
        for (var i = lane; i < k; i += WORKGROUP_SIZE) {
            let value = x[row * k + i];
            moments.x += 1.0;
            let delta = value - moments.y;
            moments.y += delta / moments.x;
            moments.z += delta * (value - moments.y);
        }
        // The product's `slice_sums` (linear.wgsl) is free until the product ends: it holds the
        // lanes' moments here.
        slice_sums[lane] = vec4(moments, 0.0);
        workgroupBarrier();
        if lane < SPANS {
            var span = vec3(0.0);
            for (var i = lane * SPAN; i < min(lane * SPAN + SPAN, WORKGROUP_SIZE); i++) {
                span = combine(span, slice_sums[i].xyz);
            }
            span_moments[lane] = span;
        }
        workgroupBarrier();
        var total = vec3(0.0);
        for (var i = 0u; i < SPANS; i++) {
            total = combine(total, span_moments[i]);
        }
        row_stats[row] = vec2(total.y, 1.0 / sqrt(total.z / f32(k) + params.epsilon));
        // The next row overwrites both arrays, the product `slice_sums`.
        workgroupBarrier();
    }
}

fn input(row: u32, i: u32) -> f32 {
    let stats = row_stats[row];
    return (x[row * params.k + i] - stats.x) * stats.y * gamma[i] + beta[i];
}

fn store(row: u32, quad: u32, value: vec4<f32>) {
    output[row * (params.n / 4u) + quad] = value;
}
