//! Zero-shot dense video captioning (ZeroTA, Jo et al. 2023, <https://arxiv.org/abs/2307.02682>):
//! frames are CLIP-encoded once, then K events (a moment mask and a prefix each) are optimised
//! jointly, token by token, and read off as `{start, end, caption, score}`.
//!
//! Before any text is generated, a short warm-up moves the masks alone (pairwise tIoU plus the
//! inside/outside contrast) so that each settles on a homogeneous stretch of the video; the
//! captioning loop then refines masks and prefixes together.

use std::borrow::Borrow;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use glimpse_media::image::is_blank;
use glimpse_media::rng::Rng;
use glimpse_media::span::tiou;
use glimpse_media::subtitles::Cue;
use glimpse_media::video::{Reading, Sample, VideoSource};
use glimpse_models::tensor::read;
use glimpse_models::{ClipBundle, Gpt2Bundle, l2_normalize};
use image::RgbImage;
use serde::Serialize;

use crate::AlignError;
use crate::guided::{self, Caption, GuidanceConfig, MomentTargets, Step, Targets};
use crate::moment::{MomentMasks, TemperatureSchedule};
use crate::scenes;

/// Every constant of the pipeline; the defaults are documented starting points, not the paper's
/// (it does not give them all).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZeroTaConfig {
    /// Number of events K; `None` counts the video's scenes ([`scenes::segment`]) and captions
    /// one event per scene, at most `max_events`.
    pub events: Option<usize>,
    /// The most events `events: None` may find.
    pub max_events: usize,
    /// KTS's penalty weight when counting scenes (larger: fewer events).
    pub scene_penalty: f64,
    pub guidance: GuidanceConfig,
    /// AdamW learning rate of the masks' raw centre and width.
    pub mask_lr: f64,
    pub tiou_weight: f64,
    pub contrast_weight: f64,
    /// Narrowest mask, as a fraction of the video.
    pub min_width: f64,
    pub schedule: TemperatureSchedule,
    /// Mask-only steps before captioning (useful from the even start, e.g. 150 with
    /// `mask_lr` 0.05; from scene cuts they only blur the boundaries).
    pub warmup_steps: usize,
    /// Start the masks on the K longest runs of frames between scene cuts, a cut being where
    /// consecutive frames' cosine similarity drops below this value (or, with `events: None`, on
    /// the scenes KTS found); `None` spreads them evenly (the paper's start). Gradient descent on the masks finds segment boundaries well but moves
    /// a mask across a whole scene poorly, so a start near the scenes matters more than any weight.
    pub scene_cut: Option<f32>,
    /// Starting width of each mask as a fraction of its equal share `1 / events`.
    pub initial_width: f64,
    /// Largest random shift of the starting centres either way, as a fraction of half the equal
    /// share (`0.2`: up to 10% of the share each way).
    pub jitter: f64,
    /// Seeds the jitter.
    pub seed: u64,
    /// Of two events overlapping by more than this tIoU, only the better-scored is kept.
    pub duplicate_iou: f64,
    /// Keep overlapping events as they are instead of cutting them at the middle of the overlap.
    pub allow_overlap: bool,
    /// Caption blank scenes too (`glimpse_media::image::is_blank` can take very dark or
    /// featureless footage for blank).
    pub keep_blank: bool,
}

/// The most events one video may have.
pub const MAX_EVENTS: usize = 32;

/// The most events a video gets by default when they are counted (`events: None`).
pub const DEFAULT_MAX_EVENTS: usize = 10;

/// The most mask-only warm-up steps.
pub const MAX_WARMUP_STEPS: usize = 100_000;

impl ZeroTaConfig {
    /// Checks every setting as far as it can be without a model, the guidance's included
    /// ([`GuidanceConfig::validate`]; `name` gives the caller's name of each field).
    pub fn validate(&self, name: &dyn Fn(&str) -> String) -> Result<(), AlignError> {
        if let Some(events) = self.events {
            guided::check_count(name("events"), events, 1, MAX_EVENTS)?;
        }
        guided::check_count(name("max_events"), self.max_events, 1, MAX_EVENTS)?;
        guided::check_count(name("warmup_steps"), self.warmup_steps, 0, MAX_WARMUP_STEPS)?;
        for (field, value) in [
            ("mask_lr", self.mask_lr),
            ("tiou_weight", self.tiou_weight),
            ("contrast_weight", self.contrast_weight),
            ("jitter", self.jitter),
            ("duplicate_iou", self.duplicate_iou),
            ("scene_penalty", self.scene_penalty),
        ] {
            guided::check_at_least(name(field), value, 0.0, true)?;
        }
        for (field, value) in [
            ("initial_width", self.initial_width),
            ("schedule.start", self.schedule.start),
            ("schedule.end", self.schedule.end),
        ] {
            guided::check_at_least(name(field), value, 0.0, false)?;
        }
        let bad = |m: String| Err(AlignError::Settings(m));
        if !(0.0..0.5).contains(&self.min_width) {
            return bad(format!("{} = {} must be in [0, 0.5)", name("min_width"), self.min_width));
        }
        // A cosine similarity: beyond [-1, 1] every frame, or none, would start a scene.
        if let Some(cut) = self.scene_cut.filter(|cut| !(-1.0..=1.0).contains(cut)) {
            return bad(format!("{} = {cut} must be in [-1, 1]", name("scene_cut")));
        }
        self.guidance.validate(name)
    }

    /// The baseline without moment optimisation: `events` equal segments, captioned as they are.
    pub fn uniform(self) -> Self {
        Self { warmup_steps: 0, mask_lr: 0.0, initial_width: 1.0, jitter: 0.0, min_width: 0.0, scene_cut: None, ..self }
    }
}

/// The hard prompt an event's caption continues by default.
pub const VIDEO_PROMPT: &str = "Video showing";

/// The default scene cut: consecutive frames less similar than this (cosine of their CLIP
/// embeddings) start a new scene.
pub const SCENE_CUT: f32 = 0.85;

impl Default for ZeroTaConfig {
    fn default() -> Self {
        Self {
            events: None,
            max_events: DEFAULT_MAX_EVENTS,
            scene_penalty: scenes::DEFAULT_PENALTY,
            guidance: GuidanceConfig { prompt: VIDEO_PROMPT.into(), ..GuidanceConfig::default() },
            mask_lr: 0.003,
            tiou_weight: 1.0,
            contrast_weight: 0.5,
            min_width: 0.05,
            schedule: TemperatureSchedule::default(),
            warmup_steps: 0,
            scene_cut: Some(SCENE_CUT),
            initial_width: 0.8,
            jitter: 0.2,
            seed: 0,
            duplicate_iou: 0.7,
            allow_overlap: false,
            keep_blank: false,
        }
    }
}

/// One captioned event, times in seconds; serialises as `{start, end, caption, score}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub start: f64,
    pub end: f64,
    pub caption: String,
    /// Cosine similarity between the caption's and the moment's CLIP embeddings.
    pub score: f32,
}

impl Event {
    /// The event as a subtitle cue.
    pub fn cue(&self) -> Cue {
        Cue { start: self.start, end: self.end, text: self.caption.clone() }
    }
}

/// A video as the pipeline reads it, frame by frame: what each frame shows (unit-norm CLIP
/// embeddings) and whether it is blank (`glimpse_media::image::is_blank`: black between shots, a
/// fade, an empty background). Dense captioning from scenes gives blank scenes no event, and
/// moment search never starts or ends a moment on a blank frame.
#[derive(Debug, Clone)]
pub struct EmbeddedVideo {
    embeddings: Tensor<2>,
    blank: Vec<bool>,
}

impl EmbeddedVideo {
    /// `embeddings` `[frames, dim]` (unit norm) with one blank flag per frame.
    pub fn new(embeddings: Tensor<2>, blank: Vec<bool>) -> Result<Self, AlignError> {
        let frames = embeddings.dims()[0];
        if frames == 0 || blank.len() != frames {
            return Err(AlignError::Input(format!("{frames} frame embeddings with {} blank flags", blank.len())));
        }
        Ok(Self { embeddings, blank })
    }

    /// `[frames, dim]`, unit norm.
    pub fn embeddings(&self) -> &Tensor<2> {
        &self.embeddings
    }

    /// One flag per frame.
    pub fn blank(&self) -> &[bool] {
        &self.blank
    }

    pub fn frames(&self) -> usize {
        self.blank.len()
    }
}

/// Frames turned into CLIP embeddings as they arrive, so a video is never held at full
/// resolution: each frame is preprocessed at once (only CLIP-sized pixels wait for a batch) and
/// the frames are encoded [`BATCH`](FrameEmbedder::BATCH) at a time; a sample that repeats the
/// frame before ([`Sample::Again`]) is neither preprocessed nor encoded again. `C` is any owner of
/// the CLIP: a borrow for one call, an `Rc` where frames arrive across calls (the browser's chunks).
pub struct FrameEmbedder<C> {
    clip: C,
    pending: Vec<Tensor<4>>,
    embedded: Vec<Tensor<2>>,
    /// One flag per distinct frame.
    blank: Vec<bool>,
    /// For each sample, the distinct frame it shows.
    shown: Vec<usize>,
}

impl<C: Borrow<ClipBundle>> FrameEmbedder<C> {
    /// The most frames encoded at once (fewer for a large image tower: `images_per_batch`).
    pub const BATCH: usize = 16;

    pub fn new(clip: C) -> Self {
        let pending = Vec::with_capacity(Self::BATCH);
        Self { clip, pending, embedded: Vec::new(), blank: Vec::new(), shown: Vec::new() }
    }

    /// A sample: a frame, or the frame before again.
    pub fn push_sample(&mut self, sample: Sample) -> Result<(), AlignError> {
        match sample {
            Sample::Frame(frame) => self.push(&frame),
            Sample::Again => {
                let last = self.shown.last().ok_or_else(|| AlignError::Input("a video began with a repeat".into()))?;
                self.shown.push(*last);
                Ok(())
            }
        }
    }

    pub fn push(&mut self, frame: &RgbImage) -> Result<(), AlignError> {
        let pixels = self.clip.borrow().pixels(std::slice::from_ref(frame))?;
        self.pending.push(pixels);
        self.shown.push(self.blank.len());
        self.blank.push(is_blank(frame));
        if self.pending.len() == self.clip.borrow().config.vision_config.images_per_batch(Self::BATCH) {
            self.encode_pending()?;
        }
        Ok(())
    }

    /// Samples pushed so far.
    pub fn frames(&self) -> usize {
        self.shown.len()
    }

    fn encode_pending(&mut self) -> Result<(), AlignError> {
        if !self.pending.is_empty() {
            let pixels = Tensor::cat(std::mem::take(&mut self.pending), 0);
            self.embedded.push(self.clip.borrow().model.encode_image(pixels)?);
        }
        Ok(())
    }

    /// Every frame pushed.
    pub fn finish(mut self) -> Result<EmbeddedVideo, AlignError> {
        self.encode_pending()?;
        if self.embedded.is_empty() {
            return Err(AlignError::Input("the video has no frames".into()));
        }
        let distinct = l2_normalize(Tensor::cat(self.embedded, 0));
        if self.shown.len() == self.blank.len() {
            return EmbeddedVideo::new(distinct, self.blank);
        }
        let blank = self.shown.iter().map(|&frame| self.blank[frame]).collect();
        let shown: Vec<i64> = self.shown.iter().map(|&frame| frame as i64).collect();
        let indices = Tensor::<1, Int>::from_data(TensorData::new(shown, [self.shown.len()]), &distinct.device());
        EmbeddedVideo::new(distinct.select(0, indices), blank)
    }
}

/// Video frames held in memory, embedded.
pub fn embed_frames(clip: &ClipBundle, frames: &[RgbImage]) -> Result<EmbeddedVideo, AlignError> {
    let mut embedder = FrameEmbedder::new(clip);
    for frame in frames {
        embedder.push(frame)?;
    }
    embedder.finish()
}

/// Every frame `source` yields, each decoded and embedded as it comes (`on_frame` after each);
/// and the reading's duration and damage.
pub fn embed_source(
    clip: &ClipBundle,
    source: &VideoSource,
    mut on_frame: impl FnMut(),
) -> Result<(EmbeddedVideo, Reading), AlignError> {
    let mut embedder = FrameEmbedder::new(clip);
    let reading = source.for_each_frame(|sample| {
        on_frame();
        embedder.push_sample(sample)
    })?;
    Ok((embedder.finish()?, reading))
}

/// A video's dense captions as glimpse writes them (`caption-video --format json`, a batch's
/// `<id>.json`): `{"duration", "events", "video"}` on one line.
pub fn captions_json(video: &str, duration: f64, events: &[Event]) -> String {
    format!("{}\n", serde_json::json!({ "video": video, "duration": duration, "events": events }))
}

/// Captions `video` (lasting `duration` seconds) with up to `config.events` events (at most one
/// per frame), sorted by start; none where every scene is blank.
pub async fn dense_caption(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    video: &EmbeddedVideo,
    duration: f64,
    config: &ZeroTaConfig,
    mut on_step: impl FnMut(&Step),
) -> Result<Vec<Event>, AlignError> {
    if !(duration > 0.0 && duration.is_finite()) {
        return Err(AlignError::Input(format!("the video's duration {duration} s must be positive")));
    }
    config.validate(&str::to_string)?;
    guided::check(&config.guidance, lm.model.vocab_size(), &str::to_string)?;
    let grad_device = lm.device.clone().autodiff();
    let frames = video.embeddings.clone().without_autodiff();
    let n = frames.dims()[0];
    let all_shown = vec![false; n];
    let blank = if config.keep_blank { &all_shown } else { &video.blank };
    // No more events than frames: one narrower than a frame shows nothing the others do not.
    let starts = match (config.events.map(|k| k.min(n)), config.scene_cut) {
        (Some(k), Some(cut)) => {
            let adjacent = match n {
                0 | 1 => Vec::new(),
                _ => {
                    read::<2, Float, f32>(
                        (frames.clone().narrow(0, 0, n - 1) * frames.clone().narrow(0, 1, n - 1)).sum_dim(1),
                    )
                    .await?
                }
            };
            scene_runs(&adjacent, blank, k, cut).ok_or(k)
        }
        (Some(k), None) => Err(k),
        (None, scene_start) => {
            let dim = frames.dims()[1];
            let min_frames = (config.min_width * n as f64).ceil() as usize;
            let found =
                scenes::segment(&read(frames.clone()).await?, dim, config.max_events, min_frames, config.scene_penalty);
            let shown: Vec<(usize, usize)> =
                found.spans.into_iter().filter(|&span| !mostly_blank(blank, span)).collect();
            if shown.is_empty() {
                return Ok(Vec::new());
            }
            match scene_start {
                Some(_) => Ok(fractions(&shown, n)),
                None => Err(shown.len()),
            }
        }
    };
    let masks = match starts {
        Ok(spans) => MomentMasks::new(&spans, config.min_width, &grad_device),
        Err(k) => initial_masks(config, k, &grad_device),
    };
    let mut moments = MomentTargets {
        frames: frames.clone(),
        masks,
        schedule: config.schedule,
        mask_lr: config.mask_lr,
        tiou_weight: config.tiou_weight,
        contrast_weight: config.contrast_weight,
    };
    // Warm-up at the schedule's starting (warmest) temperature: masks only.
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    for _ in 0..config.warmup_steps {
        let (_, own) = moments.evaluate(0, 2);
        let grads = GradientsParams::from_grads(own.backward(), &moments.masks);
        moments.masks = optim.step(config.mask_lr, moments.masks, grads);
    }

    let outcome = guided::caption(clip, lm, Targets::Moments(moments), &config.guidance, &mut on_step).await?;
    let masks = outcome.masks.expect("moment targets return their masks");
    let spans = guided::spans(&masks).await?;
    let events = spans
        .into_iter()
        .zip(outcome.captions)
        .map(|((s, e), Caption { text, score })| Event { start: s * duration, end: e * duration, caption: text, score })
        .collect();
    Ok(tidy(events, config))
}

/// Whether at least half the frames of `[start, end)` are blank.
fn mostly_blank(blank: &[bool], (start, end): (usize, usize)) -> bool {
    2 * blank[start..end].iter().filter(|&&b| b).count() >= end - start
}

/// `(centre, width)` of the `k` longest runs of frames between cuts (where `adjacent[i]`, the
/// similarity of frames `i` and `i + 1`, is below `cut`), runs that are not mostly blank first, in
/// time order, as fractions of the video. While there are fewer runs than `k`, the longest is
/// halved; `None` if the video is too short.
fn scene_runs(adjacent: &[f32], blank: &[bool], k: usize, cut: f32) -> Option<Vec<(f64, f64)>> {
    let frames = blank.len();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, &similarity) in adjacent.iter().enumerate() {
        if similarity < cut {
            runs.push((start, i + 1));
            start = i + 1;
        }
    }
    runs.push((start, frames));
    while runs.len() < k {
        let (i, &(a, b)) = runs.iter().enumerate().max_by_key(|&(i, &(a, b))| (b - a, std::cmp::Reverse(i)))?;
        if b - a < 2 {
            return None;
        }
        runs.splice(i..=i, [(a, (a + b) / 2), ((a + b) / 2, b)]);
    }
    let mut longest: Vec<usize> = (0..runs.len()).collect();
    longest.sort_by_key(|&i| (mostly_blank(blank, runs[i]), std::cmp::Reverse(runs[i].1 - runs[i].0), i));
    longest.truncate(k);
    longest.sort_unstable();
    let runs: Vec<(usize, usize)> = longest.into_iter().map(|i| runs[i]).collect();
    Some(fractions(&runs, frames))
}

/// `(centre, width)` of frame ranges `[start, end)` as fractions of a video of `frames` frames.
fn fractions(spans: &[(usize, usize)], frames: usize) -> Vec<(f64, f64)> {
    let n = frames as f64;
    spans.iter().map(|&(a, b)| ((a + b) as f64 / 2.0 / n, (b - a) as f64 / n)).collect()
}

/// `events` evenly spread masks with seeded jitter on their centres.
fn initial_masks(config: &ZeroTaConfig, events: usize, device: &Device) -> MomentMasks {
    let k = events as f64;
    // The seed is offset so that seed 0 does not start SplitMix64 at state 0.
    let mut rng = Rng::new(config.seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut jitter = || rng.uniform() - 0.5;
    let width = (config.initial_width / k).clamp(config.min_width, 1.0);
    let spans: Vec<(f64, f64)> =
        (0..events).map(|i| ((i as f64 + 0.5 + config.jitter * jitter()) / k, width)).collect();
    MomentMasks::new(&spans, config.min_width, device)
}

/// Sorts by start, drops the weaker of near-duplicates and, unless overlaps are allowed, resolves
/// overlaps: of an event inside another only the better-scored stays, and neighbours that overlap
/// are cut at the middle of their overlap.
fn tidy(mut events: Vec<Event>, config: &ZeroTaConfig) -> Vec<Event> {
    events.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Event> = Vec::new();
    for event in events {
        if kept.iter().all(|k| tiou((k.start, k.end), (event.start, event.end)) <= config.duplicate_iou) {
            kept.push(event);
        }
    }
    kept.sort_by(|a, b| a.start.total_cmp(&b.start));
    if config.allow_overlap {
        return kept;
    }
    let mut tidy: Vec<Event> = Vec::with_capacity(kept.len());
    for event in kept {
        match tidy.last_mut() {
            Some(prev) if event.end <= prev.end => {
                if event.score > prev.score {
                    *prev = event;
                }
            }
            Some(prev) if event.start < prev.end => {
                let cut = (event.start + prev.end) / 2.0;
                prev.end = cut;
                tidy.push(Event { start: cut, ..event });
            }
            _ => tidy.push(event),
        }
    }
    tidy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(start: f64, end: f64, score: f32) -> Event {
        Event { start, end, caption: format!("{start}"), score }
    }

    #[test]
    fn masks_start_on_the_longest_scenes() {
        // Frames 0-3 | 4-5 | 6-9 (cuts after frames 3 and 5): the two longest runs, in time order.
        let adjacent = [0.99, 0.98, 0.99, 0.3, 0.97, 0.2, 0.99, 0.99, 0.98];
        let shown = [false; 10];
        assert_eq!(scene_runs(&adjacent, &shown, 2, 0.85), Some(vec![(0.2, 0.4), (0.8, 0.4)]));
        // Four events asked of three scenes: the longest (earliest of equals) is halved.
        assert_eq!(scene_runs(&adjacent, &shown, 4, 0.85), Some(vec![(0.1, 0.2), (0.3, 0.2), (0.5, 0.2), (0.8, 0.4)]));
        // A blank scene goes last, however long.
        let mut blank = shown;
        blank[6..].fill(true);
        assert_eq!(scene_runs(&adjacent, &blank, 2, 0.85), Some(vec![(0.2, 0.4), (0.5, 0.2)]));
        // No cut at all: halves of the whole video; too few frames: no start.
        assert_eq!(scene_runs(&[0.9; 3], &[false; 4], 2, 0.85), Some(vec![(0.25, 0.5), (0.75, 0.5)]));
        assert_eq!(scene_runs(&[], &[false], 2, 0.85), None);
    }

    #[test]
    fn mask_settings_out_of_range_are_refused() {
        let config = ZeroTaConfig::default();
        assert!(config.validate(&str::to_string).is_ok());
        assert!(config.clone().uniform().validate(&str::to_string).is_ok());
        let bad = [
            (ZeroTaConfig { events: Some(0), ..config.clone() }, "events = 0"),
            (ZeroTaConfig { max_events: 33, ..config.clone() }, "max_events = 33"),
            (ZeroTaConfig { scene_penalty: -1.0, ..config.clone() }, "scene_penalty = -1"),
            (ZeroTaConfig { mask_lr: f64::NAN, ..config.clone() }, "mask_lr = NaN"),
            (ZeroTaConfig { tiou_weight: f64::INFINITY, ..config.clone() }, "tiou_weight = inf"),
            (ZeroTaConfig { min_width: 0.7, ..config.clone() }, "min_width = 0.7"),
            (ZeroTaConfig { scene_cut: Some(f32::NAN), ..config.clone() }, "scene_cut = NaN"),
            (ZeroTaConfig { warmup_steps: usize::MAX, ..config.clone() }, "warmup_steps"),
            (
                ZeroTaConfig { guidance: GuidanceConfig { max_tokens: 0, ..config.guidance.clone() }, ..config },
                "max_tokens",
            ),
        ];
        for (config, message) in bad {
            let err = config.validate(&str::to_string).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn tidy_drops_duplicates_and_cuts_overlaps() {
        let config = ZeroTaConfig::default();
        let events = vec![event(5.0, 9.0, 0.1), event(0.0, 4.0, 0.3), event(3.0, 6.0, 0.2), event(0.2, 4.0, 0.1)];
        let tidy_events = tidy(events, &config);
        // (0.2, 4) duplicates the better (0, 4); the rest are sorted and no longer overlap.
        let spans: Vec<(f64, f64)> = tidy_events.iter().map(|e| (e.start, e.end)).collect();
        assert_eq!(spans, [(0.0, 3.5), (3.5, 5.5), (5.5, 9.0)]);

        // An event inside a wider one (tIoU 0.3, not a duplicate) leaves only the better of the two.
        let events = vec![event(0.0, 10.0, 0.2), event(4.0, 7.0, 0.1), event(9.0, 12.0, 0.3)];
        let spans: Vec<(f64, f64)> = tidy(events, &config).iter().map(|e| (e.start, e.end)).collect();
        assert_eq!(spans, [(0.0, 9.5), (9.5, 12.0)]);
    }
}
