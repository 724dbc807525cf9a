//! The transformers' activations, and an MLP's bias plus activation in one kernel (with its
//! gradient in one more under autodiff: a frozen MLP on the way to a prefix), in WGSL on wgpu and
//! in Rust on the CPU backend.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::{gelu, relu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::cpu::{dims2, elements, flex_f32, for_each_part};
use crate::wgsl::wgpu_f32;

/// Activation functions by their Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// tanh approximation of GELU, GPT-2.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast", alias = "gelu_python_tanh")]
    GeluTanh,
    /// exact (erf) GELU.
    #[serde(rename = "gelu", alias = "gelu_python")]
    Gelu,
    /// `max(x, 0)`.
    #[serde(rename = "relu")]
    Relu,
    /// `x * sigmoid(x)`.
    #[serde(rename = "silu", alias = "swish")]
    Silu,
}

impl Activation {
    /// In Burn operations: any backend, autodiff included.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x_sigmoid(x, 1.702),
            Self::GeluTanh => gelu_tanh(x),
            Self::Gelu => gelu(x),
            Self::Relu => relu(x),
            Self::Silu => x_sigmoid(x, 1.0),
        }
    }

    /// `activate()`'s code for it in `shaders/activation.wgsl`; none is [`NO_ACTIVATION`].
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::QuickGelu => 0,
            Self::GeluTanh => 1,
            Self::Gelu => 2,
            Self::Relu => 3,
            Self::Silu => 4,
        }
    }

    /// Of one value, as [`Activation::apply`] computes it, clamps included (the CPU backend's kernel).
    fn of(self, x: f32) -> f32 {
        match self {
            Self::QuickGelu => x * sigmoid_of(1.702 * x),
            Self::Silu => x * sigmoid_of(x),
            // NaN stays NaN, as in Burn's relu (f32::max would make it 0).
            Self::Relu => {
                if x <= 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Self::GeluTanh => 0.5 * x * (1.0 + tanh(gelu_tanh_inner(x).clamp(-TANH_SATURATES, TANH_SATURATES))),
            Self::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    /// The derivative of [`Activation::of`] as autodiff takes it through [`Activation::apply`]: zero
    /// where a clamp holds the argument (the derivative there is below 1e-12 anyway). The exact
    /// GELU's is exact (Burn's backward of its `gelu` is the tanh approximation's).
    fn derivative(self, x: f32) -> f32 {
        match self {
            Self::QuickGelu => x_sigmoid_derivative(x, 1.702),
            Self::Silu => x_sigmoid_derivative(x, 1.0),
            // As autodiff takes Burn's relu: 0 at 0.
            Self::Relu => f32::from(x > 0.0),
            Self::GeluTanh => {
                let inner = gelu_tanh_inner(x);
                let t = tanh(inner.clamp(-TANH_SATURATES, TANH_SATURATES));
                let slope = 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
                0.5 * (1.0 + t) + if inner.abs() < TANH_SATURATES { slope } else { 0.0 }
            }
            Self::Gelu => {
                // x times the normal density: zero far out, where it is below f32's reach anyway
                // and a product with x could only grow.
                let density =
                    (-0.5 * x * x).exp() * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
                let tail = if x.abs() < 14.0 { x * density } else { 0.0 };
                0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)) + tail
            }
        }
    }
}

/// `activate()`'s code for no activation.
pub(crate) const NO_ACTIVATION: u32 = 5;

/// `x sigmoid(a x)` (QuickGELU, SiLU), the sigmoid's argument clamped.
fn x_sigmoid<const D: usize>(x: Tensor<D>, a: f64) -> Tensor<D> {
    x.clone() * sigmoid((x * a).clamp(-SIGMOID_SATURATES, SIGMOID_SATURATES))
}

/// `sigmoid(z)`, its argument clamped as [`Activation::apply`] clamps it.
fn sigmoid_of(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z.clamp(-SIGMOID_SATURATES, SIGMOID_SATURATES)))
}

/// The derivative of `x sigmoid(a x)` (QuickGELU, SiLU) as autodiff takes it through the clamp.
fn x_sigmoid_derivative(x: f32, a: f32) -> f32 {
    let z = a * x;
    let s = sigmoid_of(z);
    // Not a product with 0 where clamped: 0 * inf is NaN.
    s + if z.abs() < SIGMOID_SATURATES { x * a * s * (1.0 - s) } else { 0.0 }
}

// WGSL lets implementations assume finite arithmetic, and SwiftShader's WebGPU does: a sigmoid or
// tanh whose inner exp overflows comes out NaN there. Their arguments are clamped where the result
// is already exactly saturated in f32 (sigmoid(-30) ~ 1e-13 next to values of order 1; tanh(10)
// rounds to 1), so the clamps change nothing elsewhere. The kernel clamps the same.
const SIGMOID_SATURATES: f32 = 30.0;
const TANH_SATURATES: f32 = 10.0;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU's tanh approximation (GPT-2's `gelu_new`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * (inner.clamp(-TANH_SATURATES, TANH_SATURATES).tanh() + 1.0) * 0.5
}

/// `sqrt(2/pi) (x + 0.044715 x^3)`, the argument of [`gelu_tanh`]'s tanh.
fn gelu_tanh_inner(x: f32) -> f32 {
    (x + 0.044715 * x * x * x) * SQRT_2_OVER_PI
}

/// `e^x` for `x` in `[-87, 88]` (beyond, the value at the nearer end), within 1.5e-7 relative, in
/// straight-line arithmetic that the compiler vectorises: a loop calling `f32::exp` calls libm
/// once per element, and in WebAssembly libm is software. `x = n ln 2 + r` with `|r| <= ln 2 / 2`;
/// `e^r` is its Taylor series to `r^7` (truncation below 6e-9), `2^n` is written into the exponent.
fn exp(x: f32) -> f32 {
    // ln 2 in two parts, the first with few enough bits that `n * LN2_HIGH` is exact.
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HIGH) - n * LN2_LOW;
    let mut p = 1.0 / 5040.0;
    for k in [720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / k;
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `tanh(x)` through [`exp`], within 2.5e-7 absolute.
fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `activation(y + bias)`, the bias broadcast over the last dimension; without an activation,
/// `y + bias`.
///
/// y: `[..., n]`, bias: `[n]` -> `[..., n]`.
///
/// Runs the WGSL kernel `shaders/bias_activation.wgsl` when both are f32 on a wgpu device, under
/// autodiff too (with `shaders/bias_activation_backward.wgsl` for the gradient of `y`) when there
/// is an activation and the bias is not tracked. On the CPU backend, with an activation, the same
/// two in Rust (one pass over `y` each, split over threads, instead of a dozen Burn operations
/// and their backwards). Otherwise [`bias_activation_fallback`].
pub fn bias_activation<const D: usize>(
    y: Tensor<D>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    let n = y.dims()[D - 1];
    // The kernel indexes the bias by column: a mismatch must stop here, not read out of bounds.
    assert!(
        bias.as_ref().is_none_or(|b| b.dims() == [n]),
        "bias_activation: y {:?} and bias {:?} do not match",
        y.dims(),
        bias.as_ref().map(Tensor::dims)
    );
    match bias {
        Some(bias) if bias_activation_uses_kernel(&y, Some(&bias), activation) => {
            let shape = y.dims();
            let output = <Dispatch as BiasActivationBackend>::bias_activation(
                y.reshape([-1, n as i32]).into_dispatch(),
                bias.into_dispatch(),
                activation,
            );
            Tensor::<2>::from_dispatch(output).reshape(shape)
        }
        bias => bias_activation_fallback(y, bias, activation),
    }
}

/// Whether [`bias_activation`] runs a kernel (the WGSL one or the CPU backend's) for these inputs
/// rather than the fallback.
pub fn bias_activation_uses_kernel<const D: usize>(
    y: &Tensor<D>,
    bias: Option<&Tensor<1>>,
    activation: Option<Activation>,
) -> bool {
    let Some(bias) = bias else { return false };
    let len = y.shape().num_elements();
    // Elements are indexed as u32 on wgpu. Under autodiff a bias alone stays Burn's add, whose
    // backward passes the gradient on without a launch; on the CPU backend a bias alone is one
    // pass in Burn already.
    let device = (wgpu_f32(y) && wgpu_f32(bias)) || (flex_f32(y) && flex_f32(bias) && activation.is_some());
    len > 0 && u32::try_from(len).is_ok() && device && (activation.is_some() || !y.is_autodiff()) && !bias.is_tracked()
}

/// [`bias_activation`] in Burn operations: any backend, autodiff included. Same shapes.
pub fn bias_activation_fallback<const D: usize>(
    y: Tensor<D>,
    bias: Option<Tensor<1>>,
    activation: Option<Activation>,
) -> Tensor<D> {
    let y = match bias {
        Some(bias) => y + bias.unsqueeze(),
        None => y,
    };
    match activation {
        Some(activation) => activation.apply(y),
        None => y,
    }
}

/// `activation(y + bias)` with its own backward, on the CPU backend and on wgpu: the backward
/// recomputes the activation's derivative from `y` instead of autodiff keeping every intermediate
/// of a dozen operations.
#[backend_extension(Flex, Cube: cfg(wgpu), Autodiff)]
trait BiasActivationBackend: Backend {
    /// `[rows, n]`, `[n]` -> `[rows, n]`.
    fn bias_activation(
        y: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Option<Activation>,
    ) -> FloatTensor<Self>;
    /// The gradient of `y` from the output's, `grad * activation'(y + bias)`: `[rows, n]`.
    fn bias_activation_input_grad(
        y: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        activation: Option<Activation>,
    ) -> FloatTensor<Self>;
}

impl BiasActivationBackend for Flex {
    fn bias_activation(y: FlexTensor, bias: FlexTensor, activation: Option<Activation>) -> FlexTensor {
        let (y, bias) = (y.to_contiguous(), bias.to_contiguous());
        let (ys, bias) = (elements::<f32>(&y), elements::<f32>(&bias));
        let out = match activation {
            Some(Activation::QuickGelu) => by_element(ys, bias, None, |x, _| Activation::QuickGelu.of(x)),
            Some(Activation::GeluTanh) => by_element(ys, bias, None, |x, _| Activation::GeluTanh.of(x)),
            Some(Activation::Gelu) => by_element(ys, bias, None, |x, _| Activation::Gelu.of(x)),
            Some(Activation::Relu) => by_element(ys, bias, None, |x, _| Activation::Relu.of(x)),
            Some(Activation::Silu) => by_element(ys, bias, None, |x, _| Activation::Silu.of(x)),
            None => by_element(ys, bias, None, |x, _| x),
        };
        FlexTensor::from_data(TensorData::new(out, dims2(&y)))
    }

    fn bias_activation_input_grad(
        y: FlexTensor,
        bias: FlexTensor,
        grad: FlexTensor,
        activation: Option<Activation>,
    ) -> FlexTensor {
        let (y, bias, grad) = (y.to_contiguous(), bias.to_contiguous(), grad.to_contiguous());
        let (ys, bias, grads) = (elements::<f32>(&y), elements::<f32>(&bias), Some(elements::<f32>(&grad)));
        let out = match activation {
            Some(Activation::QuickGelu) => by_element(ys, bias, grads, |x, g| g * Activation::QuickGelu.derivative(x)),
            Some(Activation::GeluTanh) => by_element(ys, bias, grads, |x, g| g * Activation::GeluTanh.derivative(x)),
            Some(Activation::Gelu) => by_element(ys, bias, grads, |x, g| g * Activation::Gelu.derivative(x)),
            Some(Activation::Relu) => by_element(ys, bias, grads, |x, g| g * Activation::Relu.derivative(x)),
            Some(Activation::Silu) => by_element(ys, bias, grads, |x, g| g * Activation::Silu.derivative(x)),
            None => by_element(ys, bias, grads, |_, g| g),
        };
        FlexTensor::from_data(TensorData::new(out, dims2(&y)))
    }
}

/// Elements of a CPU task at least, so that a task is worth its scheduling.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// `f(y + bias, grad)` for each element of `ys` `[rows, n]` (`grad` 0 without `grads`), rows
/// split over threads. Generic in `f` so that each activation's loop is compiled on its own.
fn by_element(ys: &[f32], bias: &[f32], grads: Option<&[f32]>, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let n = bias.len();
    let mut out = vec![0f32; ys.len()];
    if n == 0 {
        return out;
    }
    for_each_part(&mut out, n, (ELEMENTS_PER_TASK / n).max(1), ys.len(), |(row, out)| {
        let ys = &ys[row * n..][..n];
        match grads {
            Some(grads) => {
                let grads = &grads[row * n..][..n];
                for (((out, &y), &b), &g) in out.iter_mut().zip(ys).zip(bias).zip(grads) {
                    *out = f(y + b, g);
                }
            }
            None => {
                for ((out, &y), &b) in out.iter_mut().zip(ys).zip(bias) {
                    *out = f(y + b, 0.0);
                }
            }
        }
    });
    out
}

impl<B: BiasActivationBackend, C: CheckpointStrategy> BiasActivationBackend for Autodiff<B, C> {
    fn bias_activation(
        y: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        activation: Option<Activation>,
    ) -> FloatTensor<Self> {
        // Only y is registered as a parent: a tracked bias would silently get no gradient, and
        // `bias_activation` sends one to the fallback.
        assert!(!bias.is_tracked(), "bias_activation kernel: the bias must not be tracked");
        let bias = Self::inner(bias);
        match BiasActivationBackward.prepare::<C>([y.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = y.into_primitive();
                let output = B::bias_activation(y.clone(), bias.clone(), activation);
                prep.finish(BackwardState::<B> { y, bias, activation }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bias_activation(y.into_primitive(), bias, activation)),
        }
    }

    /// Not differentiated itself: the backward of [`BiasActivationBackend::bias_activation`] calls
    /// the inner backend's.
    fn bias_activation_input_grad(
        y: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        activation: Option<Activation>,
    ) -> FloatTensor<Self> {
        Self::from_inner(B::bias_activation_input_grad(
            Self::inner(y),
            Self::inner(bias),
            Self::inner(grad),
            activation,
        ))
    }
}

/// What the backward needs: the forward's inputs, from which the activation's derivative is
/// recomputed.
#[derive(Debug, Clone)]
struct BackwardState<B: Backend> {
    /// `[rows, n]`.
    y: FloatTensor<B>,
    /// `[n]`.
    bias: FloatTensor<B>,
    activation: Option<Activation>,
}

#[derive(Debug)]
struct BiasActivationBackward;

impl<B: BiasActivationBackend> Backward<B, 1> for BiasActivationBackward {
    type State = BackwardState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [y_node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = y_node {
            let BackwardState { y, bias, activation } = ops.state;
            grads.register::<B>(node.id, B::bias_activation_input_grad(y, bias, grad, activation));
        }
    }
}

#[cfg(wgpu)]
/// The WGSL half: the kernels on wgpu.
mod wgpu {
    use burn::backend::Cube;
    use burn::backend::wgpu::CubeTensor;

    use super::*;
    use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size, spread};

    const SOURCE: WgslSource =
        kernel_source!("activation.wgsl", "bias_activation_element.wgsl", "bias_activation.wgsl");
    /// Names the kernel in launch counts.
    struct BiasActivationShader;
    const BACKWARD: WgslSource =
        kernel_source!("activation.wgsl", "bias_activation_element.wgsl", "bias_activation_backward.wgsl");
    /// Names the backward kernel in launch counts.
    struct BiasActivationBackwardShader;

    /// Lanes per workgroup, one element each.
    const WORKGROUP_SIZE: u32 = 64;

    impl BiasActivationBackend for Cube {
        fn bias_activation(y: CubeTensor, bias: CubeTensor, activation: Option<Activation>) -> CubeTensor {
            forward(y, bias, activation)
        }

        fn bias_activation_input_grad(
            y: CubeTensor,
            bias: CubeTensor,
            grad: CubeTensor,
            activation: Option<Activation>,
        ) -> CubeTensor {
            let inputs = [y, bias, grad].map(contiguous);
            launch_elementwise::<BiasActivationBackwardShader>(BACKWARD, &inputs, activation)
        }
    }

    /// y: `[rows, n]`.
    fn forward(y: CubeTensor, bias: CubeTensor, activation: Option<Activation>) -> CubeTensor {
        launch_elementwise::<BiasActivationShader>(SOURCE, &[y, bias].map(contiguous), activation)
    }

    /// Launches one of the two shaders over `inputs` (`[y, bias]` forward, `[y, bias, the output's
    /// gradient]` backward), all contiguous with y `[rows, n]`: one lane per element of y, a new tensor
    /// of y's shape.
    fn launch_elementwise<Name: 'static>(
        source: WgslSource,
        inputs: &[CubeTensor],
        activation: Option<Activation>,
    ) -> CubeTensor {
        let shape = inputs[0].meta.shape().clone();
        let (len, n) = (shape.num_elements(), shape[1]);
        let (workgroups, groups_x) = spread(len.div_ceil(WORKGROUP_SIZE as usize));
        let inputs: Vec<&CubeTensor> = inputs.iter().collect();
        launch_to_output(
            WgslKernel::<Name>::new(source, WORKGROUP_SIZE),
            workgroups,
            &inputs,
            shape,
            &[size(len), size(n), activation.map_or(NO_ACTIVATION, Activation::code), groups_x],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{exp, tanh};

    /// Every 1/4096 over the range, in f64 for the reference.
    fn grid(from: f32, to: f32) -> impl Iterator<Item = f32> {
        let steps = ((to - from) * 4096.0) as usize;
        (0..=steps).map(move |i| from + i as f32 / 4096.0)
    }

    #[test]
    fn exp_is_within_1_5e_7_relative_and_holds_its_ends() {
        let worst = grid(-87.0, 88.0)
            .map(|x| ((f64::from(exp(x)) - f64::from(x).exp()) / f64::from(x).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1.5e-7, "{worst:e}");
        assert_eq!((exp(-1e4), exp(1e4)), (exp(-87.0), exp(88.0)));
        assert!(exp(88.0).is_finite() && exp(-87.0) > 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_is_within_2_5e_7_absolute() {
        let worst = grid(-50.0, 50.0).map(|x| (f64::from(tanh(x)) - f64::from(x).tanh()).abs()).fold(0.0, f64::max);
        assert!(worst < 2.5e-7, "{worst:e}");
        assert_eq!((tanh(-1e4), tanh(1e4)), (-1.0, 1.0));
    }
}
