//! glimpse judged end to end on its procedural world, where every answer is known: held-out
//! scenes and videos are rendered from seeds the models never trained on, and predictions are
//! scored with the metrics of `glimpse_world::metrics` (the densevid_eval protocol for segments,
//! BLEU-4 and CIDEr-D for captions) and by parsing attributes back out of each caption.

use burn::prelude::*;
use glimpse_align::AlignError;
use glimpse_align::grounding::{FindConfig, find_moments};
use glimpse_align::guided::{self, GuidanceConfig, Step, Targets};
use glimpse_align::projector::Projector;
use glimpse_align::zerota::{ZeroTaConfig, dense_caption, embed_frames};
use glimpse_media::rng::{Rng, derive_seed};
use glimpse_media::span::tiou;
use glimpse_models::generation::{Decoding, GenerationConfig, generate_from_embeds};
use glimpse_models::tensor::read;
use glimpse_models::{ClipBundle, Gpt2Bundle, l2_normalize};
use glimpse_world::densevid::{self, Prediction, Soda, Truth};
use glimpse_world::meteor::Meteor;
use glimpse_world::metrics;
use glimpse_world::render::{RenderConfig, Scene};
use glimpse_world::scene::{
    ATTRIBUTE_NAMES, Attributes, Colour, MAX_COUNT, Position, Shape, Size, canonical_caption, parse_caption,
};
use glimpse_world::video::{GtEvent, VideoConfig, sample_video};
use serde::Serialize;

/// Held-out data starts here: training streams use small seeds, evaluation never touches them.
pub const HELD_OUT_SEED: u64 = 1 << 40;

/// Held-out scenes with pairwise distinct attributes, so every caption has exactly one right image.
pub fn held_out_scenes(n: usize, seed: u64) -> Vec<(Attributes, image::RgbImage)> {
    let mut rng = Rng::new(derive_seed(HELD_OUT_SEED, seed));
    let wanted = n.min(Attributes::all().len());
    let mut scenes: Vec<(Attributes, image::RgbImage)> = Vec::with_capacity(wanted);
    while scenes.len() < wanted {
        let attributes = Attributes::sample(&mut rng);
        if scenes.iter().any(|(a, _)| *a == attributes) {
            continue;
        }
        let image = Scene::sample(Some(attributes), &mut rng).render(&RenderConfig::default(), &mut rng);
        scenes.push((attributes, image));
    }
    scenes
}

/// Text -> image retrieval among `n` held-out scenes: the share of canonical captions whose most
/// similar image is their own.
pub async fn retrieval_r_at_1(clip: &ClipBundle, n: usize, seed: u64) -> Result<f64, AlignError> {
    let (truths, images): (Vec<Attributes>, Vec<_>) = held_out_scenes(n, seed).into_iter().unzip();
    let texts: Vec<String> = truths.iter().map(canonical_caption).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let image_embeds = l2_normalize(clip.encode_images(&images)?);
    let text_embeds = l2_normalize(clip.encode_texts(&refs)?);
    let best = text_embeds.matmul(image_embeds.transpose()).argmax(1).reshape([images.len()]);
    let best = read::<1, Int, i64>(best).await?;
    let hits = best.iter().enumerate().filter(|&(i, &b)| b as usize == i).count();
    Ok(hits as f64 / images.len() as f64)
}

/// Zero-shot choice of each attribute among `n` held-out scenes (those of [`retrieval_r_at_1`]):
/// for each scene and attribute, CLIP picks among the canonical captions that differ from the
/// scene's own in that attribute alone. The share picked right per attribute, in
/// [`ATTRIBUTE_NAMES`] order.
pub async fn zero_shot_attributes(clip: &ClipBundle, n: usize, seed: u64) -> Result<Vec<(String, f64)>, AlignError> {
    let (truths, images): (Vec<Attributes>, Vec<_>) = held_out_scenes(n, seed).into_iter().unzip();
    let image_embeds = l2_normalize(clip.encode_images(&images)?);
    let mut right = [0usize; 5];
    for (i, truth) in truths.iter().enumerate() {
        let image = image_embeds.clone().narrow(0, i, 1);
        for (attribute, right) in right.iter_mut().enumerate() {
            let options = one_attribute_varied(truth, attribute);
            let texts: Vec<String> = options.iter().map(canonical_caption).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let similarity = image.clone().matmul(l2_normalize(clip.encode_texts(&refs)?).transpose());
            let best = read::<1, Int, i64>(similarity.argmax(1).reshape([1])).await?[0] as usize;
            *right += usize::from(options[best] == *truth);
        }
    }
    let n = truths.len().max(1) as f64;
    Ok(ATTRIBUTE_NAMES.iter().zip(right).map(|(name, r)| (name.to_string(), r as f64 / n)).collect())
}

/// `truth` with attribute `attribute` ([`ATTRIBUTE_NAMES`] order) set to each of its values.
fn one_attribute_varied(truth: &Attributes, attribute: usize) -> Vec<Attributes> {
    match attribute {
        0 => Shape::ALL.map(|shape| Attributes { shape, ..*truth }).to_vec(),
        1 => Colour::ALL.map(|colour| Attributes { colour, ..*truth }).to_vec(),
        2 => Size::ALL.map(|size| Attributes { size, ..*truth }).to_vec(),
        3 => Position::ALL.map(|position| Attributes { position, ..*truth }).to_vec(),
        _ => (1..=MAX_COUNT).map(|count| Attributes { count, ..*truth }).collect(),
    }
}

/// Attribute accuracy of captions against their scenes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttributeScores {
    pub captions: usize,
    /// Share right per attribute, in [`ATTRIBUTE_NAMES`] order.
    pub per_attribute: Vec<(String, f64)>,
    /// Mean over the five attributes.
    pub mean: f64,
    /// Share of captions with all five right.
    pub all_correct: f64,
}

impl AttributeScores {
    pub fn of(pairs: &[(String, Attributes)]) -> Self {
        let mut right = [0usize; 5];
        let mut all = 0;
        for (text, truth) in pairs {
            let correct = parse_caption(text).correct(truth);
            for (r, c) in right.iter_mut().zip(correct) {
                *r += usize::from(c);
            }
            all += usize::from(correct.iter().all(|&c| c));
        }
        let n = pairs.len().max(1) as f64;
        let per_attribute: Vec<(String, f64)> =
            ATTRIBUTE_NAMES.iter().zip(right).map(|(name, r)| (name.to_string(), r as f64 / n)).collect();
        let mean = per_attribute.iter().map(|(_, a)| a).sum::<f64>() / 5.0;
        Self { captions: pairs.len(), per_attribute, mean, all_correct: all as f64 / n }
    }
}

/// A held-out scene's attributes and its unit-norm CLIP image embedding, `[1, dim]`.
pub type HeldOutImage = (Attributes, Tensor<2>);

/// [`held_out_scenes`] encoded by `clip` once, for every captioning method to share.
pub fn held_out_images(clip: &ClipBundle, n: usize, seed: u64) -> Result<Vec<HeldOutImage>, AlignError> {
    held_out_scenes(n, seed)
        .into_iter()
        .map(|(truth, image)| Ok((truth, l2_normalize(clip.encode_images(&[image])?))))
        .collect()
}

/// Zero-shot CLIP-guided captions of held-out scenes (no projector, no training on captions
/// paired with images): `(caption, truth)`.
pub async fn guided_captions(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    config: &GuidanceConfig,
    scenes: &[HeldOutImage],
    mut on_caption: impl FnMut(usize, &str),
) -> Result<Vec<(String, Attributes)>, AlignError> {
    let mut out = Vec::with_capacity(scenes.len());
    for (i, (truth, target)) in scenes.iter().enumerate() {
        let outcome = guided::caption(clip, lm, Targets::Fixed(target.clone()), config, |_: &Step| {}).await?;
        let text = outcome.captions.into_iter().next().map(|c| c.text).unwrap_or_default();
        on_caption(i, &text);
        out.push((text, *truth));
    }
    Ok(out)
}

/// Captions of held-out scenes through a trained projector and greedy decoding: `(caption, truth)`.
pub async fn projector_captions(
    lm: &Gpt2Bundle,
    projector: &Projector,
    scenes: &[HeldOutImage],
) -> Result<Vec<(String, Attributes)>, AlignError> {
    let eos = lm.config.eos_token_id;
    let generation = GenerationConfig { max_new_tokens: 16, decoding: Decoding::Greedy, stop_at: eos };
    let mut out = Vec::with_capacity(scenes.len());
    for (truth, target) in scenes {
        projector.config().check_fits(target.dims()[1], lm.model.n_embd())?;
        let prefix = projector.forward(target.clone());
        let ids = generate_from_embeds(&lm.model, prefix, &generation, |_| {}, &lm.device).await?;
        let ids: Vec<u32> = ids.into_iter().filter(|&id| Some(id) != eos).collect();
        out.push((lm.tokenizer.decode(&ids)?.trim().to_string(), *truth));
    }
    Ok(out)
}

/// Dense captioning of one held-out world video.
#[derive(Debug, Clone, Serialize)]
pub struct VideoResult {
    pub seed: u64,
    pub duration: f64,
    pub truth: Vec<GtEvent>,
    pub predicted: Vec<(f64, f64, String)>,
}

/// Dense captioning over held-out videos by ZeroTA: with `count_given`, each video gets as many
/// events as it has (ZeroTA's fixed-K setting); otherwise `config.events` as set (`None`: counted
/// from the video).
#[allow(clippy::too_many_arguments)] // the models, the settings, the world, and two progress callbacks
pub async fn dense_captioning(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    config: &ZeroTaConfig,
    count_given: bool,
    world: &VideoConfig,
    seeds: impl IntoIterator<Item = u64>,
    mut on_video: impl FnMut(&VideoResult),
    mut on_step: impl FnMut(&Step),
) -> Result<Vec<VideoResult>, AlignError> {
    let mut results = Vec::new();
    for seed in seeds {
        let video = sample_video(derive_seed(HELD_OUT_SEED, seed), world);
        let frames = embed_frames(clip, &video.frames)?;
        let events = if count_given { Some(video.events.len()) } else { config.events };
        let config = ZeroTaConfig { events, ..config.clone() };
        let events = dense_caption(clip, lm, &frames, video.duration(), &config, &mut on_step).await?;
        let result = VideoResult {
            seed,
            duration: video.duration(),
            truth: video.events.clone(),
            predicted: events.into_iter().map(|e| (e.start, e.end, e.caption)).collect(),
        };
        on_video(&result);
        results.push(result);
    }
    Ok(results)
}

/// Segment precision and recall at one tIoU threshold, averaged over videos.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentScores {
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
}

/// The densevid_eval figures of a set of dense-captioning results.
#[derive(Debug, Clone, Serialize)]
pub struct DenseScores {
    pub videos: usize,
    pub segments: Vec<SegmentScores>,
    pub mean_precision: f64,
    pub mean_recall: f64,
    /// Events per video, predicted and true.
    pub predicted_events: f64,
    pub true_events: f64,
    /// On pairs matched at tIoU >= 0.5; attributes judged against the matched truth event.
    pub attributes: AttributeScores,
    /// By `densevid_eval`'s protocol (`glimpse_world::densevid`, what `glimpse score` prints),
    /// mean over thresholds.
    pub bleu4: f64,
    pub cider_d: f64,
    /// Where a METEOR was given (mean over thresholds), with SODA_c, which scores with it.
    pub meteor: Option<f64>,
    pub soda_c: Option<Soda>,
}

impl DenseScores {
    pub fn of(results: &[VideoResult], mut meteor: Option<&mut Meteor>) -> std::io::Result<Self> {
        let pairs: Vec<_> = results
            .iter()
            .map(|r| {
                let predicted = r.predicted.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>();
                (predicted, r.truth.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>())
            })
            .collect();
        let mut attribute_pairs = Vec::new();
        for (r, (pred, truth)) in results.iter().zip(&pairs) {
            for (p, t) in metrics::matched_pairs(pred, truth, 0.5) {
                attribute_pairs.push((r.predicted[p].2.clone(), r.truth[t].attributes));
            }
        }
        let predictions = results
            .iter()
            .map(|r| {
                let events =
                    r.predicted.iter().map(|(s, e, c)| Prediction { sentence: c.clone(), timestamp: [*s, *e] });
                (r.seed.to_string(), events.collect())
            })
            .collect();
        let truth = results
            .iter()
            .map(|r| {
                let timestamps = r.truth.iter().map(|e| [e.start, e.end]).collect();
                (
                    r.seed.to_string(),
                    Truth { timestamps, sentences: r.truth.iter().map(|e| e.caption.clone()).collect() },
                )
            })
            .collect();
        let scores = densevid::evaluate(&predictions, &truth, meteor.as_deref_mut())?;
        let soda_c = meteor.map(|m| densevid::soda_c(&predictions, &truth, m)).transpose()?;
        let videos = results.len().max(1) as f64;
        let (mean, per_threshold) = scores.split_last().expect("evaluate ends with the mean");
        let segments = per_threshold
            .iter()
            .zip(metrics::TIOU_THRESHOLDS)
            .map(|(s, threshold)| SegmentScores { threshold, precision: s.precision, recall: s.recall })
            .collect();
        Ok(Self {
            videos: results.len(),
            segments,
            mean_precision: mean.precision,
            mean_recall: mean.recall,
            predicted_events: results.iter().map(|r| r.predicted.len()).sum::<usize>() as f64 / videos,
            true_events: results.iter().map(|r| r.truth.len()).sum::<usize>() as f64 / videos,
            attributes: AttributeScores::of(&attribute_pairs),
            bleu4: mean.bleu_4,
            cider_d: mean.cider_d,
            meteor: mean.meteor,
            soda_c,
        })
    }
}

/// How much of a scene a grounding query states, from least to most.
pub const QUERY_LEVELS: [&str; 3] = ["colour and shape", "colour, shape and position", "full caption"];

/// A query for `a` at level `level` of [`QUERY_LEVELS`]: "red triangles", "red triangles on the
/// left", "two small red triangles on the left".
pub fn grounding_query(a: &Attributes, level: usize) -> String {
    let (colour, shapes) = (a.colour.word(), a.shape.plural());
    match level {
        0 => format!("{colour} {shapes}"),
        1 => format!("{colour} {shapes} {}", a.position.phrase()),
        _ => canonical_caption(a),
    }
}

/// One grounding query on a held-out video and the top moment found for it.
#[derive(Debug, Clone, Serialize)]
pub struct GroundingResult {
    pub seed: u64,
    pub level: usize,
    pub query: String,
    pub truth: (f64, f64),
    pub found: (f64, f64),
    pub tiou: f64,
}

/// Moment retrieval on held-out videos: for every event and level, a query that no other event of
/// the same video also answers, searched with each of `configs` (the same embeddings for all).
/// One list of results per config.
pub async fn grounding(
    clip: &ClipBundle,
    configs: &[FindConfig],
    world: &VideoConfig,
    seeds: impl IntoIterator<Item = u64>,
    mut on_video: impl FnMut(),
) -> Result<Vec<Vec<GroundingResult>>, AlignError> {
    let mut results = vec![Vec::new(); configs.len()];
    for seed in seeds {
        let video = sample_video(derive_seed(HELD_OUT_SEED, seed), world);
        let frames = embed_frames(clip, &video.frames)?;
        let mut asked: Vec<(usize, usize, String)> = Vec::new();
        for (e, event) in video.events.iter().enumerate() {
            for level in 0..QUERY_LEVELS.len() {
                let query = grounding_query(&event.attributes, level);
                let answers = video.events.iter().filter(|o| grounding_query(&o.attributes, level) == query).count();
                if answers == 1 {
                    asked.push((e, level, query));
                }
            }
        }
        // Events that repeat (A, B, A) may leave no query with one answer.
        if asked.is_empty() {
            on_video();
            continue;
        }
        let queries: Vec<&str> = asked.iter().map(|(_, _, q)| q.as_str()).collect();
        for (config, out) in configs.iter().zip(&mut results) {
            let found = find_moments(clip, &frames, video.duration(), &queries, config).await?;
            for ((e, level, query), moments) in asked.iter().zip(found) {
                let truth = (video.events[*e].start, video.events[*e].end);
                let best = moments.first().map_or((0.0, 0.0), |m| (m.start, m.end));
                let iou = tiou(truth, best);
                out.push(GroundingResult { seed, level: *level, query: query.clone(), truth, found: best, tiou: iou });
            }
        }
        on_video();
    }
    Ok(results)
}

/// Recall at one (R1@{0.3, 0.5, 0.7}, TFVTG's figures) and mean tIoU of the top moment.
#[derive(Debug, Clone, Serialize)]
pub struct GroundingScores {
    pub queries: usize,
    /// `(threshold, share of queries whose top moment reaches it)`.
    pub r_at_1: Vec<(f64, f64)>,
    pub miou: f64,
}

impl GroundingScores {
    pub const THRESHOLDS: [f64; 3] = [0.3, 0.5, 0.7];

    pub fn of<'a>(results: impl IntoIterator<Item = &'a GroundingResult>) -> Self {
        let ious: Vec<f64> = results.into_iter().map(|r| r.tiou).collect();
        let n = ious.len().max(1) as f64;
        let r_at_1 =
            Self::THRESHOLDS.iter().map(|&t| (t, ious.iter().filter(|&&iou| iou >= t).count() as f64 / n)).collect();
        // Summed from +0: `Sum for f64` starts at -0.0, which no query keeps, printed `-0.000`.
        Self { queries: ious.len(), r_at_1, miou: ious.iter().fold(0.0, |sum, x| sum + x) / n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_queries_score_positive_zeros() {
        let scores = GroundingScores::of(&[]);
        assert!(scores.miou == 0.0 && scores.miou.is_sign_positive(), "{scores:?}");
        assert!(scores.r_at_1.iter().all(|&(_, r)| r == 0.0 && r.is_sign_positive()));
        let found =
            GroundingResult { seed: 0, level: 0, query: "q".into(), truth: (0.0, 1.0), found: (0.0, 1.0), tiou: 1.0 };
        assert_eq!(GroundingScores::of(&[found]).miou, 1.0);
    }
}
