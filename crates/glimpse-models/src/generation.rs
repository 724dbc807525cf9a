//! Plain decoding with the KV cache: greedy, contrastive and beam search.
//!
//! Contrastive search is Su et al. 2022, "A Contrastive Framework for Neural Text Generation"
//! (<https://arxiv.org/abs/2202.06417>): among the top-k next tokens pick
//! `argmax (1 - alpha) p(v) - alpha max_j cos(h_v, h_j)`, where `h_v` is the last-layer hidden
//! state of the candidate and `h_j` those of the whole context.
//!
//! Every readback is awaited, so the same code runs in the browser; natively, drive it with any
//! executor (`futures_lite::future::block_on`).

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use crate::error::ModelError;
use crate::gpt2::{Gpt2, KvCache};
use crate::tensor::{argmax_first, l2_normalize, read, top_k_indices};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    Greedy,
    /// `top_k` candidates, degeneration penalty weight `alpha` (Su et al. use 4 and 0.6).
    Contrastive {
        top_k: usize,
        alpha: f32,
    },
    /// Beam search keeping `beams` hypotheses, ranked by summed log-probability over length, by
    /// transformers' rules (`generate(num_beams=beams)`: length penalty 1, no early stopping).
    Beam {
        beams: usize,
    },
}

/// Extra scores for the candidates of contrastive search, added to
/// `(1 - alpha) p(v) - alpha max cos(h_v, h_j)`. MAGIC adds CLIP's opinion here.
pub trait CandidateBonus {
    /// What scoring may fail with; generation's own errors convert into it.
    type Error: From<ModelError>;

    /// One score per candidate continuing `generated` (the new ids so far).
    fn bonus(&mut self, generated: &[u32], candidates: &[u32]) -> impl Future<Output = Result<Vec<f32>, Self::Error>>;
}

/// Plain contrastive search.
pub struct NoBonus;

impl CandidateBonus for NoBonus {
    type Error = ModelError;

    async fn bonus(&mut self, _: &[u32], candidates: &[u32]) -> Result<Vec<f32>, ModelError> {
        Ok(vec![0.0; candidates.len()])
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// Stop after this token (usually the end-of-text id); `None` always generates `max_new_tokens`.
    pub stop_at: Option<u32>,
}

/// Continues `prompt` (token ids as the tokenizer gives them, no extra BOS) and returns the new ids.
/// `on_token` sees each id as soon as it is chosen.
pub async fn generate(
    model: &Gpt2,
    prompt: &[u32],
    config: &GenerationConfig,
    on_token: impl FnMut(u32),
    device: &Device,
) -> Result<Vec<u32>, ModelError> {
    if prompt.is_empty() {
        return Err(ModelError::Input("the prompt is empty; give at least one token".into()));
    }
    model.check_ids(prompt)?;
    generate_from_embeds(model, model.embed_ids(prompt, [1, prompt.len()], device), config, on_token, device).await
}

/// Continues a prompt given as input embeddings `[1, t, n_embd]` (e.g. a projected image followed
/// by embedded prompt tokens) and returns the new ids.
pub async fn generate_from_embeds(
    model: &Gpt2,
    prompt: Tensor<3>,
    config: &GenerationConfig,
    on_token: impl FnMut(u32),
    device: &Device,
) -> Result<Vec<u32>, ModelError> {
    generate_with_bonus(model, prompt, config, on_token, &mut NoBonus, device).await
}

/// [`generate_from_embeds`] with extra candidate scores in contrastive search.
pub async fn generate_with_bonus<B: CandidateBonus>(
    model: &Gpt2,
    prompt: Tensor<3>,
    config: &GenerationConfig,
    mut on_token: impl FnMut(u32),
    bonus: &mut B,
    device: &Device,
) -> Result<Vec<u32>, B::Error> {
    let [batch, prompt_len, _] = prompt.dims();
    if batch != 1 || prompt_len == 0 {
        return Err(
            ModelError::Input(format!("generation takes one non-empty prompt, got {batch} x {prompt_len}")).into()
        );
    }
    let vocab = model.vocab_size();
    // Greedy search never runs the last chosen token; contrastive search runs every candidate.
    let fed_new_tokens = match config.decoding {
        Decoding::Greedy | Decoding::Beam { .. } => config.max_new_tokens.saturating_sub(1),
        Decoding::Contrastive { .. } => config.max_new_tokens,
    };
    model.check_length(prompt_len.saturating_add(fed_new_tokens))?;
    if let Decoding::Contrastive { top_k, .. } = config.decoding {
        let max = MAX_TOP_K.min(vocab);
        if top_k == 0 || top_k > max {
            return Err(ModelError::Input(format!("top-k = {top_k} must be in 1..={max}")).into());
        }
    }
    if config.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    if let Decoding::Beam { beams } = config.decoding {
        let max = MAX_TOP_K.min(vocab);
        if beams == 0 || beams > max {
            return Err(ModelError::Input(format!("beams = {beams} must be in 1..={max}")).into());
        }
        let best = beam_search(model, prompt, config, beams, device).await?;
        best.iter().for_each(|&id| on_token(id));
        return Ok(best);
    }

    let mut cache = KvCache::new();
    let hidden = model.forward_embeds(prompt, &mut cache);
    let mut last_hidden = hidden.clone().narrow(1, prompt_len - 1, 1);
    // Unit-norm hidden states of the whole context, `[t, d]` (contrastive search only).
    let mut context = l2_normalize(hidden.squeeze_dim::<2>(0));
    let mut out = Vec::with_capacity(config.max_new_tokens);
    loop {
        let logits = model.logits(last_hidden.clone()).reshape([vocab]);
        let next = match config.decoding {
            Decoding::Greedy => read::<1, Int, i64>(logits.argmax(0)).await?[0] as u32,
            Decoding::Beam { .. } => unreachable!("beam search returned above"),
            Decoding::Contrastive { top_k, alpha } => {
                let (probs, candidates) = softmax(logits, 0).topk_with_indices(top_k, 0);
                let mut candidate_cache = cache.repeat_rows(top_k);
                let hidden = model.forward_ids(candidates.clone().reshape([top_k, 1]), &mut candidate_cache);
                let h = l2_normalize(hidden.clone().reshape([top_k, model.n_embd()]));
                let penalty = h.clone().matmul(context.clone().transpose()).max_dim(1).reshape([top_k]);
                let scores = read::<1, Float, f32>(probs * (1.0 - alpha) - penalty * alpha).await?;
                let ids: Vec<u32> = read::<1, Int, i64>(candidates).await?.iter().map(|&id| id as u32).collect();
                let extra = bonus.bonus(&out, &ids).await?;
                let scores: Vec<f32> = scores.iter().zip(&extra).map(|(s, b)| s + b).collect();
                let best = argmax_first(&scores);
                let id = ids[best];
                let row = Tensor::<1, Int>::from_data(TensorData::new(vec![best as i64], [1]), device);
                cache = candidate_cache.select(row.clone());
                last_hidden = hidden.select(0, row.clone());
                context = Tensor::cat(vec![context, h.select(0, row)], 0);
                id
            }
        };
        out.push(next);
        on_token(next);
        if config.stop_at == Some(next) || out.len() == config.max_new_tokens {
            return Ok(out);
        }
        if config.decoding == Decoding::Greedy {
            last_hidden = model.forward_embeds(model.embed_ids(&[next], [1, 1], device), &mut cache);
        }
    }
}

/// Beam search as transformers' `generate(num_beams=beams)` runs it (length penalty 1, no early
/// stopping), so that the two give the same ids: each step takes the best `2 * beams` extensions
/// of all live hypotheses by summed log-probability. Those among the first `beams` that end in
/// `stop_at` (or reach the last step) are finished, scored by their sum over their length, and
/// the best `beams` finished are kept; the first `beams` that do not end live on. The search stops
/// once every finished slot is taken and the best live sum over the current length cannot beat the
/// worst finished score (transformers' heuristic). Returns the best finished hypothesis's ids.
async fn beam_search(
    model: &Gpt2,
    prompt: Tensor<3>,
    config: &GenerationConfig,
    beams: usize,
    device: &Device,
) -> Result<Vec<u32>, ModelError> {
    let vocab = model.vocab_size();
    let prompt_len = prompt.dims()[1];
    let mut cache = KvCache::new();
    let hidden = model.forward_embeds(prompt, &mut cache);
    let mut logits = model.logits(hidden.narrow(1, prompt_len - 1, 1)).reshape([1, vocab]);
    // Live hypotheses (ids, summed log-probability), one cache row each, best first; finished
    // ones (ids, score), best first.
    let mut live: Vec<(Vec<u32>, f32)> = vec![(Vec::new(), 0.0)];
    let mut finished: Vec<(Vec<u32>, f32)> = Vec::with_capacity(beams + 1);
    let mut improvable = true;
    // Candidates a step: enough that `beams` of them go on, though each live hypothesis may end.
    let kept = 2 * beams;
    for step in 0..config.max_new_tokens {
        let logp = read::<2, Float, f32>(log_softmax(logits, 1)).await?;
        let mut candidates: Vec<(usize, u32, f32)> = Vec::with_capacity(live.len() * kept);
        for (row, (_, total)) in live.iter().enumerate() {
            let row_logp = &logp[row * vocab..(row + 1) * vocab];
            let best = top_k_indices(row_logp, kept);
            candidates.extend(best.into_iter().map(|id| (row, id as u32, total + row_logp[id])));
        }
        candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
        candidates.truncate(kept);
        let last = step + 1 == config.max_new_tokens;
        let ends = |id: u32| last || config.stop_at == Some(id);
        let length = (step + 1) as f32;
        for &(row, id, total) in candidates.iter().take(beams).filter(|(_, id, _)| ends(*id)) {
            finished.push(([live[row].0.as_slice(), &[id]].concat(), total / length));
        }
        // Stable: of equal scores, the one finished first stays first.
        finished.sort_by(|a, b| b.1.total_cmp(&a.1));
        finished.truncate(beams);
        let next: Vec<(usize, Vec<u32>, f32)> = candidates
            .iter()
            .filter(|(_, id, _)| !ends(*id))
            .take(beams)
            .map(|&(row, id, total)| (row, [live[row].0.as_slice(), &[id]].concat(), total))
            .collect();
        if let (Some((_, _, best)), Some((_, worst))) = (next.first(), finished.last()) {
            improvable &= finished.len() < beams || best / length > *worst;
        }
        if next.is_empty() || !improvable {
            break;
        }
        let rows: Vec<i64> = next.iter().map(|(row, _, _)| *row as i64).collect();
        let fed: Vec<i64> = next.iter().map(|(_, ids, _)| i64::from(*ids.last().unwrap())).collect();
        cache = cache.select(Tensor::from_data(TensorData::new(rows, [next.len()]), device));
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(fed, [next.len(), 1]), device);
        logits = model.logits(model.forward_ids(tokens, &mut cache)).reshape([next.len(), vocab]);
        live = next.into_iter().map(|(_, ids, total)| (ids, total)).collect();
    }
    Ok(finished.into_iter().next().expect("the last step finishes hypotheses").0)
}

/// The largest candidate set of contrastive search: each candidate carries a copy of the cache.
pub const MAX_TOP_K: usize = 256;
