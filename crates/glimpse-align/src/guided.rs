//! CLIP-guided captioning by test-time optimisation, token by token (ZeroCap, Tewel et al. 2022,
//! <https://arxiv.org/abs/2111.14447>; with moment masks, ZeroTA).
//!
//! For each new token of every caption in the batch:
//! 1. the prefixed LM proposes its top-k next tokens (after the guards: repetition penalty,
//!    no-repeat n-grams);
//! 2. CLIP scores each candidate sentence against the caption's target embedding; a softmax over
//!    the scores (temperature `clip_temperature`) is the target distribution `q`;
//! 3. a few AdamW steps on the prefix (and on the moment masks, when the targets are pooled through
//!    them) minimise `-sum q log p + fluency_weight * KL(p_frozen || p) [+ tiou_weight * tIoU]`;
//! 4. the token with the best `log p + clip_weight * log q` is appended.
//!
//! Every readback is awaited, so the loop runs in the browser too.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use glimpse_models::generation::MAX_TOP_K;
use glimpse_models::gpt2::MAX_POSITIONS;
use glimpse_models::tensor::{argmax_first, ids_tensor, read, top_k_indices};
use glimpse_models::{ClipBundle, Gpt2Bundle, KvCache, ModelError, l2_normalize};
use serde::{Deserialize, Serialize};

use crate::AlignError;
use crate::moment::{MomentMasks, TemperatureSchedule, pairwise_tiou, pool_with_contrast};
use crate::prefix::Prefix;

/// Every constant of the loop, with ZeroCap-like defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuidanceConfig {
    /// Hard prompt the caption continues (not part of the returned caption).
    pub prompt: String,
    /// Most tokens per caption.
    pub max_tokens: usize,
    /// Candidates scored by CLIP per token.
    pub top_k: usize,
    /// Optimiser steps per token.
    pub steps_per_token: usize,
    /// AdamW learning rate of the prefix.
    pub prefix_lr: f64,
    /// Soft-prompt vectors (0: key/value offsets only).
    pub soft_prompt_len: usize,
    /// Temperature of the softmax over CLIP similarities.
    pub clip_temperature: f64,
    /// Weight of `KL(p_frozen || p_prefixed)`, which keeps the text fluent.
    pub fluency_weight: f64,
    /// Weight of CLIP's `log q` when the token is chosen.
    pub clip_weight: f64,
    /// CTRL-style penalty on tokens already in the caption (1 = off); applies to the candidate set
    /// and to the final choice.
    pub repetition_penalty: f32,
    /// Never repeat an n-gram of this length (0 = off).
    pub no_repeat_ngram: usize,
    /// Stop a caption after a token that ends a sentence (`.`, `!`, `?`).
    pub stop_at_sentence_end: bool,
}

/// The hard prompt an image caption continues by default.
pub const IMAGE_PROMPT: &str = "Image of";

impl Default for GuidanceConfig {
    fn default() -> Self {
        Self {
            prompt: IMAGE_PROMPT.into(),
            max_tokens: 12,
            top_k: 16,
            steps_per_token: 3,
            prefix_lr: 0.02,
            soft_prompt_len: 0,
            clip_temperature: 0.01,
            fluency_weight: 0.2,
            clip_weight: 1.0,
            repetition_penalty: 1.5,
            no_repeat_ngram: 3,
            stop_at_sentence_end: true,
        }
    }
}

/// The settings of [`GuidanceConfig`] a user may change: the CLI's flags and the npm package's
/// options (camelCase in JSON) both come through here. Each one left out keeps its default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GuidanceOptions {
    pub prompt: Option<String>,
    pub max_tokens: Option<usize>,
    pub top_k: Option<usize>,
    pub steps_per_token: Option<usize>,
    pub soft_prompt_len: Option<usize>,
}

impl GuidanceOptions {
    /// The whole configuration; without a prompt the caption continues `default_prompt`
    /// ([`IMAGE_PROMPT`] or `zerota::VIDEO_PROMPT`).
    pub fn config(&self, default_prompt: &str) -> GuidanceConfig {
        let defaults = GuidanceConfig::default();
        GuidanceConfig {
            prompt: self.prompt.clone().unwrap_or_else(|| default_prompt.to_string()),
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            steps_per_token: self.steps_per_token.unwrap_or(defaults.steps_per_token),
            soft_prompt_len: self.soft_prompt_len.unwrap_or(defaults.soft_prompt_len),
            ..defaults
        }
    }
}

/// Moment masks over a video's frames, with the weights of their own loss terms.
pub struct MomentTargets {
    /// Unit-norm frame embeddings, `[frames, dim]`.
    pub frames: Tensor<2>,
    pub masks: MomentMasks,
    pub schedule: TemperatureSchedule,
    pub mask_lr: f64,
    /// Weight of the pairwise tIoU loss that keeps events apart.
    pub tiou_weight: f64,
    /// Weight of the inside/outside similarity that makes a mask take in a whole segment.
    pub contrast_weight: f64,
}

impl MomentTargets {
    /// Pooled moment embeddings `[k, dim]` and the masks' own loss at temperature step `step`.
    pub fn evaluate(&self, step: usize, steps: usize) -> (Tensor<2>, Tensor<1>) {
        let m = self.masks.masks(self.frames.dims()[0], self.schedule.at(step, steps));
        let (moments, contrast) = pool_with_contrast(m.clone(), self.frames.clone());
        (moments, pairwise_tiou(m) * self.tiou_weight + contrast * self.contrast_weight)
    }
}

/// What the captions describe.
#[allow(clippy::large_enum_variant)] // one value per captioning run; boxing would only add noise
pub enum Targets {
    /// Unit-norm CLIP embeddings, `[batch, dim]` (images).
    Fixed(Tensor<2>),
    /// Moments of a video: unit-norm frame embeddings `[frames, dim]` pooled through learnable
    /// masks (one caption per mask, created on the LM's autodiff device), kept apart by the
    /// pairwise tIoU loss.
    Moments(MomentTargets),
}

impl Targets {
    fn len(&self) -> usize {
        match self {
            Self::Fixed(t) => t.dims()[0],
            Self::Moments(moments) => moments.masks.len(),
        }
    }

    /// Targets `[batch, dim]` and the masks' own loss (none for fixed targets).
    fn embeddings(&self, step: usize, steps: usize) -> (Tensor<2>, Option<Tensor<1>>) {
        match self {
            Self::Fixed(t) => (t.clone(), None),
            Self::Moments(moments) => {
                let (targets, own) = moments.evaluate(step, steps);
                (targets, Some(own))
            }
        }
    }
}

/// One optimiser step, for progress displays.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Token index, and the index of this step over the whole run (`0..total_steps`).
    pub token: usize,
    pub step: usize,
    pub total_steps: usize,
    pub clip_loss: f32,
    pub fluency_loss: f32,
    /// The masks' own loss (pairwise tIoU and inside/outside contrast), 0 for images.
    pub mask_loss: f32,
    /// Current moment segments as fractions of the video, when optimising masks.
    pub spans: Option<Vec<(f64, f64)>>,
    /// Captions so far.
    pub captions: Vec<String>,
}

/// A finished caption.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    pub text: String,
    /// Cosine similarity between the caption's CLIP embedding and its target.
    pub score: f32,
}

/// The result of [`caption`]: captions and, for moments, the final masks.
pub struct Outcome {
    pub captions: Vec<Caption>,
    pub masks: Option<MomentMasks>,
}

/// Refuses settings `lm` cannot run: ones out of range for its vocabulary, a prompt it cannot
/// read, more positions than it has. [`caption`] checks them too; a caller with slow work to do
/// first (reading a video) checks them before it. `name` gives the caller's name of each field.
pub fn check_fits(lm: &Gpt2Bundle, config: &GuidanceConfig, name: &dyn Fn(&str) -> String) -> Result<(), AlignError> {
    fitting_prompt(lm, config, name).map(drop)
}

/// [`check_fits`], giving the prompt it tokenized.
fn fitting_prompt(
    lm: &Gpt2Bundle,
    config: &GuidanceConfig,
    name: &dyn Fn(&str) -> String,
) -> Result<Prompt, AlignError> {
    check(config, lm.model.vocab_size(), name)?;
    let prompt = Prompt::new(lm, &config.prompt)?;
    // The prefix (the end-of-text token and the prompt but its last token) and the token that
    // starts the context.
    let prompt_len = prompt.split().0.len() + 1;
    // Summed with overflow checked: an absurd soft-prompt length must be refused, not wrap around.
    let positions = [prompt_len, config.soft_prompt_len, config.max_tokens].into_iter().try_fold(0, usize::checked_add);
    let max = lm.model.n_positions();
    if positions.is_none_or(|total| total > max) {
        return Err(AlignError::Input(format!(
            "the prompt ({prompt_len} positions with the token that starts a text), {} ({}) and {} ({}) need more \
             than the {max} positions the model has (n_positions); shorten the prompt or lower the others",
            name("soft_prompt_len"),
            config.soft_prompt_len,
            name("max_tokens"),
            config.max_tokens
        )));
    }
    Ok(prompt)
}

/// Runs the loop for every target at once (they form one batch).
pub async fn caption(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    mut targets: Targets,
    config: &GuidanceConfig,
    mut on_step: impl FnMut(&Step),
) -> Result<Outcome, AlignError> {
    let batch = targets.len();
    if batch == 0 {
        return Err(AlignError::Input("nothing to caption".into()));
    }
    let device = lm.device.clone();
    let grad_device = device.clone().autodiff();
    let model = &lm.model;
    let vocab = model.vocab_size();
    let prompt = fitting_prompt(lm, config, &str::to_string)?;
    let (eos, (dummy, first)) = (prompt.eos, prompt.split());
    let mut base = KvCache::new();
    model.forward_ids(ids_tensor(dummy, &device), &mut base);
    let base = base.repeat_rows(batch);
    let soft_init = (config.soft_prompt_len > 0).then(|| {
        let ids: Vec<u32> = dummy.iter().copied().cycle().take(config.soft_prompt_len).collect();
        model.embed_ids(&ids, [1, ids.len()], &device).expand([batch, config.soft_prompt_len, model.n_embd()])
    });
    let mut prefix = Prefix::new(&base, soft_init, &grad_device);

    let mut prefix_optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let mut mask_optim = AdamWConfig::new().with_weight_decay(0.0).init();

    // Every row is fed the same number of tokens (the batch stays rectangular); a finished caption
    // is fed end-of-text tokens that are not part of it.
    let mut fed: Vec<Vec<u32>> = vec![Vec::new(); batch];
    let mut caption_len: Vec<Option<usize>> = vec![None; batch];
    let captions_of = |fed: &[Vec<u32>], lens: &[Option<usize>]| -> Vec<Vec<u32>> {
        fed.iter().zip(lens).map(|(f, len)| f[..len.unwrap_or(f.len())].to_vec()).collect()
    };
    let total_steps = config.max_tokens * config.steps_per_token;
    // The frozen LM (no prefix offsets, no soft prompt) reads the context once, one token per
    // round, from its own cache.
    let mut frozen_cache = base.clone();
    for token in 0..config.max_tokens {
        let context: Vec<Vec<u32>> = fed.iter().map(|t| [&[first][..], t].concat()).collect();
        let embeds = model.embed_ids(&context.concat(), [batch, context[0].len()], &device);
        // The frozen LM's own next-token distribution.
        let frozen = {
            let newest = embeds.clone().narrow(1, context[0].len() - 1, 1);
            let hidden = model.forward_embeds(newest, &mut frozen_cache);
            log_softmax(model.logits(hidden).reshape([batch, vocab]), 1)
        };
        // Candidates from the prefixed LM, after the guards. This forward pass (with its graph) also
        // serves the first optimiser step: the prefix has not changed in between.
        let mut first_pass = Some(prefix.next_logits(model, embeds.clone()));
        let logits = read::<2, Float, f32>(first_pass.as_ref().expect("just set").clone().detach()).await?;
        let candidates: Vec<Vec<u32>> =
            (0..batch).map(|b| guarded_top_k(&logits[b * vocab..(b + 1) * vocab], &fed[b], config)).collect();
        let candidate_embeds = candidate_embeddings(clip, lm, config, &fed, &candidates).await?;
        let candidate_ids = batch_ids(&candidates, &device);

        for step in 0..config.steps_per_token {
            let global = token * config.steps_per_token + step;
            let (target, own_loss) = targets.embeddings(global, total_steps);
            let q = clip_distribution(&candidate_embeds, target, config.clip_temperature);
            let logits = first_pass.take().unwrap_or_else(|| prefix.next_logits(model, embeds.clone()));
            let logp = log_softmax(logits, 1);
            let logp_candidates = logp.clone().gather(1, candidate_ids.clone());
            let clip_loss = (q * logp_candidates).sum_dim(1).mean().neg();
            let fluency = (frozen.clone().exp() * (frozen.clone() - logp)).sum_dim(1).mean();
            let mut loss = clip_loss.clone() + fluency.clone() * config.fluency_weight;
            if let Some(own) = &own_loss {
                loss = loss + own.clone();
            }
            let mut grads = loss.backward();
            let prefix_grads = GradientsParams::from_module(&mut grads, &prefix);
            prefix = prefix_optim.step(config.prefix_lr, prefix, prefix_grads);
            if let Targets::Moments(moments) = &mut targets {
                let mask_grads = GradientsParams::from_module(&mut grads, &moments.masks);
                moments.masks = mask_optim.step(moments.mask_lr, moments.masks.clone(), mask_grads);
            }
            // One readback per step for the progress report: the losses, then the masks' spans.
            let mut report = vec![
                clip_loss.detach(),
                fluency.detach(),
                own_loss.unwrap_or_else(|| Tensor::zeros([1], &grad_device)).detach(),
            ];
            if let Targets::Moments(moments) = &targets {
                let (centre, width) = moments.masks.spans();
                report.extend([centre.detach(), width.detach()]);
            }
            let values = read::<1, Float, f32>(Tensor::cat(report, 0)).await?;
            let (losses, masks) = values.split_at(3);
            on_step(&Step {
                token,
                step: global,
                total_steps,
                clip_loss: losses[0],
                fluency_loss: losses[1],
                mask_loss: losses[2],
                spans: matches!(targets, Targets::Moments(_)).then(|| spans_of(masks)),
                captions: decode_all(lm, &captions_of(&fed, &caption_len))?,
            });
        }

        // Choose each caption's token with the optimised prefix (guards applied again) and the
        // updated CLIP target.
        let (target, _) = targets.embeddings((token + 1) * config.steps_per_token, total_steps);
        let q_log =
            clip_distribution(&candidate_embeds, target.detach(), config.clip_temperature).clamp_min(1e-12).log();
        let k = config.top_k;
        // One readback for both: each row is the k candidates' log q, then the vocabulary's logits.
        // Without autodiff: nothing is differentiated through this pass, which on wgpu then takes
        // the fused kernels (about half the launches of the graph-recording pass).
        let logits = prefix.valid().next_logits(model, embeds);
        let both = read::<2, Float, f32>(Tensor::cat(vec![q_log.without_autodiff(), logits], 1)).await?;
        let (q_log, logits): (Vec<f32>, Vec<f32>) = {
            let rows = both.chunks(k + vocab);
            (
                rows.clone().flat_map(|row| &row[..k]).copied().collect(),
                rows.flat_map(|row| &row[k..]).copied().collect(),
            )
        };
        for b in 0..batch {
            if caption_len[b].is_some() {
                fed[b].push(eos);
                continue;
            }
            let logp = guarded_log_probs(&logits[b * vocab..(b + 1) * vocab], &fed[b], config);
            let scores: Vec<f32> = (0..k)
                .map(|i| logp[candidates[b][i] as usize] + config.clip_weight as f32 * q_log[b * k + i])
                .collect();
            let next = candidates[b][argmax_first(&scores)];
            if next == eos {
                caption_len[b] = Some(fed[b].len());
            }
            fed[b].push(next);
            if next != eos && config.stop_at_sentence_end && ends_sentence(&lm.tokenizer.decode(&[next])?) {
                caption_len[b] = Some(fed[b].len());
            }
        }
        if caption_len.iter().all(Option::is_some) {
            break;
        }
    }

    let (final_targets, _) = targets.embeddings(total_steps, total_steps);
    let texts = decode_all(lm, &captions_of(&fed, &caption_len))?;
    let scores = score_texts(clip, &texts, final_targets.detach().without_autodiff()).await?;
    let captions = texts.into_iter().zip(scores).map(|(text, score)| Caption { text, score }).collect();
    let masks = match targets {
        Targets::Moments(moments) => Some(moments.masks),
        Targets::Fixed(_) => None,
    };
    Ok(Outcome { captions, masks })
}

/// A hard prompt as token ids: the end-of-text token, then the prompt.
pub(crate) struct Prompt {
    pub eos: u32,
    /// `[eos, prompt...]`.
    pub ids: Vec<u32>,
}

impl Prompt {
    pub fn new(lm: &Gpt2Bundle, prompt: &str) -> Result<Self, AlignError> {
        let eos = lm.config.eos_token_id.unwrap_or(lm.model.vocab_size() as u32 - 1);
        let ids = [vec![eos], lm.tokenizer.encode(prompt)?].concat();
        lm.model.check_ids(&ids)?;
        Ok(Self { eos, ids })
    }

    /// The dummy prefix whose keys and values are optimised (everything but the last prompt
    /// token, never empty) and the token that starts the context (the last prompt token, or the
    /// end-of-text token again for an empty prompt).
    pub fn split(&self) -> (&[u32], u32) {
        match self.ids.split_last() {
            Some((&last, rest)) if !rest.is_empty() => (rest, last),
            _ => (&self.ids, self.eos),
        }
    }
}

/// The most optimiser steps per token: each is a forward and backward pass through both models.
pub const MAX_STEPS_PER_TOKEN: usize = 1000;

impl GuidanceConfig {
    /// Checks every setting as far as it can be without a model (the prompt's length and the
    /// vocabulary are checked by [`caption`]). `name` gives the caller's name of each field (e.g.
    /// its command-line flag) for messages.
    pub fn validate(&self, name: &dyn Fn(&str) -> String) -> Result<(), AlignError> {
        check_count(name("top_k"), self.top_k, 1, MAX_TOP_K)?;
        check_count(name("max_tokens"), self.max_tokens, 1, MAX_POSITIONS)?;
        check_count(name("soft_prompt_len"), self.soft_prompt_len, 0, MAX_POSITIONS)?;
        check_count(name("steps_per_token"), self.steps_per_token, 1, MAX_STEPS_PER_TOKEN)?;
        for (field, value, least, inclusive) in [
            ("prefix_lr", self.prefix_lr, 0.0, false),
            ("clip_temperature", self.clip_temperature, 0.0, false),
            ("fluency_weight", self.fluency_weight, 0.0, true),
            ("clip_weight", self.clip_weight, 0.0, true),
            ("repetition_penalty", f64::from(self.repetition_penalty), 1.0, true),
        ] {
            check_at_least(name(field), value, least, inclusive)?;
        }
        Ok(())
    }
}

/// [`GuidanceConfig::validate`], and `top_k` against the vocabulary.
pub(crate) fn check(config: &GuidanceConfig, vocab: usize, name: &dyn Fn(&str) -> String) -> Result<(), AlignError> {
    config.validate(name)?;
    check_count(name("top_k"), config.top_k, 1, vocab)
}

/// Refuses a count outside `least..=most`.
pub(crate) fn check_count(name: String, value: usize, least: usize, most: usize) -> Result<(), AlignError> {
    if (least..=most).contains(&value) {
        return Ok(());
    }
    Err(AlignError::Settings(format!("{name} = {value} must be in {least}..={most}")))
}

/// Refuses a setting that is not finite or lies below `least` (or at it, unless `inclusive`).
pub(crate) fn check_at_least(name: String, value: f64, least: f64, inclusive: bool) -> Result<(), AlignError> {
    let above = if inclusive { value >= least } else { value > least };
    if value.is_finite() && above {
        return Ok(());
    }
    let bound = if inclusive { "at least" } else { "above" };
    Err(AlignError::Settings(format!("{name} = {value} must be finite and {bound} {least}")))
}

/// `[batch, len]` ids; all rows have the same length.
fn batch_ids(rows: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&id| i64::from(id)).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), len]), device)
}

/// Next-token logits after the guards: the CTRL repetition penalty (Keskar et al. 2019: positive
/// logits of tokens already in the caption are divided by the penalty, negative ones multiplied)
/// and the ban of tokens that would repeat an n-gram.
fn guarded_logits(logits: &[f32], generated: &[u32], config: &GuidanceConfig) -> Vec<f32> {
    let mut guarded = logits.to_vec();
    for &id in generated {
        let logit = &mut guarded[id as usize];
        if logit.is_finite() {
            *logit = if *logit > 0.0 { *logit / config.repetition_penalty } else { *logit * config.repetition_penalty };
        }
    }
    let n = config.no_repeat_ngram;
    if n > 0 && generated.len() >= n {
        let tail = &generated[generated.len() - (n - 1)..];
        for window in generated.windows(n) {
            if window[..n - 1] == *tail {
                guarded[window[n - 1] as usize] = f32::NEG_INFINITY;
            }
        }
    }
    guarded
}

/// The `top_k` best next tokens after the guards (ties go to the lower id).
fn guarded_top_k(logits: &[f32], generated: &[u32], config: &GuidanceConfig) -> Vec<u32> {
    let guarded = guarded_logits(logits, generated, config);
    top_k_indices(&guarded, config.top_k).into_iter().map(|id| id as u32).collect()
}

/// Log-probabilities over the vocabulary after the guards.
fn guarded_log_probs(logits: &[f32], generated: &[u32], config: &GuidanceConfig) -> Vec<f32> {
    let guarded = guarded_logits(logits, generated, config);
    let max = guarded.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = guarded.iter().map(|l| (l - max).exp()).sum::<f32>().ln() + max;
    guarded.iter().map(|l| l - log_sum).collect()
}

/// Unit-norm CLIP embeddings of every candidate caption (caption so far + candidate, without the
/// prompt, exactly as the caption will be returned and scored): `[batch, top_k, dim]`.
async fn candidate_embeddings(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    config: &GuidanceConfig,
    tokens: &[Vec<u32>],
    candidates: &[Vec<u32>],
) -> Result<Tensor<3>, AlignError> {
    let mut texts = Vec::with_capacity(candidates.len() * config.top_k);
    for (generated, cands) in tokens.iter().zip(candidates) {
        for &c in cands {
            texts.push(caption_text(lm, &[generated.as_slice(), &[c]].concat())?);
        }
    }
    let embeds = encode_captions(clip, &texts)?;
    let dim = embeds.dims()[1];
    Ok(embeds.reshape([candidates.len(), config.top_k, dim]))
}

/// `q = softmax(cos(candidate, target) / temperature)`: `[batch, k, dim]`, `[batch, dim]` -> `[batch, k]`.
fn clip_distribution(candidates: &Tensor<3>, target: Tensor<2>, temperature: f64) -> Tensor<2> {
    let [b, k, _] = candidates.dims();
    let sims = candidates.clone().matmul(target.unsqueeze_dim::<3>(2)).reshape([b, k]);
    softmax(sims / temperature, 1)
}

/// Cosine similarity of each text's CLIP embedding with its target, `[batch, dim]`.
pub async fn score_texts(clip: &ClipBundle, texts: &[String], targets: Tensor<2>) -> Result<Vec<f32>, AlignError> {
    let embeds = encode_captions(clip, texts)?;
    Ok(read::<2, Float, f32>((embeds * targets).sum_dim(1)).await?)
}

/// Unit-norm CLIP embeddings of captions, `[texts, dim]`.
fn encode_captions(clip: &ClipBundle, texts: &[String]) -> Result<Tensor<2>, AlignError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(l2_normalize(clip.encode_texts(&refs)?))
}

/// The caption text of `ids`: end-of-text tokens dropped, whitespace trimmed.
pub(crate) fn caption_text(lm: &Gpt2Bundle, ids: &[u32]) -> Result<String, AlignError> {
    let eos = lm.config.eos_token_id;
    let ids: Vec<u32> = ids.iter().copied().filter(|&id| Some(id) != eos).collect();
    Ok(lm.tokenizer.decode(&ids)?.trim().to_string())
}

fn decode_all(lm: &Gpt2Bundle, tokens: &[Vec<u32>]) -> Result<Vec<String>, AlignError> {
    tokens.iter().map(|t| caption_text(lm, t)).collect()
}

fn ends_sentence(piece: &str) -> bool {
    let piece = piece.trim_end();
    piece.ends_with('.') || piece.ends_with('!') || piece.ends_with('?')
}

/// Current segments of the masks as fractions of the video.
pub async fn spans(masks: &MomentMasks) -> Result<Vec<(f64, f64)>, ModelError> {
    let (centre, width) = masks.spans();
    Ok(spans_of(&read::<1, Float, f32>(Tensor::cat(vec![centre.detach(), width.detach()], 0)).await?))
}

/// Segments from the masks' centres followed by their widths, clipped to the video.
fn spans_of(centres_then_widths: &[f32]) -> Vec<(f64, f64)> {
    let (c, w) = centres_then_widths.split_at(centres_then_widths.len() / 2);
    c.iter().zip(w).map(|(&c, &w)| (f64::from(c - w / 2.0).max(0.0), f64::from(c + w / 2.0).min(1.0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_out_of_range_are_refused_under_the_callers_names() {
        assert!(check(&GuidanceConfig::default(), 50257, &str::to_string).is_ok());
        let flag = |field: &str| format!("--{}", field.replace('_', "-"));
        let bad = [
            (GuidanceConfig { top_k: 0, ..GuidanceConfig::default() }, "--top-k = 0"),
            (GuidanceConfig { soft_prompt_len: usize::MAX, ..GuidanceConfig::default() }, "--soft-prompt-len"),
            (GuidanceConfig { steps_per_token: 1 << 40, ..GuidanceConfig::default() }, "--steps-per-token"),
            (GuidanceConfig { prefix_lr: f64::NAN, ..GuidanceConfig::default() }, "--prefix-lr = NaN must be finite"),
            (GuidanceConfig { repetition_penalty: 0.5, ..GuidanceConfig::default() }, "at least 1"),
        ];
        for (config, message) in bad {
            let err = config.validate(&flag).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
        // Within the bounds, but beyond a small vocabulary.
        let err = check(&GuidanceConfig { top_k: 40, ..GuidanceConfig::default() }, 30, &flag).unwrap_err().to_string();
        assert!(err.contains("--top-k = 40 must be in 1..=30"), "{err}");
    }
}
