//! Where a command's models come from (a folder, a hub repository, or the embedded default), and
//! `glimpse models`: the download cache.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Subcommand, ValueEnum};
use futures_lite::future::block_on;
use glimpse_hub::remote::{Hub, Progress, RepoId};
use glimpse_media::files::write_checkpoint;
use glimpse_media::untrusted::printable;
use glimpse_models::{ClipConfig, Gpt2Config, ModelFiles, WeightFormat, Weights, convert_weights};
use glimpse_train::random::{write_random_clip, write_random_gpt2};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{Format, print_out};

/// A model argument: an existing folder in the Hugging Face layout, else a hub repository id
/// (`owner/name[@revision]`, downloaded into the cache once); `embedded` when absent.
pub fn files(arg: Option<&Path>, embedded: fn() -> ModelFiles) -> Result<ModelFiles> {
    match arg {
        Some(arg) => folder_or_hub(arg),
        None => Ok(embedded()),
    }
}

/// An existing folder in the Hugging Face layout, else a hub repository id.
fn folder_or_hub(arg: &Path) -> Result<ModelFiles> {
    if arg.is_dir() {
        return Ok(ModelFiles::from_dir(arg)?);
    }
    let Some(id) = arg.to_str().and_then(RepoId::parse) else {
        bail!(
            "{} is not a directory, nor a hub repository id (owner/name or owner/name@revision); pass a folder in \
             the Hugging Face layout (config.json, model.safetensors, tokenizer.json) or a repository id",
            arg.display()
        );
    };
    Ok(Hub::from_env()?.model_files(&id, download_progress())?)
}

/// One progress bar per file transferred, on stderr (drawn only on a terminal).
fn download_progress() -> impl FnMut(Progress) {
    let mut bar: Option<ProgressBar> = None;
    move |event| match event {
        Progress::Waiting { file, lock } => {
            say!("{file}: another download of it is running; waiting for it (if none is, delete {})", lock.display());
        }
        Progress::Start { file, size, resumed_from } => {
            let b = ProgressBar::new(size).with_position(resumed_from).with_prefix(file.to_string());
            b.set_style(
                ProgressStyle::with_template("{prefix:>24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            if resumed_from > 0 {
                b.println(format!("{file}: resuming at {resumed_from} bytes"));
            }
            bar = Some(b);
        }
        Progress::Bytes { done, .. } => {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
        Progress::Done { .. } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        }
    }
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// What the hub cache holds (shared with transformers), with sizes.
    List {
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Download a repository's model files ahead of time (then HF_HUB_OFFLINE=1 works without a
    /// network).
    Fetch {
        /// `owner/name` or `owner/name@revision`.
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Delete a repository from the cache.
    Rm {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Write a checkpoint (CLIP or GPT-2, a folder in the Hugging Face layout) with its weights in
    /// another format: f16 (a standard F16 file, half the size) or q8 (8-bit weights with one
    /// scale per 32 inputs for every dense layer and the token embeddings, about a quarter of the
    /// size, and kept 8-bit in memory). The other files glimpse reads (config.json, tokenizer.json,
    /// preprocessor_config.json, processor_config.json) are copied; the weights are written last.
    Convert {
        /// The checkpoint to convert: a folder, or a hub repository id (downloaded into the cache).
        #[arg(value_name = "DIR|ID")]
        dir: PathBuf,
        #[arg(long, value_enum)]
        dtype: WeightDtype,
        /// Folder to write (created; must not hold a model.safetensors already).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Write a checkpoint with a real model's shapes and random weights, with a word-level
    /// tokenizer of its vocabulary size over made-up words: for measuring speed and memory at
    /// real size where real weights cannot be downloaded.
    Random {
        #[arg(value_enum)]
        shape: RandomShape,
        /// Folder to write (Hugging Face layout).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

pub fn run(command: ModelsCommand) -> Result<()> {
    match command {
        ModelsCommand::List { format } => {
            let hub = Hub::from_env()?;
            let repos = hub.list()?;
            if format == Format::Json {
                return print_out(&format!("{}\n", json!({ "cache": hub.cache, "models": repos })));
            }
            let mut lines = vec![format!("cache: {}", hub.cache.display())];
            if repos.is_empty() {
                lines.push("(empty)".into());
            }
            for repo in repos {
                let revisions: Vec<String> = repo
                    .revisions
                    .iter()
                    .map(|(name, commit)| describe_ref(&repo.path, name, commit.as_deref()))
                    .collect();
                lines.push(format!("{:>10}  {}  [{}]", human(repo.size), printable(&repo.repo), revisions.join(", ")));
            }
            print_out(&(lines.join("\n") + "\n"))
        }
        ModelsCommand::Fetch { id } => {
            let Some(repo) = RepoId::parse(&id) else {
                bail!("{id:?} is not a hub repository id (owner/name[@revision])")
            };
            let dir = Hub::from_env()?.fetch(&repo, &mut download_progress())?;
            print_out(&format!("{}\n", dir.display()))
        }
        ModelsCommand::Rm { id } => {
            let freed = Hub::from_env()?.remove(&id)?;
            say!("removed {id} ({})", human(freed));
            Ok(())
        }
        ModelsCommand::Convert { dir, dtype, out } => convert(&dir, dtype, &out),
        ModelsCommand::Random { shape, out } => {
            let device = glimpse_models::device::cpu().device;
            match shape {
                RandomShape::Gpt2Small => block_on(write_random_gpt2(&Gpt2Config::gpt2_small(), &out, &device))?,
                RandomShape::ClipVitB32 => block_on(write_random_clip(&ClipConfig::vit_b_32(), &out, &device))?,
            }
            say!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// The storage formats `glimpse models convert` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum WeightDtype {
    F32,
    F16,
    Q8,
}

impl From<WeightDtype> for WeightFormat {
    fn from(dtype: WeightDtype) -> Self {
        match dtype {
            WeightDtype::F32 => WeightFormat::F32,
            WeightDtype::F16 => WeightFormat::F16,
            WeightDtype::Q8 => WeightFormat::Q8,
        }
    }
}

/// Converts `dir` into `out`: the checkpoint's other files first, the weights last (a folder
/// with weights is complete).
fn convert(dir: &Path, dtype: WeightDtype, out: &Path) -> Result<()> {
    glimpse_media::files::ensure_no_checkpoint(out)?;
    let files = folder_or_hub(dir)?;
    let device = glimpse_models::device::cpu().device;
    let weights = block_on(convert_weights(&files, dtype.into(), &device))?;
    let written = [("config.json", Some(&files.config)), ("tokenizer.json", Some(&files.tokenizer))]
        .into_iter()
        .chain([
            ("preprocessor_config.json", files.preprocessor.as_ref()),
            ("processor_config.json", files.processor.as_ref()),
            ("model.safetensors", Some(&weights)),
        ])
        .filter_map(|(name, bytes)| Some((name, bytes?.as_slice())))
        .collect::<Vec<_>>();
    write_checkpoint(out, &written).with_context(|| format!("writing {}", out.display()))?;
    let before = match &files.weights {
        Weights::Bytes(bytes) => bytes.len() as u64,
        Weights::File(path) => std::fs::metadata(path).map_or(0, |m| m.len()),
        Weights::Reader(source, _) => source.size(),
    };
    say!("wrote {} (weights {} -> {})", out.display(), human(before), human(weights.len() as u64));
    Ok(())
}

/// The real models whose shapes `glimpse models random` writes.
#[derive(Clone, Copy, ValueEnum)]
pub enum RandomShape {
    /// GPT-2 small (124M parameters, 498 MB of f32).
    Gpt2Small,
    /// CLIP ViT-B/32 (151M parameters, 605 MB of f32).
    #[value(name = "clip-vit-b-32")]
    ClipVitB32,
}

/// `main 0123abcd`, or what to do about a refs file that names no commit.
fn describe_ref(repo: &Path, name: &str, commit: Option<&str>) -> String {
    match commit {
        // Commits are hex digits, but a shorter one must not panic either.
        Some(commit) => format!("{} {}", printable(name), commit.get(..8).unwrap_or(commit)),
        None => format!(
            "{} invalid (not a commit hash: delete {})",
            printable(name),
            printable(&repo.join("refs").join(name).display().to_string())
        ),
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{:.1} KiB", b as f64 / 1024.0),
    }
}
