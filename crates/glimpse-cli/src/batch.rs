//! `glimpse batch`: dense captions for every video of a manifest, one shard per worker, each
//! result written once (`glimpse-batch` keeps the books); and the results merged into the
//! ActivityNet Captions layout.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Subcommand;
use futures_lite::future::block_on;
use glimpse_align::zerota::{ZeroTaConfig, captions_json, dense_caption, embed_source};
use glimpse_batch::{
    Captioned, Entry, Event, Manifest, Options, Shard, check_out_dir, claim_out_dir, first_few, merge, read_manifest,
};
use glimpse_media::video::{MAX_FRAMES, VideoSource};
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
    /// anything twice; a video that fails leaves `<id>.error.json` and the batch goes on. A video
    /// is done when its `<id>.json` reads as a result (one that does not is moved aside to
    /// `<id>.json.unreadable` and the video captioned again) and
    /// every file this run asks for is there (missing subtitles are made from the result).
    #[command(after_help = "MANIFEST: a text file with one video per line (`#` comments; `id<TAB>path` to name the \
                            id, otherwise the file name without extension; relative paths are relative to the \
                            manifest; at most 256 MiB, 8 KiB a line), or a folder of videos (files such as \
                            .json, .txt, .srt and still images are passed over; ids are the file names without \
                            extension, characters an id may not hold replaced by `_`).\n\n\
                            Shards: --shard I/N (where a scheduler gives a shard, the same one); otherwise \
                            Kubernetes Indexed Jobs (JOB_COMPLETION_INDEX, with \
                            --shards set to the Job's completions) or Slurm arrays (SLURM_ARRAY_TASK_ID, \
                            SLURM_ARRAY_TASK_COUNT, SLURM_ARRAY_TASK_MIN); otherwise the whole manifest. A video's \
                            shard is a hash of its id.\n\n\
                            --out-dir is a folder of its own, not the manifest's or its videos'; it records \
                            the captioning settings (.glimpse-batch.json, and in each result) and refuses a run \
                            with others, so its results merge into one submission. A video too long for 10000 \
                            frames at --fps is sampled at the highest rate that fits, as its progress line \
                            says.\n\n\
                            Exit status 0 once every video of the shard is done or recorded as failed, unless \
                            the run captioned two or more and all failed with no result in the shard (a rerun \
                            passes them over and exits 0).")]
    CaptionVideo {
        #[arg(value_name = "MANIFEST")]
        manifest: PathBuf,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// This worker's shard, e.g. 0/4 [default: from the environment, else all of it].
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Number of shards, for JOB_COMPLETION_INDEX (Kubernetes does not put it in the environment).
        #[arg(long, value_name = "N", conflicts_with = "shard")]
        shards: Option<usize>,
        /// Caption again the videos whose last attempt failed.
        #[arg(long)]
        retry_failed: bool,
        /// Also write `<id>.srt` and `<id>.vtt` (for videos done before too, from their results).
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
        /// The batch's manifest: only its videos are merged (results of other videos in DIR are
        /// left out and named), and those with no result yet are listed.
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
            let entries = read_videos(&manifest)?;
            check_out_dir(&manifest, &entries, &out_dir)?;
            let shard = Shard::choose(shard.as_deref(), shards, |name| std::env::var(name).ok())?;
            let config = dense.config()?;
            let (clip, lm) = (model_identity(models.clip.as_deref()), model_identity(models.lm.as_deref()));
            let settings = json!({ "fps": dense.fps, "zerota": config, "clip": clip, "lm": lm });
            // Before the models load: a folder of other settings, or one that cannot be written,
            // is said at once.
            claim_out_dir(&out_dir, &settings)?;
            let options = Options { out_dir, shard, retry_failed, subtitles, settings };
            let selected = select_device(device)?;
            let (clip, lm) = models.load(&selected)?;
            // Settings the models cannot run would fail every video, each after reading it.
            glimpse_align::guided::check_fits(&lm, &config.guidance, &crate::flag)?;
            let caption =
                |entry: &Entry| caption_entry(&clip, &lm, entry, dense.fps, &config).map_err(|e| format!("{e:#}"));
            let mut report = |event: &Event| match format {
                Format::Json => {
                    let _ = print_out(&format!("{}\n", serde_json::to_string(event).expect("events serialise")));
                    // A result about to be replaced is said where a person looks, whatever the format.
                    if matches!(event, Event::InvalidResult { .. }) {
                        say!("{}", describe(event, &options.out_dir));
                    }
                }
                Format::Text => say!("{}", describe(event, &options.out_dir)),
            };
            let summary = glimpse_batch::run(&entries, &options, caption, &mut report)?;
            // One failed video is a bad video; several that all failed in a shard with no result is
            // a run gone wrong (a path, a mount), which a scheduler should show. Said by the run
            // that met it: a rerun passes those failures over, so a shard of bad videos completes.
            if summary.failed > 1 && summary.with_result == 0 {
                bail!(
                    "every one of the {} videos this run captioned failed, and the shard has no result (see \
                     {}/*.error.json): a cause common to them (the manifest's paths, a mount, the models) is likelier \
                     than so many bad videos; once mended, run again with --retry-failed",
                    summary.failed,
                    options.out_dir.display()
                );
            }
            Ok(())
        }
        BatchCommand::Merge { dir, out, manifest } => {
            let inputs: Vec<&Path> = std::iter::once(dir.as_path()).chain(manifest.as_deref()).collect();
            crate::check_out(Some(&out), &inputs)?;
            // Where its links lead, as the submission is written through them (a link to a file
            // not yet there too); a bare file name is in the working folder.
            let folder_of = |path: &Path| {
                let target = glimpse_media::files::output_target(path).ok()?;
                std::fs::canonicalize(target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
                    .ok()
            };
            if folder_of(&out).is_some_and(|folder| std::fs::canonicalize(&dir).is_ok_and(|dir| dir == folder)) {
                bail!(
                    "--out {} is in the results folder {}, where the next merge would read it as a video's result; \
                     write it elsewhere",
                    out.display(),
                    dir.display()
                );
            }
            let entries = manifest.as_deref().map(read_videos).transpose()?;
            let merged = merge(&dir, entries.as_deref())?;
            crate::emit(&merged.json, Some(&out))?;
            say!("merged {} videos", merged.done);
            for (what, ids) in [
                ("failed", &merged.failed),
                ("missing", &merged.missing),
                ("left out, not in the manifest", &merged.outside),
                ("left out, no events (every scene blank)", &merged.without_events),
            ] {
                if !ids.is_empty() {
                    say!("{what}: {} ({})", ids.len(), first_few(ids, 10, ", "));
                }
            }
            Ok(())
        }
    }
}

/// The videos of a manifest or folder; a folder's files that are no video are said on stderr.
fn read_videos(manifest: &Path) -> Result<Vec<Entry>> {
    let Manifest { entries, skipped } = read_manifest(manifest)?;
    if !skipped.is_empty() {
        let names: Vec<String> =
            skipped.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
        say!(
            "batch: passed over {} files of {} that are no video ({})",
            names.len(),
            manifest.display(),
            first_few(&names, 10, ", ")
        );
    }
    Ok(entries)
}

/// One video: frames streamed and embedded, then ZeroTA; the JSON exactly as `caption-video`
/// writes it (`glimpse-batch` makes the subtitles from it).
fn caption_entry(
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    entry: &Entry,
    fps: f64,
    config: &ZeroTaConfig,
) -> Result<Captioned> {
    // One rate for the archive, but its longest videos at the rate that fits them: their own
    // run at another --fps could not join this folder's results.
    let source = VideoSource::open_fitting(&entry.path, fps)?;
    let (frames, reading) = embed_source(clip, &source, || {})?;
    let events = block_on(dense_caption(clip, lm, &frames, reading.seconds, config, |_| {}))?;
    let json = captions_json(&entry.path.display().to_string(), reading.seconds, &events);
    let lowered = (source.fps() < fps)
        .then(|| format!("sampled at {} fps, the most that keeps it within {MAX_FRAMES} frames", source.fps()));
    let warnings: Vec<String> = reading.damage.into_iter().chain(lowered).collect();
    Ok(Captioned { json, events: events.len(), warning: (!warnings.is_empty()).then(|| warnings.join("; ")) })
}

/// A progress event as one line of text.
fn describe(event: &Event, dir: &std::path::Path) -> String {
    match event {
        Event::InvalidResult { id, error, kept_as } => {
            format!("batch: {error}; moved to {kept_as}, captioning {id} again")
        }
        Event::Start { shard, videos, done, failed, to_complete, to_caption } => {
            let complete = match to_complete {
                0 => String::new(),
                n => format!(", {n} to complete from their results"),
            };
            format!(
                "batch: shard {shard} has {videos} videos: {done} done and {failed} failed before{complete}, \
                 {to_caption} to caption"
            )
        }
        Event::Completed { id, files } => format!("{id}: wrote {} from its result", files.join(", ")),
        Event::Video { id, seconds, events, warning, error, finished, remaining, eta_seconds } => {
            let progress = format!("[{finished}/{}]", finished + remaining);
            let eta = if *remaining > 0 { format!("; about {} left", duration(*eta_seconds)) } else { String::new() };
            let warning = warning.as_ref().map(|w| format!(" (warning: {w})")).unwrap_or_default();
            match error {
                None => format!("{progress} {id}: {} events in {seconds:.1} s{warning}{eta}", events.unwrap_or(0)),
                Some(error) => format!("{progress} {id}: failed in {seconds:.1} s: {error}{eta}"),
            }
        }
        Event::Finish { captioned, completed, failed, passed_over, seconds } => {
            let records = if *failed > 0 { format!(" (see {}/*.error.json)", dir.display()) } else { String::new() };
            let completed = if *completed > 0 { format!(", {completed} completed") } else { String::new() };
            format!(
                "batch: {captioned} captioned{completed}, {failed} failed{records}, {passed_over} passed over, in {}",
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

/// A model as a batch's settings record it: a folder by its canonical path (the same folder
/// however it is spelt), a hub id as given, `None` for the embedded default.
fn model_identity(arg: Option<&Path>) -> Option<String> {
    arg.map(|path| std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string())
}
