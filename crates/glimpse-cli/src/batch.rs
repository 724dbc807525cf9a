//! `glimpse batch`: dense captions for every video of a manifest, one shard per worker, each
//! result written once (`glimpse-batch` keeps the books); and the results merged into the
//! ActivityNet Captions layout.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use futures_lite::future::block_on;
use glimpse_align::zerota::{Event as CaptionEvent, ZeroTaConfig, captions_json, dense_caption, embed_source};
use glimpse_batch::{Captioned, Entry, Event, Options, Shard, check_out_dir, merge, read_manifest};
use glimpse_media::subtitles::{Cue, to_srt, to_vtt};
use glimpse_media::video::VideoSource;
use glimpse_models::device::DeviceChoice;
use glimpse_models::{ClipBundle, Gpt2Bundle};
use serde_json::json;

use crate::{DenseArgs, Format, ModelArgs, print_out, select_device};

#[derive(Subcommand)]
// Parsed once per process: boxing the large variant's arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum BatchCommand {
    /// Dense-caption every video of MANIFEST this worker's shard owns into --out-dir, models
    /// loaded once: `<id>.json` per video (as `caption-video --format json` prints it), written
    /// atomically. Videos already done are passed over, so the same command run again (after a
    /// crash, a preemption, with another shard count) finishes the work without captioning
    /// anything twice; a video that fails leaves `<id>.error.json` and the batch goes on.
    #[command(after_help = "MANIFEST: a text file with one video per line (`#` comments; `id<TAB>path` to name the \
                            id, otherwise the file name without extension; relative paths are relative to the \
                            manifest), or a folder of videos.\n\n\
                            Shards: --shard I/N; otherwise Kubernetes Indexed Jobs (JOB_COMPLETION_INDEX, with \
                            --shards set to the Job's completions) or Slurm arrays (SLURM_ARRAY_TASK_ID, \
                            SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN); otherwise the whole manifest. A video's \
                            shard is a hash of its id.\n\n\
                            Exit status 0 once every video of the shard is done or recorded as failed.")]
    CaptionVideo {
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// This worker's shard, e.g. 0/4 [default: from the environment, else all of it].
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Number of shards, for JOB_COMPLETION_INDEX (Kubernetes does not put it in the environment).
        #[arg(long, value_name = "N")]
        shards: Option<usize>,
        /// Caption again the videos whose last attempt failed.
        #[arg(long)]
        retry_failed: bool,
        /// Also write `<id>.srt` and `<id>.vtt`.
        #[arg(long)]
        subtitles: bool,
        /// Progress as text lines on stderr, or as JSON events on stdout (for log collectors).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        #[command(flatten)]
        models: ModelArgs,
        #[command(flatten)]
        dense: DenseArgs,
    },
    /// Merge a batch folder into one results file in the ActivityNet Captions / densevid_eval
    /// submission layout, and say which videos failed or are missing.
    #[command(after_help = "JSON: {\"version\": \"VERSION 1.0\", \"results\": {id: [{\"sentence\": .., \
                            \"timestamp\": [start, end]}]}, \"external_data\": {\"used\": true, \"details\": ..}}")]
    Merge {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The batch's manifest, to list the videos that have no result yet.
        #[arg(long, value_name = "MANIFEST")]
        manifest: Option<PathBuf>,
    },
}

pub fn run(command: BatchCommand, device: DeviceChoice) -> Result<()> {
    match command {
        BatchCommand::CaptionVideo {
            manifest,
            out_dir,
            shard,
            shards,
            retry_failed,
            subtitles,
            format,
            models,
            dense,
        } => {
            check_out_dir(&manifest, &out_dir)?;
            let entries = read_manifest(&manifest)?;
            let shard = match shard {
                Some(text) => Shard::parse(&text)?,
                None => Shard::from_env(shards, |name| std::env::var(name).ok())?.unwrap_or(Shard::ALL),
            };
            let config = dense.config()?;
            let settings = json!({ "fps": dense.fps, "zerota": config, "clip": models.clip, "lm": models.lm });
            let options = Options { out_dir, shard, retry_failed, settings };
            let selected = select_device(device)?;
            let (clip, lm) = models.load(&selected)?;
            let caption = |entry: &Entry| {
                caption_entry(&clip, &lm, entry, dense.fps, &config, subtitles).map_err(|e| format!("{e:#}"))
            };
            let mut report = |event: &Event| match format {
                Format::Json => {
                    let _ = print_out(&format!("{}\n", serde_json::to_string(event).expect("events serialise")));
                }
                Format::Text => eprintln!("{}", describe(event, &options.out_dir)),
            };
            glimpse_batch::run(&entries, &options, caption, &mut report)?;
            Ok(())
        }
        BatchCommand::Merge { dir, out, manifest } => {
            crate::check_out(Some(&out))?;
            let entries = manifest.as_deref().map(read_manifest).transpose()?;
            let merged = merge(&dir, entries.as_deref())?;
            crate::emit(&merged.json, Some(&out))?;
            eprintln!("merged {} videos", merged.done);
            for (what, ids) in [("failed", &merged.failed), ("missing", &merged.missing)] {
                if !ids.is_empty() {
                    let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
                    let more = if ids.len() > 10 { format!(" and {} more", ids.len() - 10) } else { String::new() };
                    eprintln!("{what}: {} ({}{more})", ids.len(), shown.join(", "));
                }
            }
            Ok(())
        }
    }
}

/// One video: frames streamed and embedded, then ZeroTA; the JSON exactly as `caption-video`
/// writes it.
fn caption_entry(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    entry: &Entry,
    fps: f64,
    config: &ZeroTaConfig,
    subtitles: bool,
) -> Result<Captioned> {
    let source = VideoSource::open(&entry.path, fps)?;
    let (frames, duration) = embed_source(clip, &source, || {})?;
    let events = block_on(dense_caption(clip, lm, &frames, duration, config, |_| {}))?;
    let json = captions_json(&entry.path.display().to_string(), duration, &events);
    let other = match subtitles {
        true => {
            let cues: Vec<Cue> = events.iter().map(CaptionEvent::cue).collect();
            vec![("srt", to_srt(&cues)), ("vtt", to_vtt(&cues))]
        }
        false => Vec::new(),
    };
    Ok(Captioned { json, other, events: events.len() })
}

/// A progress event as one line of text.
fn describe(event: &Event, dir: &std::path::Path) -> String {
    match event {
        Event::Start { shard, videos, done, failed, to_caption } => format!(
            "batch: shard {shard} has {videos} videos: {done} done and {failed} failed before, {to_caption} to caption"
        ),
        Event::Video { id, seconds, events, error, finished, remaining, eta_seconds } => {
            let progress = format!("[{finished}/{}]", finished + remaining);
            let eta = if *remaining > 0 { format!("; about {} left", duration(*eta_seconds)) } else { String::new() };
            match error {
                None => format!("{progress} {id}: {} events in {seconds:.1} s{eta}", events.unwrap_or(0)),
                Some(error) => format!("{progress} {id}: failed in {seconds:.1} s: {error}{eta}"),
            }
        }
        Event::Finish { captioned, failed, passed_over, seconds } => {
            let records = if *failed > 0 { format!(" (see {}/*.error.json)", dir.display()) } else { String::new() };
            format!(
                "batch: {captioned} captioned, {failed} failed{records}, {passed_over} passed over, in {}",
                duration(*seconds)
            )
        }
    }
}

/// `1h 02m`, `3m 20s`, `12s`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}
