//! A training run in a folder: started, or resumed from the run left there, and trained between
//! checkpoints; each checkpoint is a whole model in the Hugging Face layout plus
//! `train_state.json`, so a folder always loads as a model and a killed run loses at most one
//! checkpoint interval.

use std::path::PathBuf;

use burn::prelude::*;
use glimpse_media::image::ImagePreprocess;
use glimpse_media::tokenizer::{ClipTokenizer, Gpt2Tokenizer};
use glimpse_models::{Clip, Gpt2};

use crate::TrainError;
use crate::checkpoint::{self, TrainState};
use crate::clip::{ClipTrainConfig, ClipTraining, IMAGE_SIZE, preprocessor_json, world_clip_config};
use crate::lm::{LmTrainConfig, LmTraining, world_gpt2_config};
use crate::tokenizer::{clip_tokenizer_json, gpt2_tokenizer_json, words};

/// Where a run lives and how it goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The model folder to write; a run left there is resumed.
    pub out: PathBuf,
    /// Total optimiser steps (default: the left run's, else the model's default).
    pub steps: Option<usize>,
    /// Seed of the data stream and the initial weights (default as for `steps`).
    pub seed: Option<u64>,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Start from random weights even where a run is left.
    pub fresh: bool,
}

/// What a run reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// The run starts at `step` of `steps` (0 unless resumed).
    Started { step: usize, steps: usize, resumed: bool },
    /// One optimiser step done.
    Step { step: usize, loss: f32 },
    /// A checkpoint was written after `step`, with the mean loss since the one before.
    Saved { step: usize, mean_loss: f32 },
}

/// Trains the world CLIP (contrastive) in `options.out` on an autodiff `device`.
pub async fn train_clip(
    options: &RunOptions,
    config: ClipTrainConfig,
    device: &Device,
    on: impl FnMut(Progress),
) -> Result<TrainState, TrainError> {
    let settings = serde_json::json!({ "batch_size": config.batch_size, "lr": config.lr, "filmed": config.filmed });
    let (state, resumed) = start(options, "clip", config.steps, config.seed, settings, device)?;
    let config = ClipTrainConfig { steps: state.steps, seed: state.seed, ..config };
    let model_config = world_clip_config();
    let tokenizer_json = clip_tokenizer_json(&words())?;
    let preprocessor = preprocessor_json(IMAGE_SIZE);
    let tokenizer =
        ClipTokenizer::from_json(tokenizer_json.as_bytes(), model_config.text_config.max_position_embeddings)?;
    let preprocess = ImagePreprocess::from_json(preprocessor.as_bytes(), model_config.vision_config.image_size as u32)?;
    let model = match resumed {
        true => Clip::load(&model_config, &checkpoint::load_trainable_weights(&options.out, &state)?, device)?,
        false => model_config.init(device),
    };
    let config_json = model_config.to_json();
    let files: [(&str, &[u8]); 3] = [
        ("config.json", config_json.as_bytes()),
        ("tokenizer.json", tokenizer_json.as_bytes()),
        ("preprocessor_config.json", preprocessor.as_bytes()),
    ];
    let training = ClipTraining::new(model, state.step, config);
    let mut run = ClipRun { training, tokenizer, preprocess, device };
    checkpointed(options, state, resumed, &mut run, &files, on).await
}

/// Trains the world GPT-2 (next-token prediction) in `options.out` on an autodiff `device`.
pub async fn train_lm(
    options: &RunOptions,
    config: LmTrainConfig,
    device: &Device,
    on: impl FnMut(Progress),
) -> Result<TrainState, TrainError> {
    let settings = serde_json::json!({ "batch_size": config.batch_size, "lr": config.lr });
    let (state, resumed) = start(options, "lm", config.steps, config.seed, settings, device)?;
    let config = LmTrainConfig { steps: state.steps, seed: state.seed, ..config };
    let model_config = world_gpt2_config();
    let eos = model_config.eos_token_id.ok_or_else(|| TrainError::Config("the world GPT-2 has no eos".into()))?;
    let tokenizer_json = gpt2_tokenizer_json(&words())?;
    let tokenizer = Gpt2Tokenizer::from_json(tokenizer_json.as_bytes())?;
    let model = match resumed {
        true => Gpt2::load(&model_config, &checkpoint::load_trainable_weights(&options.out, &state)?, device)?,
        false => model_config.init(device),
    };
    let config_json = model_config.to_json();
    let files: [(&str, &[u8]); 2] =
        [("config.json", config_json.as_bytes()), ("tokenizer.json", tokenizer_json.as_bytes())];
    let training = LmTraining::new(model, state.step, config);
    let mut run = LmRun { training, tokenizer, eos, device };
    checkpointed(options, state, resumed, &mut run, &files, on).await
}

/// Where the run starts: the state left in `out` (unless `fresh`; it must be a run of `kind`, with
/// the same `settings`) or a new one, with `options`' steps and seed over the left run's over the
/// defaults. Seeds the device, so initial weights follow the seed too. `true` when resuming.
fn start(
    options: &RunOptions,
    kind: &str,
    steps: usize,
    seed: u64,
    settings: serde_json::Value,
    device: &Device,
) -> Result<(TrainState, bool), TrainError> {
    let out = &options.out;
    match std::fs::metadata(out) {
        Ok(meta) if !meta.is_dir() => {
            return Err(TrainError::Config(format!("--out {} is a file; name a folder", out.display())));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(TrainError::Io { path: out.display().to_string(), source: e });
        }
        _ => {}
    }
    let left = if options.fresh { None } else { checkpoint::load_state(out)? };
    // A model of its own (a download, a converted or copied one) is not replaced unasked.
    if left.is_none() && !options.fresh && std::fs::symlink_metadata(out.join(checkpoint::WEIGHTS_FILE)).is_ok() {
        return Err(TrainError::Config(format!(
            "{} holds a {} but no {}: a model, not a run `glimpse train` left; pick another folder, or pass \
             --fresh to train over it",
            out.display(),
            checkpoint::WEIGHTS_FILE,
            checkpoint::STATE_FILE
        )));
    }
    if let Some(state) = left.as_ref().filter(|state| state.kind != kind) {
        return Err(TrainError::Config(format!(
            "{} holds a `{}` run, not `{kind}`; pick another folder or start afresh (--fresh)",
            options.out.display(),
            state.kind
        )));
    }
    let resumed = left.is_some();
    let mut state = left.unwrap_or_else(|| TrainState::new(kind, steps, seed));
    if let Some(steps) = options.steps.filter(|&steps| steps < state.step) {
        return Err(TrainError::Config(format!(
            "{} is at step {} already: --steps {steps} is fewer; ask for more to go on, or pass --fresh",
            out.display(),
            state.step
        )));
    }
    if let Some(recorded) = state.settings.as_ref().and_then(serde_json::Value::as_object) {
        let changed: Vec<String> = recorded
            .iter()
            .filter(|(key, value)| settings.get(key.as_str()).is_some_and(|now| now != *value))
            .map(|(key, value)| format!("{key}: {value} -> {}", settings[key.as_str()]))
            .collect();
        if !changed.is_empty() {
            return Err(TrainError::Config(format!(
                "{} holds a run started with other settings ({}); give it those to go on, or pass --fresh",
                out.display(),
                changed.join("; ")
            )));
        }
    }
    state.settings = Some(settings);
    state.steps = options.steps.unwrap_or(state.steps);
    state.seed = options.seed.unwrap_or(state.seed);
    state.validate()?;
    // Only once the run goes ahead: a refused --out keeps every file.
    checkpoint::remove_stale_temporaries(out)?;
    device.seed(state.seed);
    Ok((state, resumed))
}

/// A model under training as a run drives it.
trait Training {
    /// Trains until step `until`; `on_step(step, loss)` after each.
    async fn run_until(&mut self, until: usize, on_step: &mut dyn FnMut(usize, f32)) -> Result<(), TrainError>;

    /// The weights as `model.safetensors`.
    async fn weights(&self) -> Result<Vec<u8>, TrainError>;
}

struct ClipRun<'a> {
    training: ClipTraining,
    tokenizer: ClipTokenizer,
    preprocess: ImagePreprocess,
    device: &'a Device,
}

impl Training for ClipRun<'_> {
    async fn run_until(&mut self, until: usize, on_step: &mut dyn FnMut(usize, f32)) -> Result<(), TrainError> {
        self.training.run(until, &self.tokenizer, &self.preprocess, self.device, on_step).await
    }

    async fn weights(&self) -> Result<Vec<u8>, TrainError> {
        Ok(self.training.trainer.model.to_safetensors().await?)
    }
}

struct LmRun<'a> {
    training: LmTraining,
    tokenizer: Gpt2Tokenizer,
    eos: u32,
    device: &'a Device,
}

impl Training for LmRun<'_> {
    async fn run_until(&mut self, until: usize, on_step: &mut dyn FnMut(usize, f32)) -> Result<(), TrainError> {
        self.training.run(until, &self.tokenizer, self.eos, self.device, on_step).await
    }

    async fn weights(&self) -> Result<Vec<u8>, TrainError> {
        Ok(self.training.trainer.model.to_safetensors().await?)
    }
}

/// Trains from `state` to its last step, writing `files`, the weights and the state to
/// `options.out` every `checkpoint_every` steps and at the end.
async fn checkpointed(
    options: &RunOptions,
    mut state: TrainState,
    resumed: bool,
    training: &mut impl Training,
    files: &[(&str, &[u8])],
    mut on: impl FnMut(Progress),
) -> Result<TrainState, TrainError> {
    on(Progress::Started { step: state.step, steps: state.steps, resumed });
    while state.step < state.steps {
        let until = state.step.saturating_add(options.checkpoint_every.max(1)).min(state.steps);
        let (mut sum, mut n) = (0.0, 0);
        training
            .run_until(until, &mut |step, loss| {
                sum += loss;
                n += 1;
                on(Progress::Step { step, loss });
            })
            .await?;
        let mean_loss = sum / n.max(1) as f32;
        state.step = until;
        state.losses.push((until, mean_loss));
        checkpoint::save(&options.out, files, &training.weights().await?, &mut state)?;
        on(Progress::Saved { step: until, mean_loss });
    }
    Ok(state)
}
