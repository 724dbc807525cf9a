//! `glimpse train`: the embedded default's tokenizers and models, trained from scratch on the
//! procedural world, checkpointed in the Hugging Face layout and resumable.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use futures_lite::future::block_on;
use glimpse_align::projector::{MAX_PREFIX_LEN, MAX_WIDTH};
use glimpse_models::device::SelectedDevice;
use glimpse_train::TrainError;
use glimpse_train::checkpoint::{MAX_STEPS, TrainState};
use glimpse_train::clip::ClipTrainConfig;
use glimpse_train::lm::LmTrainConfig;
use glimpse_train::projector::{ProjectorProgress, TrainConfig, WorldProjectorConfig, train_world_projector};
use glimpse_train::run::{Progress, RunOptions, train_clip, train_lm};

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Contrastive training of the world CLIP on rendered scenes and their captions.
    Clip {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = ClipTrainConfig::default().batch_size)]
        batch_size: usize,
        #[arg(long, default_value_t = ClipTrainConfig::default().lr)]
        lr: f64,
        /// Share of training images filmed as the hard world films them (panned, crossfading).
        #[arg(long, default_value_t = ClipTrainConfig::default().filmed)]
        filmed: f64,
    },
    /// Language-model training of the world GPT-2 on the world's captions.
    Lm {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value_t = LmTrainConfig::default().batch_size)]
        batch_size: usize,
        #[arg(long, default_value_t = LmTrainConfig::default().lr)]
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
        #[arg(long, default_value_t = WorldProjectorConfig::default().examples)]
        examples: usize,
        #[arg(long, default_value_t = TrainConfig::default().epochs)]
        epochs: usize,
        /// GPT-2 input embeddings made from one image.
        #[arg(long, default_value_t = WorldProjectorConfig::default().prefix_len)]
        prefix_len: usize,
        /// Hidden width of a two-layer MLP (ClipCap); 0 for a linear map (LiMBeR).
        #[arg(long, default_value_t = 0)]
        hidden: usize,
        #[arg(long, default_value_t = TrainConfig::default().lr)]
        lr: f64,
        /// Seed of the examples and of the initial weights.
        #[arg(long, default_value_t = WorldProjectorConfig::default().seed)]
        seed: u64,
    },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// Model directory to write (Hugging Face layout); a run left there is resumed, with the batch
    /// size and learning rate it was started with. A folder holding a model but no run is not
    /// trained over without --fresh.
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
    fn options(&self) -> RunOptions {
        RunOptions {
            out: self.out.clone(),
            steps: self.steps,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every,
            fresh: self.fresh,
        }
    }
}

/// Runs `train` with its progress as a bar, with the loss; says where the run was saved, also
/// when a finished run had nothing left to do.
fn with_progress(
    out: &Path,
    what: &str,
    train: impl FnOnce(&mut dyn FnMut(Progress)) -> Result<TrainState, TrainError>,
) -> Result<()> {
    let bar = crate::progress_bar(0, what);
    let state = train(&mut |progress| match progress {
        Progress::Started { step, steps, resumed } => {
            if resumed {
                // The weights and the step carry over; AdamW's moment estimates start from zero.
                bar.suspend(|| {
                    say!("resuming {} from step {step} (the optimiser's moments start afresh)", out.display())
                });
            }
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
        }
        Progress::Step { step, loss } => {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4}"));
        }
        Progress::Saved { .. } => {}
    })?;
    let loss = state.losses.last().map_or(0.0, |l| l.1);
    bar.finish_with_message(format!("loss {loss:.4}, saved to {}", out.display()));
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
        TrainCommand::Clip { run, batch_size, lr, filmed } => {
            // A batch holds distinct scenes, and the world has 540.
            check(batch_size, 512, lr, run.steps)?;
            if !(0.0..=1.0).contains(&filmed) {
                bail!("--filmed {filmed} must be a share between 0 and 1");
            }
            let config = ClipTrainConfig { batch_size, lr, filmed, ..ClipTrainConfig::default() };
            with_progress(&run.out, "clip", |on| block_on(train_clip(&run.options(), config, &device, on)))
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
            // Written over neither model it reads.
            crate::check_out(Some(&out), &models.paths().collect::<Vec<_>>())?;
            let (clip, lm) = models.load(selected)?;
            let config = WorldProjectorConfig {
                examples,
                prefix_len,
                hidden: (hidden > 0).then_some(hidden),
                train: TrainConfig { epochs, lr, ..TrainConfig::default() },
                seed,
            };
            let mut bar = crate::progress_bar(examples, "rendering and encoding");
            let (projector, losses) =
                block_on(train_world_projector(&clip, &lm, &config, &device, |progress| match progress {
                    ProjectorProgress::Examples => {
                        bar.finish_and_clear();
                        bar = crate::progress_bar(epochs, "projector epochs");
                    }
                    ProjectorProgress::Epoch { epoch, loss } => {
                        bar.set_position(epoch as u64 + 1);
                        bar.set_message(format!("loss {loss:.4}"));
                    }
                }))?;
            bar.finish_and_clear();
            let bytes = block_on(projector.to_safetensors())?;
            glimpse_media::write_output(&out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
            let losses: Vec<String> = losses.iter().map(|l| format!("{l:.3}")).collect();
            say!("caption loss per epoch: {}\nwrote {}", losses.join(" "), out.display());
            Ok(())
        }
        TrainCommand::Lm { run, batch_size, lr } => {
            check(batch_size, 4096, lr, run.steps)?;
            let config = LmTrainConfig { batch_size, lr, ..LmTrainConfig::default() };
            with_progress(&run.out, "lm", |on| block_on(train_lm(&run.options(), config, &device, on)))
        }
    }
}
