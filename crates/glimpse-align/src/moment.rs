//! Soft temporal moment masks (ZeroTA: Jo et al. 2023, "Zero-Shot Dense Video Captioning by
//! Jointly Optimizing Text and Moment", <https://arxiv.org/abs/2307.02682>).
//!
//! Each of K events owns a mask over the video's frames,
//! `m(t) = sigmoid((t - (c - w/2)) / tau) * sigmoid(((c + w/2) - t) / tau)` with `t` in `[0, 1]`,
//! whose centre `c` and width `w` are learnable through an unconstrained reparametrisation:
//! `w = w_min + (1 - w_min) sigmoid(w_raw)` and `c = w/2 + (1 - w) sigmoid(c_raw)`, so a segment
//! always lies inside the video and is never narrower than `w_min`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use glimpse_kernels::masked_pool;
use serde::Serialize;

/// K learnable soft masks.
#[derive(Module, Debug)]
pub struct MomentMasks {
    centre_raw: Param<Tensor<1>>,
    width_raw: Param<Tensor<1>>,
    #[module(skip)]
    min_width: f64,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-4, 1.0 - 1e-4);
    (p / (1.0 - p)).ln()
}

impl MomentMasks {
    /// Masks starting at `(centre, width)` pairs, both as fractions of the video (clamped to what
    /// the parametrisation can express).
    pub fn new(spans: &[(f64, f64)], min_width: f64, device: &Device) -> Self {
        assert!(!spans.is_empty() && (0.0..1.0).contains(&min_width), "need spans and 0 <= min_width < 1");
        let (mut centre, mut width) = (Vec::new(), Vec::new());
        for &(c, w) in spans {
            let w = w.clamp(min_width, 1.0);
            width.push(logit((w - min_width) / (1.0 - min_width)) as f32);
            centre.push(logit((c - w / 2.0) / (1.0 - w).max(1e-6)) as f32);
        }
        let k = spans.len();
        Self {
            centre_raw: Param::from_tensor(Tensor::from_data(TensorData::new(centre, [k]), device)),
            width_raw: Param::from_tensor(Tensor::from_data(TensorData::new(width, [k]), device)),
            min_width,
        }
    }

    /// Masks from raw (unconstrained) parameters, `[k]` each; see [`MomentMasks::raw`].
    pub fn from_raw(centre_raw: Tensor<1>, width_raw: Tensor<1>, min_width: f64) -> Self {
        Self {
            centre_raw: Param::from_tensor(centre_raw.require_grad()),
            width_raw: Param::from_tensor(width_raw.require_grad()),
            min_width,
        }
    }

    /// The raw parameters `(centre_raw, width_raw)` the optimiser moves.
    pub fn raw(&self) -> (Tensor<1>, Tensor<1>) {
        (self.centre_raw.val(), self.width_raw.val())
    }

    pub fn len(&self) -> usize {
        self.centre_raw.lazy_shape().dims::<1>()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Centres and widths in `[0, 1]`, `[k]` each.
    pub fn spans(&self) -> (Tensor<1>, Tensor<1>) {
        let width = sigmoid(self.width_raw.val()) * (1.0 - self.min_width) + self.min_width;
        let centre = width.clone() / 2.0 + (width.clone().neg() + 1.0) * sigmoid(self.centre_raw.val());
        (centre, width)
    }

    /// Mask values at `frames` evenly spaced frame times `(i + 0.5) / frames`: `[k, frames]`.
    pub fn masks(&self, frames: usize, tau: f64) -> Tensor<2> {
        let (centre, width) = self.spans();
        let device = centre.device();
        let k = centre.dims()[0];
        let times: Vec<f32> = (0..frames).map(|i| ((i as f64 + 0.5) / frames as f64) as f32).collect();
        let t = Tensor::<1>::from_data(TensorData::new(times, [frames]), &device).unsqueeze::<2>();
        let start = (centre.clone() - width.clone() / 2.0).unsqueeze_dim::<2>(1).expand([k, frames]);
        let end = (centre + width / 2.0).unsqueeze_dim::<2>(1).expand([k, frames]);
        let t = t.expand([k, frames]);
        // WGSL lets implementations assume finite arithmetic, and SwiftShader's WebGPU does: a
        // sigmoid whose exp overflows gave NaN masks there once the temperature fell. Beyond +-30
        // a sigmoid is 0 or 1 in f32 anyway.
        let edge = |x: Tensor<2>| sigmoid((x / tau).clamp(-30.0, 30.0));
        edge(t.clone() - start) * edge(end - t)
    }
}

/// The moments, frames pooled through the masks (`[k, d]`, see [`masked_pool`]), and the mean
/// cosine similarity between each moment and the rest of the video (frames pooled with `1 - m`,
/// `[1]`): masks `[k, n]`, frames `[n, d]`. Minimising the similarity makes a mask take in the
/// whole of a homogeneous segment: frames of the segment left outside would make the rest look
/// like the moment. Both come from one call because the loss needs the moments anyway.
pub fn pool_with_contrast(masks: Tensor<2>, frames: Tensor<2>) -> (Tensor<2>, Tensor<1>) {
    pool_with_contrast_by(masked_pool, masks, frames)
}

/// [`pool_with_contrast`] through a given pooling: `glimpse_kernels::masked_pool` or its fallback
/// (the benchmark times both).
pub fn pool_with_contrast_by(
    pool: fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
    masks: Tensor<2>,
    frames: Tensor<2>,
) -> (Tensor<2>, Tensor<1>) {
    let inside = pool(masks.clone(), frames.clone());
    let outside = pool(masks.neg() + 1.0, frames);
    let similarity = (inside.clone() * outside).sum_dim(1).mean();
    (inside, similarity)
}

/// Mean soft temporal IoU over all pairs of masks, `sum_t min(m_i, m_j) / sum_t max(m_i, m_j)`:
/// `[k, n]` -> `[1]` (zero for a single mask). Minimising it pushes events apart.
pub fn pairwise_tiou(masks: Tensor<2>) -> Tensor<1> {
    let [k, n] = masks.dims();
    let device = masks.device();
    if k < 2 {
        return Tensor::zeros([1], &device);
    }
    let a = masks.clone().unsqueeze_dim::<3>(1).expand([k, k, n]);
    let b = masks.unsqueeze_dim::<3>(0).expand([k, k, n]);
    let inter = a.clone().min_pair(b.clone()).sum_dim(2).reshape([k, k]);
    let union = a.max_pair(b).sum_dim(2).reshape([k, k]).clamp_min(1e-6);
    // Pairs i < j only: the strict upper triangle.
    let upper = Tensor::<2, Bool>::tril_mask([k, k], 0, &device).float();
    let pairs = (k * (k - 1) / 2) as f64;
    ((inter / union) * upper).sum() / pairs
}

/// The mask temperature over an optimisation run: geometric from `start` to `end`. A warm start
/// lets gradients reach frames far from a mask; a cold end makes segments crisp.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TemperatureSchedule {
    pub start: f64,
    pub end: f64,
}

impl TemperatureSchedule {
    /// Temperature at `step` of `steps` (`start` at step 0, `end` from step `steps - 1` on).
    pub fn at(&self, step: usize, steps: usize) -> f64 {
        let f = if steps <= 1 { 0.0 } else { (step as f64 / (steps - 1) as f64).min(1.0) };
        self.start * (self.end / self.start).powf(f)
    }
}

impl Default for TemperatureSchedule {
    fn default() -> Self {
        Self { start: 0.05, end: 0.01 }
    }
}
