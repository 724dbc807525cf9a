//! The transformers' activations, and an MLP's bias plus activation in one kernel (with its
//! gradient in one more under autodiff: a frozen MLP on the way to a prefix).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::wgpu::CubeTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_source, launch_to_output, size, spread, wgpu_f32};

/// Activation functions by their Hugging Face names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI CLIP.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// tanh approximation of GELU, GPT-2.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
}

impl Activation {
    /// In Burn operations: any backend, autodiff included.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::QuickGelu => x.clone() * sigmoid((x * 1.702).clamp(-SIGMOID_SATURATES, SIGMOID_SATURATES)),
            Self::GeluTanh => gelu_tanh(x),
            Self::Gelu => gelu(x),
        }
    }

    /// `activate()`'s code for it in `shaders/activation.wgsl`; none is [`NO_ACTIVATION`].
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::QuickGelu => 0,
            Self::GeluTanh => 1,
            Self::Gelu => 2,
        }
    }
}

/// `activate()`'s code for no activation.
pub(crate) const NO_ACTIVATION: u32 = 3;

// WGSL lets implementations assume finite arithmetic, and SwiftShader's WebGPU does: a sigmoid or
// tanh whose inner exp overflows comes out NaN there. Their arguments are clamped where the result
// is already exactly saturated in f32 (sigmoid(-30) ~ 1e-13 next to values of order 1; tanh(10)
// rounds to 1), so the clamps change nothing elsewhere. The kernel clamps the same.
const SIGMOID_SATURATES: f32 = 30.0;
const TANH_SATURATES: f32 = 10.0;

/// GELU's tanh approximation (GPT-2's `gelu_new`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * (inner.clamp(-TANH_SATURATES, TANH_SATURATES).tanh() + 1.0) * 0.5
}

const SOURCE: WgslSource = kernel_source!("activation.wgsl", "bias_activation_element.wgsl", "bias_activation.wgsl");
/// Names the kernel in launch counts.
struct BiasActivationShader;
const BACKWARD: WgslSource =
    kernel_source!("activation.wgsl", "bias_activation_element.wgsl", "bias_activation_backward.wgsl");
/// Names the backward kernel in launch counts.
struct BiasActivationBackwardShader;

/// Lanes per workgroup, one element each.
const WORKGROUP_SIZE: u32 = 64;

/// `activation(y + bias)`, the bias broadcast over the last dimension; without an activation,
/// `y + bias`.
///
/// y: `[..., n]`, bias: `[n]` -> `[..., n]`.
///
/// Runs the WGSL kernel `shaders/bias_activation.wgsl` when both are f32 on a wgpu device, under
/// autodiff too (with `shaders/bias_activation_backward.wgsl` for the gradient of `y`) when there
/// is an activation and the bias is not tracked; otherwise [`bias_activation_fallback`].
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
                activation.map_or(NO_ACTIVATION, Activation::code),
            );
            Tensor::<2>::from_dispatch(output).reshape(shape)
        }
        bias => bias_activation_fallback(y, bias, activation),
    }
}

/// Whether [`bias_activation`] runs the WGSL kernel for these inputs (rather than the fallback).
pub fn bias_activation_uses_kernel<const D: usize>(
    y: &Tensor<D>,
    bias: Option<&Tensor<1>>,
    activation: Option<Activation>,
) -> bool {
    let Some(bias) = bias else { return false };
    let len = y.shape().num_elements();
    // Elements are indexed as u32. Under autodiff a bias alone stays Burn's add, whose backward
    // passes the gradient on without a launch.
    len > 0
        && u32::try_from(len).is_ok()
        && wgpu_f32(y)
        && (activation.is_some() || !y.is_autodiff())
        && wgpu_f32(bias)
        && !bias.is_tracked()
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

#[backend_extension(Cube, Autodiff)]
trait BiasActivationBackend: Backend {
    fn bias_activation(y: FloatTensor<Self>, bias: FloatTensor<Self>, activation: u32) -> FloatTensor<Self>;
}

impl BiasActivationBackend for Cube {
    fn bias_activation(y: CubeTensor, bias: CubeTensor, activation: u32) -> CubeTensor {
        forward(y, bias, activation)
    }
}

impl<C: CheckpointStrategy> BiasActivationBackend for Autodiff<Cube, C> {
    fn bias_activation(y: FloatTensor<Self>, bias: FloatTensor<Self>, activation: u32) -> FloatTensor<Self> {
        // Only y is registered as a parent: a tracked bias would silently get no gradient, and
        // `bias_activation` sends one to the fallback.
        assert!(!bias.is_tracked(), "bias_activation kernel: the bias must not be tracked");
        let bias = contiguous(bias.into_primitive());
        match BiasActivationBackward.prepare::<C>([y.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = contiguous(y.into_primitive());
                let output = forward(y.clone(), bias.clone(), activation);
                prep.finish(BackwardState { y, bias, activation }, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(y.into_primitive(), bias, activation)),
        }
    }
}

/// y: `[rows, n]`.
fn forward(y: CubeTensor, bias: CubeTensor, activation: u32) -> CubeTensor {
    launch_elementwise::<BiasActivationShader>(SOURCE, &[y, bias].map(contiguous), activation)
}

/// Launches one of the two shaders over `inputs` (`[y, bias]` forward, `[y, bias, the output's
/// gradient]` backward), all contiguous with y `[rows, n]`: one lane per element of y, a new tensor
/// of y's shape.
fn launch_elementwise<Name: 'static>(source: WgslSource, inputs: &[CubeTensor], activation: u32) -> CubeTensor {
    let shape = inputs[0].meta.shape().clone();
    let (len, n) = (shape.num_elements(), shape[1]);
    let (workgroups, groups_x) = spread(len.div_ceil(WORKGROUP_SIZE as usize));
    let inputs: Vec<&CubeTensor> = inputs.iter().collect();
    launch_to_output(
        WgslKernel::<Name>::new(source, WORKGROUP_SIZE),
        workgroups,
        &inputs,
        shape,
        &[size(len), size(n), activation, groups_x],
    )
}

#[derive(Debug, Clone)]
struct BackwardState {
    /// `[rows, n]` and `[n]`, contiguous: the forward's inputs, from which the activation's
    /// derivative is recomputed.
    y: CubeTensor,
    bias: CubeTensor,
    activation: u32,
}

#[derive(Debug)]
struct BiasActivationBackward;

impl Backward<Cube, 1> for BiasActivationBackward {
    type State = BackwardState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [y_node] = ops.parents;
        let grad = grads.consume::<Cube>(&ops.node);
        if let Some(node) = y_node {
            let BackwardState { y, bias, activation } = ops.state;
            let dy =
                launch_elementwise::<BiasActivationBackwardShader>(BACKWARD, &[y, bias, contiguous(grad)], activation);
            grads.register::<Cube>(node.id, dy);
        }
    }
}
