//! Language-model training of the world's tiny GPT-2 on the world's captions.

use burn::prelude::*;
use glimpse_media::rng::{Rng, derive_seed};
use glimpse_media::tokenizer::Gpt2Tokenizer;
use glimpse_models::tensor::masked_nll;
use glimpse_models::{Gpt2, Gpt2Config};
use glimpse_world::scene::{Attributes, TEMPLATE_COUNT, caption};

use crate::TrainError;
use crate::tokenizer::{GPT2_SPECIALS, LEAD_INS, words};
use crate::trainer::{Schedule, Trainer};

/// The world GPT-2: 3 layers of width 128, 32 positions, end-of-text token 0.
pub(crate) fn world_gpt2_config() -> Gpt2Config {
    let vocab = GPT2_SPECIALS.len() + 2 * words().len();
    let mut config = Gpt2Config::sized(vocab, 32, 128, 3, 4);
    config.eos_token_id = Some(0);
    config
}

#[derive(Debug, Clone)]
pub struct LmTrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: usize,
    pub seed: u64,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        Self { steps: 1200, batch_size: 64, lr: 2e-3, warmup: 100, seed: 1 }
    }
}

/// Share of training texts that describe their scene twice, in two paraphrases.
const RESTATED: f64 = 0.5;

/// Captions as the LM sees them: a random template, often after a lead-in, ending in a full stop;
/// half of them followed by a paraphrase of the same scene. The paraphrases teach the LM to carry
/// attributes over from its context (where the scene is unknown, nothing before a caption predicts
/// it), which is what lets a projected prefix or a prefix offset steer it.
pub fn texts(seed: u64, step: usize, size: usize) -> Vec<String> {
    let mut rng = Rng::new(derive_seed(seed, step as u64));
    (0..size)
        .map(|_| {
            let attributes = Attributes::sample(&mut rng);
            let mut text = caption(&attributes, rng.below(TEMPLATE_COUNT));
            if rng.chance(0.6) {
                text = format!("{} {text}", rng.pick(&LEAD_INS));
            }
            if rng.chance(RESTATED) {
                text = format!("{text}. {}", caption(&attributes, rng.below(TEMPLATE_COUNT)));
            }
            format!("{text}.")
        })
        .collect()
}

/// A GPT-2 under training.
pub(crate) struct LmTraining {
    pub(crate) trainer: Trainer<Gpt2>,
    config: LmTrainConfig,
}

impl LmTraining {
    /// Continues from `step` with `model` on an autodiff device.
    pub fn new(model: Gpt2, step: usize, config: LmTrainConfig) -> Self {
        let schedule = Schedule::cosine(config.lr, config.warmup, config.steps);
        Self { trainer: Trainer::new(model, step, 0.01, schedule), config }
    }

    /// Trains until step `until` (at most the configured total); `on_step(step, loss)` after each.
    pub async fn run(
        &mut self,
        until: usize,
        tokenizer: &Gpt2Tokenizer,
        eos: u32,
        device: &Device,
        mut on_step: impl FnMut(usize, f32),
    ) -> Result<(), TrainError> {
        let c = &self.config;
        while self.trainer.before(until) {
            let rows = texts(c.seed, self.trainer.step, c.batch_size)
                .iter()
                .map(|t| Ok([vec![eos], tokenizer.encode(t)?, vec![eos]].concat()))
                .collect::<Result<Vec<_>, TrainError>>()?;
            let loss = lm_loss(&self.trainer.model, &rows, eos, device);
            let value = self.trainer.step(loss).await?;
            on_step(self.trainer.step, value);
        }
        Ok(())
    }
}

/// Mean next-token negative log-likelihood over the real tokens of `rows` (each `[eos, text, eos]`,
/// padded with `eos` and masked).
pub fn lm_loss(model: &Gpt2, rows: &[Vec<u32>], pad: u32, device: &Device) -> Tensor<1> {
    let b = rows.len();
    let t = rows.iter().map(Vec::len).max().unwrap_or(2);
    let flat: Vec<i64> =
        rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat(pad)).take(t).map(i64::from)).collect();
    let mask: Vec<f32> = rows.iter().flat_map(|r| (1..t).map(move |i| if i < r.len() { 1.0 } else { 0.0 })).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t - 1]), device);
    masked_nll(model.forward(ids.clone().narrow(1, 0, t - 1)), ids.narrow(1, 1, t - 1), mask)
}
