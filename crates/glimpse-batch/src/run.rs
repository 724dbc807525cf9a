//! The batch loop: each video of the shard captioned once, its result written atomically, a
//! failure recorded and passed over, the folder itself the only record of what is done.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glimpse_media::write_atomically;
use serde::Serialize;
use serde_json::json;

use crate::{BatchError, Entry, Shard};

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub out_dir: PathBuf,
    pub shard: Shard,
    /// Caption again the videos whose last attempt failed (otherwise they are passed over).
    pub retry_failed: bool,
    /// The settings of the run, recorded in each error record so a failure can be reproduced.
    pub settings: serde_json::Value,
}

/// One video's result: `<id>.json`, and other files next to it (`("srt", text)` is written as
/// `<id>.srt`).
#[derive(Debug, Clone, PartialEq)]
pub struct Captioned {
    pub json: String,
    pub other: Vec<(&'static str, String)>,
    /// Events found, for the progress line.
    pub events: usize,
}

/// What a batch reports as it goes; serialises as one JSON object per event (`--format json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The shard's share of the manifest and what earlier runs left.
    Start {
        shard: String,
        videos: usize,
        done: usize,
        failed: usize,
        to_caption: usize,
    },
    /// A video was captioned or failed.
    Video {
        id: String,
        ok: bool,
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Videos of this run finished so far, and still to caption.
        finished: usize,
        remaining: usize,
        /// At the mean time per video so far.
        eta_seconds: f64,
    },
    Finish {
        captioned: usize,
        failed: usize,
        passed_over: usize,
        seconds: f64,
    },
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub captioned: usize,
    pub failed: usize,
    /// Done (or failed, without `retry_failed`) by an earlier run.
    pub passed_over: usize,
}

pub(crate) fn result_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

pub(crate) fn error_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.error.json"))
}

/// Captions every video of `entries` that `options.shard` owns and no earlier run finished, one
/// after another, with `caption`; `on` sees each [`Event`]. A video whose captioning fails gets an
/// error record and the batch goes on; failing to write into the output folder stops it.
pub fn run<E: Display>(
    entries: &[Entry],
    options: &Options,
    mut caption: impl FnMut(&Entry) -> Result<Captioned, E>,
    mut on: impl FnMut(&Event),
) -> Result<Summary, BatchError> {
    let dir = &options.out_dir;
    std::fs::create_dir_all(dir).map_err(|source| BatchError::Io { path: dir.clone(), source })?;
    remove_stale_temps(dir)?;
    let started = Instant::now();
    let mine: Vec<&Entry> = entries.iter().filter(|e| options.shard.owns(&e.id)).collect();
    let done = mine.iter().filter(|e| result_path(dir, &e.id).is_file()).count();
    let failed_before = mine.iter().filter(|e| !result_path(dir, &e.id).is_file() && error_path(dir, &e.id).is_file());
    let failed_before = failed_before.count();
    let todo: Vec<&Entry> = mine
        .iter()
        .copied()
        .filter(|e| !result_path(dir, &e.id).is_file())
        .filter(|e| options.retry_failed || !error_path(dir, &e.id).is_file())
        .collect();
    on(&Event::Start {
        shard: options.shard.to_string(),
        videos: mine.len(),
        done,
        failed: failed_before,
        to_caption: todo.len(),
    });
    let mut summary = Summary { captioned: 0, failed: 0, passed_over: mine.len() - todo.len() };
    let working = Instant::now();
    for (i, entry) in todo.iter().enumerate() {
        let video_started = Instant::now();
        let (ok, events, error) = match caption(entry) {
            Ok(captioned) => {
                write_result(dir, &entry.id, &captioned)?;
                summary.captioned += 1;
                (true, Some(captioned.events), None)
            }
            Err(e) => {
                let message = e.to_string();
                let record = json!({
                    "id": entry.id,
                    "video": entry.path.display().to_string(),
                    "error": message,
                    "settings": options.settings,
                });
                write(&error_path(dir, &entry.id), format!("{record:#}\n").as_bytes())?;
                summary.failed += 1;
                (false, None, Some(message))
            }
        };
        let finished = i + 1;
        let remaining = todo.len() - finished;
        let per_video = working.elapsed().as_secs_f64() / finished as f64;
        on(&Event::Video {
            id: entry.id.clone(),
            ok,
            seconds: video_started.elapsed().as_secs_f64(),
            events,
            error,
            finished,
            remaining,
            eta_seconds: per_video * remaining as f64,
        });
    }
    on(&Event::Finish {
        captioned: summary.captioned,
        failed: summary.failed,
        passed_over: summary.passed_over,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

/// The other files first and `<id>.json` last: the JSON's presence means the video is done. A
/// failure recorded by an earlier run is removed once the video succeeds.
fn write_result(dir: &Path, id: &str, captioned: &Captioned) -> Result<(), BatchError> {
    for (extension, text) in &captioned.other {
        write(&dir.join(format!("{id}.{extension}")), text.as_bytes())?;
    }
    write(&result_path(dir, id), captioned.json.as_bytes())?;
    let stale = error_path(dir, id);
    match std::fs::remove_file(&stale) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BatchError::Io { path: stale, source: e }),
        _ => Ok(()),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BatchError> {
    write_atomically(path, bytes).map_err(|source| BatchError::Io { path: path.to_path_buf(), source })
}

/// Removes the hidden temporary files (`.<name>.<pid>.<n>.tmp`) of writers that are gone: a
/// worker killed while writing leaves one. Only where `/proc` says which processes live.
fn remove_stale_temps(dir: &Path) -> Result<(), BatchError> {
    if !Path::new("/proc/self").exists() {
        return Ok(());
    }
    let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
    for item in std::fs::read_dir(dir).map_err(io)? {
        let name = item.map_err(io)?.file_name().to_string_lossy().into_owned();
        let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { continue };
        let pid = inner.rsplit('.').nth(1).and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let path = dir.join(&name);
            std::fs::remove_file(&path).map_err(|source| BatchError::Io { path, source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("glimpse-batch-run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entries(n: usize) -> Vec<Entry> {
        (0..n).map(|i| Entry { id: format!("v{i}"), path: PathBuf::from(format!("/videos/v{i}.mp4")) }).collect()
    }

    fn options(dir: &Path, shard: Shard, retry_failed: bool) -> Options {
        Options { out_dir: dir.to_path_buf(), shard, retry_failed, settings: json!({"events": 3}) }
    }

    /// Captions every id but `bad`, counting the calls.
    fn captioner<'a>(bad: &'a str, calls: &'a mut Vec<String>) -> impl FnMut(&Entry) -> Result<Captioned, String> + 'a {
        move |entry| {
            calls.push(entry.id.clone());
            if entry.id == bad {
                return Err(format!("{}: cannot read the video", entry.path.display()));
            }
            let json = format!("{{\"video\":\"{}\"}}\n", entry.path.display());
            Ok(Captioned { json, other: vec![("srt", format!("1\n{}\n", entry.id))], events: 2 })
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn each_video_is_captioned_once_and_failures_are_recorded_and_passed_over() {
        let dir = temp_dir("once");
        let all = entries(5);
        let mut calls = Vec::new();
        let mut events = Vec::new();
        let summary =
            run(&all, &options(&dir, Shard::ALL, false), captioner("v3", &mut calls), |e| events.push(e.clone()));
        assert_eq!(summary.unwrap(), Summary { captioned: 4, failed: 1, passed_over: 0 });
        assert_eq!(calls, ["v0", "v1", "v2", "v3", "v4"]);
        let expected: Vec<String> = ["v0.json", "v0.srt", "v1.json", "v1.srt", "v2.json", "v2.srt", "v3.error.json"]
            .into_iter()
            .chain(["v4.json", "v4.srt"])
            .map(String::from)
            .collect();
        assert_eq!(files(&dir), expected, "no temporary file is left");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("v3.error.json")).unwrap()).unwrap();
        assert_eq!(record["error"], "/videos/v3.mp4: cannot read the video");
        assert_eq!(record["settings"]["events"], 3);
        assert!(matches!(events.first(), Some(Event::Start { to_caption: 5, .. })));
        assert!(matches!(events.last(), Some(Event::Finish { captioned: 4, failed: 1, .. })));

        // Rerun: nothing to do. With --retry-failed: only the failure, which now succeeds.
        let mut calls = Vec::new();
        let summary = run(&all, &options(&dir, Shard::ALL, false), captioner("v3", &mut calls), |_| {}).unwrap();
        assert_eq!((summary.passed_over, calls.len()), (5, 0));
        let summary = run(&all, &options(&dir, Shard::ALL, true), captioner("none", &mut calls), |_| {}).unwrap();
        assert_eq!((summary.captioned, calls.as_slice()), (1, ["v3".to_string()].as_slice()));
        assert!(!dir.join("v3.error.json").exists() && dir.join("v3.json").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shards_split_the_manifest_and_any_count_leaves_each_video_once() {
        let dir = temp_dir("shards");
        let all = entries(30);
        let mut calls = Vec::new();
        for index in 0..3 {
            run(&all, &options(&dir, Shard::new(index, 3).unwrap(), false), captioner("", &mut calls), |_| {}).unwrap();
        }
        // A later run with another count finds everything done.
        for index in 0..4 {
            run(&all, &options(&dir, Shard::new(index, 4).unwrap(), false), captioner("", &mut calls), |_| {}).unwrap();
        }
        let mut sorted = calls.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!((calls.len(), sorted.len()), (30, 30));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporary_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = temp_dir("temps");
        std::fs::create_dir_all(&dir).unwrap();
        // 4194304 is the highest pid_max Linux allows, so no process id reaches it.
        let dead = ".v1.json.4194304.0.tmp";
        let live = format!(".v2.json.{}.0.tmp", std::process::id());
        for name in [dead, live.as_str()] {
            std::fs::write(dir.join(name), b"{").unwrap();
        }
        run(&entries(0), &options(&dir, Shard::ALL, false), captioner("", &mut Vec::new()), |_| {}).unwrap();
        assert_eq!(files(&dir), [live]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
