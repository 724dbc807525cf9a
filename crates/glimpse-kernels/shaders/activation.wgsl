// The activations of glimpse_kernels::Activation::apply, clamps included, and their derivatives,
// for the kernels that end in one (put in front of them by glimpse-kernels, after workgroup.wgsl). WGSL lets
// implementations assume finite arithmetic, so exp and tanh never see an argument whose result
// overflows.

const SIGMOID_SATURATES: f32 = 30.0;
const TANH_SATURATES: f32 = 10.0;

// erf(x) by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7); WGSL has no erf.
fn erf(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-a * a));
}

// x sigmoid(a x), its argument clamped.
fn x_sigmoid(x: f32, a: f32) -> f32 {
    return x / (1.0 + exp(-clamp(a * x, -SIGMOID_SATURATES, SIGMOID_SATURATES)));
}

// d/dx x sigmoid(a x), zero where the clamp holds.
fn x_sigmoid_derivative(x: f32, a: f32) -> f32 {
    let z = a * x;
    let s = 1.0 / (1.0 + exp(-clamp(z, -SIGMOID_SATURATES, SIGMOID_SATURATES)));
    // select, not a product with 0: 0 * inf is NaN.
    return s + select(0.0, x * a * s * (1.0 - s), abs(z) < SIGMOID_SATURATES);
}

// `activation` (Activation::code): 0 QuickGELU x sigmoid(1.702 x); 1 GELU, tanh approximation;
// 2 GELU, exact (erf); 3 ReLU; 4 SiLU x sigmoid(x); anything else: none.
fn activate(x: f32, activation: u32) -> f32 {
    switch activation {
        case 0u: {
            return x_sigmoid(x, 1.702);
        }
        case 1u: {
            let inner = (x + 0.044715 * x * x * x) * 0.7978845608028654;
            return 0.5 * x * (1.0 + tanh(clamp(inner, -TANH_SATURATES, TANH_SATURATES)));
        }
        case 2u: {
            return 0.5 * x * (1.0 + erf(x * 0.7071067811865476));
        }
        case 3u: {
            // NaN stays NaN, as in Burn's relu.
            return select(x, 0.0, x <= 0.0);
        }
        case 4u: {
            return x_sigmoid(x, 1.0);
        }
        default: {
            return x;
        }
    }
}

// d activate(x) / dx, as autodiff takes it through Activation::apply: zero where a clamp holds the
// argument (the derivative there is below 1e-12 anyway).
fn activate_derivative(x: f32, activation: u32) -> f32 {
    switch activation {
        case 0u: {
            return x_sigmoid_derivative(x, 1.702);
        }
        case 1u: {
            let inner = (x + 0.044715 * x * x * x) * 0.7978845608028654;
            let t = tanh(clamp(inner, -TANH_SATURATES, TANH_SATURATES));
            let slope = 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x);
            return 0.5 * (1.0 + t) + select(0.0, slope, abs(inner) < TANH_SATURATES);
        }
        case 2u: {
            // 0.5 (1 + erf(x / sqrt 2)) + x * exp(-x^2 / 2) / sqrt(2 pi), the second term zero far
            // out: exp of the clamped argument does not underflow, and x times it would grow.
            let tail = select(0.0, x * exp(-0.5 * min(x * x, 170.0)) * 0.3989422804014327, abs(x) < 14.0);
            return 0.5 * (1.0 + erf(x * 0.7071067811865476)) + tail;
        }
        case 3u: {
            // As autodiff takes Burn's relu: 0 at 0.
            return select(0.0, 1.0, x > 0.0);
        }
        case 4u: {
            return x_sigmoid_derivative(x, 1.0);
        }
        default: {
            return 1.0;
        }
    }
}
