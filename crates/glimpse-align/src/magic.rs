//! MAGIC (Su et al. 2022, "Language Models Can See", <https://arxiv.org/abs/2205.02655>):
//! contrastive search with CLIP's opinion added, no gradients. Among the top-k next tokens it picks
//! `argmax (1 - alpha) p(v) - alpha max_j cos(h_v, h_j) + beta softmax_k(CLIP(image, text + v))`.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use glimpse_models::generation::{CandidateBonus, Decoding, GenerationConfig, generate_with_bonus};
use glimpse_models::tensor::read;
use glimpse_models::{ClipBundle, Gpt2Bundle, l2_normalize};

use crate::AlignError;
use crate::guided::{Caption, Prompt, caption_text, score_texts};

/// MAGIC's constants; the defaults are the paper's for MS-COCO.
#[derive(Debug, Clone, PartialEq)]
pub struct MagicConfig {
    pub prompt: String,
    pub max_tokens: usize,
    pub top_k: usize,
    /// Weight of the degeneration penalty.
    pub alpha: f32,
    /// Weight of the CLIP term (0: plain contrastive search).
    pub beta: f32,
}

impl Default for MagicConfig {
    fn default() -> Self {
        Self { prompt: crate::guided::IMAGE_PROMPT.into(), max_tokens: 16, top_k: 45, alpha: 0.1, beta: 2.0 }
    }
}

/// CLIP's softmax over the candidate sentences, scaled by `beta`.
struct ClipBonus<'a> {
    clip: &'a ClipBundle,
    lm: &'a Gpt2Bundle,
    /// Unit-norm target, `[1, dim]`.
    target: Tensor<2>,
    beta: f32,
}

impl CandidateBonus for ClipBonus<'_> {
    type Error = AlignError;

    async fn bonus(&mut self, generated: &[u32], candidates: &[u32]) -> Result<Vec<f32>, AlignError> {
        if self.beta == 0.0 {
            return Ok(vec![0.0; candidates.len()]);
        }
        let texts = candidates
            .iter()
            .map(|&c| caption_text(self.lm, &[generated, &[c]].concat()))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let embeds = self.clip.encode_texts(&refs)?;
        let logits = l2_normalize(embeds).matmul(self.target.clone().transpose()).reshape([candidates.len()])
            * self.clip.model.logit_scale();
        let probs = read::<1, Float, f32>(softmax(logits, 0)).await?;
        Ok(probs.iter().map(|p| p * self.beta).collect())
    }
}

/// Captions each unit-norm embedding of `targets` (`[n, dim]`) with MAGIC.
pub async fn magic_captions(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    targets: Tensor<2>,
    config: &MagicConfig,
) -> Result<Vec<Caption>, AlignError> {
    let prompt = Prompt::new(lm, &config.prompt)?;
    let generation = GenerationConfig {
        max_new_tokens: config.max_tokens,
        decoding: Decoding::Contrastive { top_k: config.top_k, alpha: config.alpha },
        stop_at: Some(prompt.eos),
    };
    let prompt = prompt.ids;
    let n = targets.dims()[0];
    let mut texts = Vec::with_capacity(n);
    for i in 0..n {
        let mut bonus = ClipBonus { clip, lm, target: targets.clone().narrow(0, i, 1), beta: config.beta };
        let embeds = lm.model.embed_ids(&prompt, [1, prompt.len()], &lm.device);
        let ids = generate_with_bonus(&lm.model, embeds, &generation, |_| {}, &mut bonus, &lm.device).await?;
        texts.push(caption_text(lm, &ids)?);
    }
    let scores = score_texts(clip, &texts, targets).await?;
    Ok(texts.into_iter().zip(scores).map(|(text, score)| Caption { text, score }).collect())
}
