//! "Where in this video does X happen?": zero-shot moment retrieval from CLIP alone, in two
//! stages.
//!
//! 1. **Proposals without training**, as TFVTG (Zheng et al., ECCV 2024) reads spans off a
//!    vision-language similarity curve: each frame's cosine similarity to the query, smoothed by a
//!    moving average, then every span of at least `min_seconds` scored by how much more its inside
//!    matches the query than its outside (`mean inside - mean outside`, blank frames counting as
//!    outside), and the best spans that do not overlap a better one kept.
//! 2. **Gradient refinement** (optional, `refine_steps`; it did not help on the world): each
//!    proposal becomes a soft moment mask (the masks ZeroTA uses, `moment::MomentMasks`) and its
//!    edges move by AdamW to maximise the same contrast on pooled embeddings,
//!    `cos(pool(m), q) - cos(pool(1 - m), q)`, while the mask sharpens.
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
    /// default: on held-out world videos 40 steps lower R1@0.7 and mIoU (`glimpse eval`'s ablation
    /// rows, figures in models/README.md), as the proposals' edges already sit on the frames where
    /// the query stops matching.
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

/// Refuses no queries, more than [`MAX_QUERIES`], or an empty one (before any video is read).
pub fn check_queries(queries: &[&str]) -> Result<(), AlignError> {
    if queries.is_empty() || queries.len() > MAX_QUERIES {
        return Err(AlignError::Input(format!("{} queries given; ask 1 to {MAX_QUERIES} at a time", queries.len())));
    }
    if let Some(i) = queries.iter().position(|q| q.trim().is_empty()) {
        return Err(AlignError::Input(format!("query {} is empty; describe what to find", i + 1)));
    }
    Ok(())
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
    check_queries(queries)?;
    if !(duration > 0.0 && duration.is_finite()) {
        return Err(AlignError::Input(format!("the video's duration {duration} s must be positive")));
    }
    // A moment is scored against the rest of the video: one as long as the video has no rest.
    if config.min_seconds >= duration {
        return Err(AlignError::Input(format!(
            "the shortest moment asked for ({} s) is as long as the video ({duration:.2} s) or longer; ask for a \
             shorter one",
            config.min_seconds
        )));
    }
    let frames = video.embeddings().clone().without_autodiff();
    let n = frames.dims()[0];
    let frame_seconds = duration / n as f64;
    let min_frames = ((config.min_seconds / frame_seconds).ceil() as usize).max(1);
    // The same rule in frames: a video sampled into few frames may have no rest either.
    if min_frames >= n {
        return Err(AlignError::Input(format!(
            "the video gives {n} frame{} over {duration:.2} s: too few for a moment of at least {} s to leave any \
             to compare it with; sample more frames per second or ask for a shorter moment",
            if n == 1 { "" } else { "s" },
            config.min_seconds
        )));
    }
    let window = ((config.smoothing_seconds / frame_seconds).round() as usize).max(1);
    let texts = l2_normalize(clip.encode_texts(queries)?);
    // [n, queries], read once: proposals are plain arithmetic on the curves.
    let similarity: Vec<f32> = read(frames.clone().matmul(texts.clone().transpose())).await?;

    let mut found = Vec::with_capacity(queries.len());
    let grad_device = frames.device().autodiff();
    for q in 0..queries.len() {
        let curve: Vec<f64> = (0..n).map(|i| f64::from(similarity[i * queries.len() + q])).collect();
        let proposals = propose(&smooth(&curve, window), video.blank(), min_frames, config.top);
        // Nothing to refine where nothing was proposed (a blank video, or none of --min-seconds).
        let spans = if config.refine_steps == 0 || proposals.is_empty() {
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
        // Refined edges may have moved into each other: the better of two overlapping stays.
        let mut apart: Vec<Moment> = Vec::with_capacity(moments.len());
        for moment in moments {
            if apart.iter().all(|m| moment.end <= m.start || m.end <= moment.start) {
                apart.push(moment);
            }
        }
        found.push(apart);
    }
    Ok(found)
}

/// Centred moving average over `window` frames (an odd count: one less for an even `window`),
/// shrinking at the ends.
fn smooth(curve: &[f64], window: usize) -> Vec<f64> {
    let half = window.saturating_sub(1) / 2;
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
/// their score. A span neither starts nor ends on a blank frame, and a blank frame (black between
/// shots, a fade) counts as outside, as badly matching as the worst frame that shows something:
/// it shows nothing, and its own similarity (a dark frame's can be anything) says nothing. Of
/// scores within rounding of each other the longer span wins. Long curves are averaged into
/// [`MAX_BINS`] bins first, so each of the `top` searches is `O(MAX_BINS²)`, with no allocation.
fn propose(curve: &[f64], blank: &[bool], min_frames: usize, top: usize) -> Vec<(usize, usize, f64)> {
    let n = curve.len();
    let worst = (0..n).filter(|&f| !blank[f]).map(|f| curve[f]).fold(f64::INFINITY, f64::min);
    if worst == f64::INFINITY {
        return Vec::new();
    }
    let value = |f: usize| if blank[f] { worst } else { curve[f] };
    let b = n.min(MAX_BINS);
    let start: Vec<usize> = (0..=b).map(|i| i * n / b).collect();
    let mut sum = vec![0.0; b + 1];
    for i in 0..b {
        sum[i + 1] = sum[i] + (start[i]..start[i + 1]).map(value).sum::<f64>();
    }
    // A bin may open or close a span only where a frame at that edge shows something.
    let opens = |i: usize| !blank[start[i]];
    let closes = |j: usize| !blank[start[j] - 1];
    let mut kept: Vec<(usize, usize, f64)> = Vec::with_capacity(top);
    while kept.len() < top {
        let mut best: Option<(usize, usize, f64)> = None;
        for i in (0..b).filter(|&i| opens(i)) {
            for j in (i + 1..=b).filter(|&j| closes(j)) {
                let (a, z) = (start[i], start[j]);
                if z - a < min_frames || kept.iter().any(|k| a < k.1 && k.0 < z) {
                    continue;
                }
                let inside = (sum[j] - sum[i]) / (z - a) as f64;
                let outside = if z - a == n { inside } else { (sum[b] - sum[j] + sum[i]) / (n - (z - a)) as f64 };
                let score = inside - outside;
                let better = best
                    .is_none_or(|(ba, bz, bs)| score > bs + 1e-9 || ((score - bs).abs() <= 1e-9 && z - a > bz - ba));
                if better {
                    best = Some((a, z, score));
                }
            }
        }
        match best {
            Some(span) => kept.push(span),
            None => break,
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
    // No refined moment gets shorter than `min_seconds` either.
    let min_width = (min_frames as f64 / n as f64).min(0.49);
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
        let shown = [false; 40];
        let best = propose(&curve, &shown, 3, 2);
        assert_eq!((best[0].0, best[0].1), (10, 20), "{best:?}");
        // The spike is shorter than three frames: the second proposal takes it with neighbours.
        assert!(best[1].0 <= 30 && best[1].1 > 30 && best[1].1 - best[1].0 >= 3, "{best:?}");
        // Different places: however many are asked for, no two overlap.
        let many = propose(&curve, &shown, 1, 10);
        assert_eq!(many.len(), 10);
        for (i, a) in many.iter().enumerate() {
            assert!(many[..i].iter().all(|b| a.1 <= b.0 || b.1 <= a.0), "{many:?}");
        }
        // A dark frame at the end would make "everything but it" the best span; blank, it counts
        // as the worst frame that shows something, and no span ends on it.
        curve[39] = -0.5;
        let mut blank = shown;
        assert_eq!(propose(&curve, &shown, 3, 1)[0].0, 0, "the dark frame pulls the span out");
        blank[39] = true;
        let best = propose(&curve, &blank, 3, 1);
        assert_eq!((best[0].0, best[0].1), (10, 20), "{best:?}");
        // One still scene between blank stretches: every span inside it scores alike, and the
        // whole scene is the answer; a video that shows nothing has none.
        let mut still = vec![0.3; 40];
        let mut around = [true; 40];
        around[10..30].fill(false);
        still[..10].fill(-0.2);
        let best = propose(&still, &around, 2, 1);
        assert_eq!((best[0].0, best[0].1), (10, 30), "{best:?}");
        assert!(propose(&still, &[true; 40], 2, 1).is_empty());
    }

    #[test]
    fn smoothing_averages_a_centred_window() {
        assert_eq!(smooth(&[0.0, 3.0, 0.0, 3.0], 3), [1.5, 1.0, 2.0, 1.5]);
        // An even width takes one frame less, never more.
        assert_eq!(smooth(&[0.0, 3.0, 0.0, 3.0], 4), [1.5, 1.0, 2.0, 1.5]);
        assert_eq!(smooth(&[1.0, 2.0], 2), [1.0, 2.0]);
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
