//! Plain decoding with the KV cache: greedy and contrastive search.
//!
//! Contrastive search is Su et al. 2022, "A Contrastive Framework for Neural Text Generation"
//! (<https://arxiv.org/abs/2202.06417>): among the top-k next tokens pick
//! `argmax (1 - alpha) p(v) - alpha max_j cos(h_v, h_j)`, where `h_v` is the last-layer hidden
//! state of the candidate and `h_j` those of the whole context.
//!
//! Every readback is awaited, so the same code runs in the browser; natively, drive it with any
//! executor (`futures_lite::future::block_on`).

use burn::prelude::*;
use burn::tensor::Element;
use burn::tensor::activation::softmax;
use burn::tensor::kind::Basic;

use crate::clip::l2_normalize;
use crate::error::ModelError;
use crate::gpt2::{Gpt2, KvCache};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    Greedy,
    /// `top_k` candidates, degeneration penalty weight `alpha` (Su et al. use 4 and 0.6).
    Contrastive {
        top_k: usize,
        alpha: f32,
    },
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
    let vocab = model.vocab_size();
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {vocab}")));
    }
    generate_from_embeds(model, model.embed_tokens(ids_tensor(prompt, device)), config, on_token, device).await
}

/// Continues a prompt given as input embeddings `[1, t, n_embd]` (e.g. a projected image followed
/// by embedded prompt tokens) and returns the new ids.
pub async fn generate_from_embeds(
    model: &Gpt2,
    prompt: Tensor<3>,
    config: &GenerationConfig,
    mut on_token: impl FnMut(u32),
    device: &Device,
) -> Result<Vec<u32>, ModelError> {
    let [batch, prompt_len, _] = prompt.dims();
    if batch != 1 || prompt_len == 0 {
        return Err(ModelError::Input(format!("generation takes one non-empty prompt, got {batch} x {prompt_len}")));
    }
    let vocab = model.vocab_size();
    // Greedy search never runs the last chosen token; contrastive search runs every candidate.
    let fed_new_tokens = match config.decoding {
        Decoding::Greedy => config.max_new_tokens.saturating_sub(1),
        Decoding::Contrastive { .. } => config.max_new_tokens,
    };
    model.check_length(prompt_len.saturating_add(fed_new_tokens))?;
    if let Decoding::Contrastive { top_k, .. } = config.decoding {
        let max = MAX_TOP_K.min(vocab);
        if top_k == 0 || top_k > max {
            return Err(ModelError::Input(format!("top-k = {top_k} must be in 1..={max}")));
        }
    }
    if config.max_new_tokens == 0 {
        return Ok(Vec::new());
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
            Decoding::Contrastive { top_k, alpha } => {
                let (probs, candidates) = softmax(logits, 0).topk_with_indices(top_k, 0);
                let mut candidate_cache = cache.repeat_rows(top_k);
                let hidden = model.forward_ids(candidates.clone().reshape([top_k, 1]), &mut candidate_cache);
                let h = l2_normalize(hidden.clone().reshape([top_k, model.n_embd()]));
                let penalty = h.clone().matmul(context.clone().transpose()).max_dim(1).reshape([top_k]);
                let scores = probs * (1.0 - alpha) - penalty * alpha;
                let best = argmax_first(&read::<1, Float, f32>(scores).await?);
                let id = read::<1, Int, i64>(candidates).await?[best] as u32;
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
            last_hidden = model.forward_ids(ids_tensor(&[next], device), &mut cache);
        }
    }
}

/// The largest candidate set of contrastive search: each candidate carries a copy of the cache.
pub const MAX_TOP_K: usize = 256;

/// `[1, n]` token tensor.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&id| i64::from(id)).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

/// Index of the first maximum (ties go to the lower index, as `torch.argmax`).
pub fn argmax_first(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Reads a tensor back to the host as `E`, awaiting the device (required in the browser).
pub async fn read<const D: usize, K: Basic, E: Element>(tensor: Tensor<D, K>) -> Result<Vec<E>, ModelError> {
    let data = tensor.into_data_async().await.map_err(|e| ModelError::Readback(e.to_string()))?;
    data.try_into_vec_as::<E>().map_err(|e| ModelError::Readback(format!("{e:?}")))
}
