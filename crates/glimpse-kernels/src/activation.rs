//! The transformers' activations, and an MLP's bias plus activation in one kernel.

use burn::backend::wgpu::CubeTensor;
use burn::backend::{Backend, Cube, Dispatch, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use serde::{Deserialize, Serialize};

use crate::wgsl::{WgslKernel, WgslSource, contiguous, kernel_input, kernel_source, launch_to_output, size, spread};

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

const SOURCE: WgslSource = kernel_source!("activation.wgsl", "bias_activation.wgsl");
/// Names the kernel in launch counts.
struct BiasActivationShader;

/// Lanes per workgroup, one element each.
const WORKGROUP_SIZE: u32 = 64;

/// `activation(y + bias)`, the bias broadcast over the last dimension; without an activation,
/// `y + bias`.
///
/// y: `[..., n]`, bias: `[n]` -> `[..., n]`.
///
/// Runs the WGSL kernel `shaders/bias_activation.wgsl` when both are f32 on a wgpu device outside
/// autodiff; otherwise [`bias_activation_fallback`].
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
        Some(bias) if bias_activation_uses_kernel(&y, Some(&bias)) => {
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
pub fn bias_activation_uses_kernel<const D: usize>(y: &Tensor<D>, bias: Option<&Tensor<1>>) -> bool {
    let Some(bias) = bias else { return false };
    let len = y.shape().num_elements();
    // Elements are indexed as u32.
    len > 0 && u32::try_from(len).is_ok() && kernel_input(y) && kernel_input(bias)
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

#[backend_extension(Cube)]
trait BiasActivationBackend: Backend {
    fn bias_activation(y: FloatTensor<Self>, bias: FloatTensor<Self>, activation: u32) -> FloatTensor<Self>;
}

impl BiasActivationBackend for Cube {
    fn bias_activation(y: CubeTensor, bias: CubeTensor, activation: u32) -> CubeTensor {
        let [y, bias] = [y, bias].map(contiguous);
        let shape = y.meta.shape().clone();
        let (len, n) = (shape.num_elements(), shape[1]);
        let (workgroups, groups_x) = spread(len.div_ceil(WORKGROUP_SIZE as usize));
        launch_to_output(
            WgslKernel::<BiasActivationShader>::new(SOURCE, WORKGROUP_SIZE),
            workgroups,
            &[&y, &bias],
            shape,
            &[size(len), size(n), activation, groups_x],
        )
    }
}
