//! `glimpse train`: the embedded default's tokenizers and models, trained from scratch on the
//! procedural world, checkpointed in the Hugging Face layout and resumable.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Subcommand;
use futures_lite::future::block_on;
use glimpse_align::projector::{MAX_PREFIX_LEN, MAX_WIDTH, ProjectorConfig, TrainConfig};
use glimpse_media::image::ImagePreprocess;
use glimpse_media::tokenizer::{ClipTokenizer, Gpt2Tokenizer};
use glimpse_models::device::SelectedDevice;
use glimpse_models::{Clip, Gpt2};
use glimpse_train::checkpoint::{self, MAX_STEPS, TrainState};
use glimpse_train::clip::{ClipTrainConfig, ClipTraining, IMAGE_SIZE, preprocessor_json, world_clip_config};
use glimpse_train::lm::{LmTrainConfig, LmTraining, world_gpt2_config};
use glimpse_train::tokenizer::{clip_tokenizer_json, gpt2_tokenizer_json, words};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Contrastive training of the world CLIP on rendered scenes and their captions.
    Clip {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = 96)]
        batch_size: usize,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
    },
    /// Language-model training of the world GPT-2 on the world's captions.
    Lm {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
    },
    /// Train a projector from CLIP image embeddings into GPT-2's input space (LiMBeR / ClipCap)
    /// on rendered scenes and their captions, with both models frozen.
    Projector {
        #[command(flatten)]
        models: crate::ModelArgs,
        /// Projector file to write (safetensors).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Training pairs rendered from the world.
        #[arg(long, default_value_t = 4096)]
        examples: usize,
        #[arg(long, default_value_t = 6)]
        epochs: usize,
        /// GPT-2 input embeddings made from one image.
        #[arg(long, default_value_t = 4)]
        prefix_len: usize,
        /// Hidden width of a two-layer MLP (ClipCap); 0 for a linear map (LiMBeR).
        #[arg(long, default_value_t = 0)]
        hidden: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 2)]
        seed: u64,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Model directory to write (Hugging Face layout); a run left there is resumed.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Total optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Seed of the training data stream.
    #[arg(long)]
    seed: Option<u64>,
    /// Save a checkpoint every N steps.
    #[arg(long, default_value_t = 100, value_name = "N")]
    checkpoint_every: usize,
    /// Ignore a run left in --out and start from random weights.
    #[arg(long)]
    fresh: bool,
}

impl RunArgs {
    /// Where the run starts: the state left in --out (unless --fresh; checked against the kind of
    /// model) or a new one, with --steps and --seed over the left run's over the defaults. Seeds
    /// the device, so initial weights follow the seed too. `true` when resuming.
    fn start(&self, kind: &str, steps: usize, seed: u64, device: &Device) -> Result<(TrainState, bool)> {
        let left = if self.fresh { None } else { checkpoint::load_state(&self.out)? };
        if let Some(state) = &left {
            if state.kind != kind {
                bail!(
                    "{} holds a `{}` run, not `{kind}`; pick another --out or pass --fresh",
                    self.out.display(),
                    state.kind
                );
            }
            eprintln!("resuming {} from step {}", self.out.display(), state.step);
        }
        let resumed = left.is_some();
        let mut state = left.unwrap_or_else(|| TrainState::new(kind, steps, seed));
        state.steps = self.steps.unwrap_or(state.steps);
        state.seed = self.seed.unwrap_or(state.seed);
        device.seed(state.seed);
        Ok((state, resumed))
    }
}

/// Runs `chunk(training, until, on_step)` between checkpoints; after each, writes `files` and the
/// model's weights (`weights(training)`) as `model.safetensors`, then the state.
fn checkpointed<T>(
    args: &RunArgs,
    mut state: TrainState,
    what: &str,
    training: &mut T,
    files: &[(&str, &[u8])],
    mut chunk: impl FnMut(&mut T, usize, &mut dyn FnMut(usize, f32)) -> Result<()>,
    weights: impl Fn(&T) -> Result<Vec<u8>>,
) -> Result<()> {
    let bar = crate::progress_bar(state.steps, what);
    bar.set_position(state.step as u64);
    while state.step < state.steps {
        let until = state.step.saturating_add(args.checkpoint_every.max(1)).min(state.steps);
        let (mut sum, mut n) = (0.0, 0);
        chunk(training, until, &mut |step, loss| {
            sum += loss;
            n += 1;
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        })?;
        state.step = until;
        state.losses.push((until, sum / n.max(1) as f32));
        checkpoint::save(&args.out, files, &weights(training)?, &mut state)?;
    }
    bar.finish_with_message(format!(
        "loss {:.4}, saved to {}",
        state.losses.last().map_or(0.0, |l| l.1),
        args.out.display()
    ));
    Ok(())
}

/// Refuses sizes that would loop forever, divide by zero or exhaust memory.
fn check(batch_size: usize, max_batch: usize, lr: f64, steps: Option<usize>) -> Result<()> {
    if !(2..=max_batch).contains(&batch_size) {
        bail!("--batch-size {batch_size} must be between 2 and {max_batch}");
    }
    if !(lr > 0.0 && lr < 1.0) {
        bail!("--lr {lr} must be in (0, 1)");
    }
    if let Some(steps) = steps.filter(|&s| s == 0 || s > MAX_STEPS) {
        bail!("--steps {steps} must be between 1 and {MAX_STEPS}");
    }
    Ok(())
}

pub fn run(command: TrainCommand, selected: &SelectedDevice) -> Result<()> {
    let device = selected.device.clone().autodiff();
    match command {
        TrainCommand::Clip { run, batch_size, lr } => {
            // A batch holds distinct scenes, and the world has 540.
            check(batch_size, 512, lr, run.steps)?;
            let defaults = ClipTrainConfig::default();
            let (state, resumed) = run.start("clip", defaults.steps, defaults.seed, &device)?;
            let config = ClipTrainConfig { steps: state.steps, seed: state.seed, batch_size, lr, ..defaults };
            let model_config = world_clip_config();
            let tokenizer_json = clip_tokenizer_json(&words())?;
            let preprocessor = preprocessor_json(IMAGE_SIZE);
            let context = model_config.text_config.max_position_embeddings;
            let tokenizer = ClipTokenizer::from_json(tokenizer_json.as_bytes(), context)?;
            let preprocess =
                ImagePreprocess::from_json(preprocessor.as_bytes(), model_config.vision_config.image_size as u32)?;
            let model = match resumed {
                true => Clip::load(&model_config, &checkpoint::load_weights(&run.out, &state)?, &device)?,
                false => model_config.init(&device),
            };
            let config_json = model_config.to_json();
            let mut training = ClipTraining::new(model, state.step, config);
            checkpointed(
                &run,
                state,
                "clip",
                &mut training,
                &[
                    ("config.json", config_json.as_bytes()),
                    ("tokenizer.json", tokenizer_json.as_bytes()),
                    ("preprocessor_config.json", preprocessor.as_bytes()),
                ],
                |training, until, on_step| {
                    Ok(block_on(training.run(until, &tokenizer, &preprocess, &device, on_step))?)
                },
                |training| Ok(block_on(training.trainer.model.to_safetensors())?),
            )
        }
        TrainCommand::Projector { models, out, examples, epochs, prefix_len, hidden, lr, seed } => {
            if !((1..=1_000_000).contains(&examples) && (1..=10_000).contains(&epochs) && lr > 0.0 && lr < 1.0) {
                bail!("--examples {examples}, --epochs {epochs}, --lr {lr}: need 1..=1000000, 1..=10000 and (0, 1)");
            }
            if !(1..=MAX_PREFIX_LEN).contains(&prefix_len) || hidden > MAX_WIDTH {
                bail!(
                    "--prefix-len {prefix_len} must be in 1..={MAX_PREFIX_LEN} and --hidden {hidden} at most {MAX_WIDTH}"
                );
            }
            let (clip, lm) = models.load(selected)?;
            let bar = crate::progress_bar(examples, "rendering and encoding");
            let pairs = block_on(glimpse_train::projector::world_examples(&clip, &lm, examples, seed))?;
            bar.finish_and_clear();
            let config = ProjectorConfig {
                clip_dim: clip.config.projection_dim,
                lm_dim: lm.model.n_embd(),
                prefix_len,
                hidden: (hidden > 0).then_some(hidden),
            };
            config.validate()?;
            let projector = config.init(&device);
            let bar = crate::progress_bar(epochs, "projector epochs");
            let train = TrainConfig { epochs, lr, ..TrainConfig::default() };
            let (projector, losses) =
                block_on(glimpse_align::projector::train(projector, &lm.model, &pairs, &train, |e, loss| {
                    bar.set_position(e as u64 + 1);
                    bar.set_message(format!("loss {loss:.4}"));
                }))?;
            bar.finish_and_clear();
            let bytes = block_on(projector.to_safetensors())?;
            glimpse_media::write_atomically(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
            let losses: Vec<String> = losses.iter().map(|l| format!("{l:.3}")).collect();
            eprintln!("caption loss per epoch: {}\nwrote {}", losses.join(" "), out.display());
            Ok(())
        }
        TrainCommand::Lm { run, batch_size, lr } => {
            check(batch_size, 4096, lr, run.steps)?;
            let defaults = LmTrainConfig::default();
            let (state, resumed) = run.start("lm", defaults.steps, defaults.seed, &device)?;
            let config = LmTrainConfig { steps: state.steps, seed: state.seed, batch_size, lr, ..defaults };
            let model_config = world_gpt2_config();
            let eos = model_config.eos_token_id.expect("the world GPT-2 has an end-of-text token");
            let tokenizer_json = gpt2_tokenizer_json(&words())?;
            let tokenizer = Gpt2Tokenizer::from_json(tokenizer_json.as_bytes())?;
            let model = match resumed {
                true => Gpt2::load(&model_config, &checkpoint::load_weights(&run.out, &state)?, &device)?,
                false => model_config.init(&device),
            };
            let config_json = model_config.to_json();
            let mut training = LmTraining::new(model, state.step, config);
            checkpointed(
                &run,
                state,
                "lm",
                &mut training,
                &[("config.json", config_json.as_bytes()), ("tokenizer.json", tokenizer_json.as_bytes())],
                |training, until, on_step| Ok(block_on(training.run(until, &tokenizer, eos, &device, on_step))?),
                |training| Ok(block_on(training.trainer.model.to_safetensors())?),
            )
        }
    }
}
