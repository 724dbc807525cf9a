//! "Where in this video does X happen?": zero-shot moment retrieval from CLIP alone, in two
//! stages.
//!
//! 1. **Proposals without training**, as TFVTG (Zheng et al., ECCV 2024) reads spans off a
//!    vision-language similarity curve: each frame's cosine similarity to the query, smoothed by a
//!    moving average, then every span of at least `min_seconds` scored by how much more its inside
//!    matches the query than its outside (`mean inside - mean outside`), and the best spans kept
//!    apart by non-maximum suppression.
//! 2. **Gradient refinement**: each proposal becomes a soft moment mask (the masks ZeroTA uses,
//!    `moment::MomentMasks`) and its edges move by AdamW to maximise the same contrast on pooled
//!    embeddings, `cos(pool(m), q) - cos(pool(1 - m), q)`, while the mask sharpens.
//!
//! Frame embeddings come from [`EmbeddedVideo`], so one video is embedded once for any number of
//! queries and for dense captioning.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use glimpse_models::tensor::read;
use glimpse_models::{ClipBundle, l2_normalize};
use serde::{Deserialize, Serialize};

use crate::AlignError;
use crate::guided::{check_at_least, check_count};
use crate::moment::{MomentMasks, TemperatureSchedule};
use crate::scenes::MAX_BINS;
use crate::zerota::EmbeddedVideo;

/// Every setting of [`find_moments`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindConfig {
    /// Moments returned per query (fewer where the video has no more distinct spans).
    pub top: usize,
    /// Width of the moving average over each frame's similarity to the query, in seconds (at 2 fps,
    /// 0.5 s is one frame: no smoothing; wider windows blurred the world's edges: R1@0.7 0.60 at 2 s).
    pub smoothing_seconds: f64,
    /// Shortest moment, in seconds (at least one frame).
    pub min_seconds: f64,
    /// AdamW steps refining each proposal's soft mask (0: the proposals as they are). Off by
    /// default: on the world's held-out videos, 40 steps lowered R1@0.7 from 0.787 to 0.779 and
    /// mIoU from 0.859 to 0.810 (`glimpse eval`'s ablation rows), as the proposals' edges already
    /// sit on the frames where the query stops matching.
    pub refine_steps: usize,
    /// Learning rate of the masks' raw centre and width.
    pub refine_lr: f64,
    /// Mask temperature over the refinement, in frames (from warm to sharp).
    pub schedule: TemperatureSchedule,
}

impl Default for FindConfig {
    fn default() -> Self {
        Self {
            top: 1,
            smoothing_seconds: 0.5,
            min_seconds: 1.0,
            refine_steps: 0,
            refine_lr: 0.005,
            schedule: TemperatureSchedule { start: 1.0, end: 0.25 },
        }
    }
}

/// The settings of [`FindConfig`] a user may change: the CLI's flags and the npm package's
/// options (camelCase in JSON). Each one left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct FindOptions {
    pub top: Option<usize>,
    pub min_seconds: Option<f64>,
    pub refine_steps: Option<usize>,
}

impl FindOptions {
    pub fn config(&self) -> FindConfig {
        let defaults = FindConfig::default();
        FindConfig {
            top: self.top.unwrap_or(defaults.top),
            min_seconds: self.min_seconds.unwrap_or(defaults.min_seconds),
            refine_steps: self.refine_steps.unwrap_or(defaults.refine_steps),
            ..defaults
        }
    }
}

/// The most queries one call takes, and the most moments per query.
pub const MAX_QUERIES: usize = 256;
pub const MAX_TOP: usize = 32;

impl FindConfig {
    /// Checks every setting; `name` gives the caller's name of each field.
    pub fn validate(&self, name: &dyn Fn(&str) -> String) -> Result<(), AlignError> {
        check_count(name("top"), self.top, 1, MAX_TOP)?;
        check_count(name("refine_steps"), self.refine_steps, 0, 100_000)?;
        for (field, value) in [("smoothing_seconds", self.smoothing_seconds), ("refine_lr", self.refine_lr)] {
            check_at_least(name(field), value, 0.0, true)?;
        }
        for (field, value) in [
            ("min_seconds", self.min_seconds),
            ("schedule.start", self.schedule.start),
            ("schedule.end", self.schedule.end),
        ] {
            check_at_least(name(field), value, 0.0, false)?;
        }
        Ok(())
    }
}

/// One found moment, in seconds; serialises as `{start, end, score}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    pub start: f64,
    pub end: f64,
    /// How much more the moment matches the query than the rest of the video does (difference of
    /// cosine similarities; above 0 means it matches better).
    pub score: f32,
}

/// The best `config.top` moments of `video` (lasting `duration` seconds) for each query, best
/// first.
pub async fn find_moments(
    clip: &ClipBundle,
    video: &EmbeddedVideo,
    duration: f64,
    queries: &[&str],
    config: &FindConfig,
) -> Result<Vec<Vec<Moment>>, AlignError> {
    config.validate(&str::to_string)?;
    if !(duration > 0.0 && duration.is_finite()) {
        return Err(AlignError::Input(format!("the video's duration {duration} s must be positive")));
    }
    if queries.is_empty() || queries.len() > MAX_QUERIES {
        return Err(AlignError::Input(format!("{} queries given; ask 1 to {MAX_QUERIES} at a time", queries.len())));
    }
    if let Some(i) = queries.iter().position(|q| q.trim().is_empty()) {
        return Err(AlignError::Input(format!("query {} is empty; describe what to find", i + 1)));
    }
    let frames = video.embeddings.clone().without_autodiff();
    let n = frames.dims()[0];
    let texts = l2_normalize(clip.encode_texts(queries)?);
    // [n, queries], read once: proposals are plain arithmetic on the curves.
    let similarity: Vec<f32> = read(frames.clone().matmul(texts.clone().transpose())).await?;
    let frame_seconds = duration / n as f64;
    let window = ((config.smoothing_seconds / frame_seconds).round() as usize).max(1);
    let min_frames = ((config.min_seconds / frame_seconds).ceil() as usize).clamp(1, n);

    let mut found = Vec::with_capacity(queries.len());
    let grad_device = frames.device().autodiff();
    for q in 0..queries.len() {
        let curve: Vec<f64> = (0..n).map(|i| f64::from(similarity[i * queries.len() + q])).collect();
        let proposals = propose(&smooth(&curve, window), min_frames, config.top);
        let spans = if config.refine_steps == 0 {
            proposals.iter().map(|p| ((p.0 as f64 / n as f64, p.1 as f64 / n as f64), p.2)).collect()
        } else {
            let query = texts.clone().narrow(0, q, 1).without_autodiff();
            refine(&proposals, &frames, query, min_frames, config, &grad_device).await?
        };
        let mut moments: Vec<Moment> = spans
            .into_iter()
            .map(|((s, e), score)| Moment { start: s * duration, end: e * duration, score: score as f32 })
            .collect();
        moments.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.push(moments);
    }
    Ok(found)
}

/// Centred moving average over `window` frames (shrinking at the ends).
fn smooth(curve: &[f64], window: usize) -> Vec<f64> {
    let half = window / 2;
    let mut prefix = vec![0.0; curve.len() + 1];
    for (i, v) in curve.iter().enumerate() {
        prefix[i + 1] = prefix[i] + v;
    }
    (0..curve.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(curve.len()));
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect()
}

/// The `top` best spans `[start, end)` of at least `min_frames` frames by `mean inside - mean
/// outside` of `curve`, none overlapping a better one (the moments are different places); with
/// their score.
/// Long curves are averaged into [`MAX_BINS`] bins first, so the search stays `O(MAX_BINS²)`.
fn propose(curve: &[f64], min_frames: usize, top: usize) -> Vec<(usize, usize, f64)> {
    let n = curve.len();
    let b = n.min(MAX_BINS);
    let start: Vec<usize> = (0..=b).map(|i| i * n / b).collect();
    let mut sum = vec![0.0; b + 1];
    for i in 0..b {
        sum[i + 1] = sum[i] + curve[start[i]..start[i + 1]].iter().sum::<f64>();
    }
    let total = sum[b];
    let mut spans: Vec<(usize, usize, f64)> = Vec::new();
    for i in 0..b {
        for j in i + 1..=b {
            let (a, z) = (start[i], start[j]);
            if z - a < min_frames {
                continue;
            }
            let inside = (sum[j] - sum[i]) / (z - a) as f64;
            let outside = if z - a == n { inside } else { (total - sum[j] + sum[i]) / (n - (z - a)) as f64 };
            spans.push((a, z, inside - outside));
        }
    }
    // Best first; of equal scores the shorter, then the earlier.
    spans.sort_by(|x, y| y.2.total_cmp(&x.2).then((x.1 - x.0).cmp(&(y.1 - y.0))).then(x.0.cmp(&y.0)));
    let mut kept: Vec<(usize, usize, f64)> = Vec::with_capacity(top);
    for span in spans {
        if kept.len() == top {
            break;
        }
        if kept.iter().all(|k| span.1 <= k.0 || k.1 <= span.0) {
            kept.push(span);
        }
    }
    kept
}

/// Each proposal's span refined by gradient as a soft mask: `((start, end)` as fractions of the
/// video, contrast of the final mask`)`.
async fn refine(
    proposals: &[(usize, usize, f64)],
    frames: &Tensor<2>,
    query: Tensor<2>,
    min_frames: usize,
    config: &FindConfig,
    device: &Device,
) -> Result<Vec<((f64, f64), f64)>, AlignError> {
    let n = frames.dims()[0];
    let starts: Vec<(f64, f64)> =
        proposals.iter().map(|&(a, z, _)| ((a + z) as f64 / 2.0 / n as f64, (z - a) as f64 / n as f64)).collect();
    // The narrowest mask the parametrisation allows stays under a proposal's own width.
    let min_width = (min_frames as f64 / n as f64 * 0.5).min(0.49);
    let mut masks = MomentMasks::new(&starts, min_width, device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let frames = frames.clone().to_device(device);
    let query = query.to_device(device);
    let contrast = |masks: &MomentMasks, step: usize| {
        let tau = config.schedule.at(step, config.refine_steps) / n as f64;
        let m = masks.masks(n, tau);
        let inside = glimpse_kernels::masked_pool(m.clone(), frames.clone());
        let outside = glimpse_kernels::masked_pool(m.neg() + 1.0, frames.clone());
        let q = query.clone().expand([starts.len(), query.dims()[1]]);
        ((inside * q.clone()).sum_dim(1) - (outside * q).sum_dim(1)).reshape([starts.len()])
    };
    for step in 0..config.refine_steps {
        let loss = contrast(&masks, step).sum().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &masks);
        masks = optim.step(config.refine_lr, masks, grads);
    }
    let scores: Vec<f32> = read(contrast(&masks, config.refine_steps).inner()).await?;
    let spans = crate::guided::spans(&masks).await?;
    Ok(spans.into_iter().zip(scores).map(|(span, score)| (span, f64::from(score))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_take_the_span_whose_inside_matches_and_outside_does_not() {
        // High on frames 10..20, a narrow spike at 30, noise-free elsewhere.
        let mut curve = vec![0.1; 40];
        curve[10..20].fill(0.5);
        curve[30] = 0.9;
        let best = propose(&curve, 3, 2);
        assert_eq!((best[0].0, best[0].1), (10, 20), "{best:?}");
        // The spike is shorter than three frames: the second proposal takes it with neighbours.
        assert!(best[1].0 <= 30 && best[1].1 > 30 && best[1].1 - best[1].0 >= 3, "{best:?}");
        // Different places: however many are asked for, no two overlap.
        let many = propose(&curve, 1, 10);
        assert_eq!(many.len(), 10);
        for (i, a) in many.iter().enumerate() {
            assert!(many[..i].iter().all(|b| a.1 <= b.0 || b.1 <= a.0), "{many:?}");
        }
    }

    #[test]
    fn smoothing_averages_a_centred_window() {
        assert_eq!(smooth(&[0.0, 3.0, 0.0, 3.0], 3), [1.5, 1.0, 2.0, 1.5]);
        assert_eq!(smooth(&[1.0, 2.0], 1), [1.0, 2.0]);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(FindConfig::default().validate(&str::to_string).is_ok());
        for (config, message) in [
            (FindConfig { top: 0, ..FindConfig::default() }, "top = 0"),
            (FindConfig { min_seconds: 0.0, ..FindConfig::default() }, "min_seconds = 0"),
            (FindConfig { refine_lr: f64::NAN, ..FindConfig::default() }, "refine_lr = NaN"),
        ] {
            let err = config.validate(&str::to_string).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }
}
