//! The batch loop: each video of the shard captioned once, its result written atomically, a
//! failure recorded and passed over, the folder itself the only record of what is done.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glimpse_media::files::{remove_if_present, temporary_of};
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
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Videos of this run finished so far, and still to caption; a failure carries `error`.
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

/// What the output folder says about a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `<id>.json` is there.
    Done,
    /// `<id>.error.json` is there and no result.
    Failed,
    Pending,
}

/// The files a video's results may have, by extension; `json` is written last.
const RESULT_EXTENSIONS: [&str; 4] = ["error.json", "json", "srt", "vtt"];

/// The output folder, listed once: the names of its files.
pub(crate) struct Folder {
    pub(crate) dir: PathBuf,
    pub(crate) names: HashSet<String>,
}

impl Folder {
    pub(crate) fn read(dir: &Path) -> Result<Self, BatchError> {
        let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
        let mut names = HashSet::new();
        for item in std::fs::read_dir(dir).map_err(io)? {
            names.insert(item.map_err(io)?.file_name().to_string_lossy().into_owned());
        }
        Ok(Self { dir: dir.to_path_buf(), names })
    }

    pub(crate) fn status(&self, id: &str) -> Status {
        if self.names.contains(&format!("{id}.json")) {
            Status::Done
        } else if self.names.contains(&format!("{id}.error.json")) {
            Status::Failed
        } else {
            Status::Pending
        }
    }

    fn path(&self, id: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{id}.{extension}"))
    }

    /// Removes the temporaries (see `glimpse_media::files::temporary_of`) that writers now gone
    /// left for videos `shard` owns: a worker killed while writing leaves one. Other shards'
    /// temporaries may be written right now by a worker on another machine, whose process ids
    /// `/proc` does not show, so they stay; so does everything where there is no `/proc`.
    fn remove_stale_temporaries(&self, shard: Shard) -> Result<(), BatchError> {
        if !Path::new("/proc/self").exists() {
            return Ok(());
        }
        for name in &self.names {
            let Some((file, pid)) = temporary_of(name) else { continue };
            let id = RESULT_EXTENSIONS.iter().find_map(|extension| file.strip_suffix(&format!(".{extension}")));
            if id.is_some_and(|id| shard.owns(id)) && !Path::new(&format!("/proc/{pid}")).exists() {
                let path = self.dir.join(name);
                std::fs::remove_file(&path).map_err(|source| BatchError::Io { path, source })?;
            }
        }
        Ok(())
    }
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
    let folder = Folder::read(dir)?;
    folder.remove_stale_temporaries(options.shard)?;
    let started = Instant::now();
    let mine: Vec<(&Entry, Status)> =
        entries.iter().filter(|e| options.shard.owns(&e.id)).map(|e| (e, folder.status(&e.id))).collect();
    let count = |status: Status| mine.iter().filter(|(_, s)| *s == status).count();
    let (done, failed_before) = (count(Status::Done), count(Status::Failed));
    let todo: Vec<&Entry> = mine
        .iter()
        .filter(|(_, s)| *s == Status::Pending || (options.retry_failed && *s == Status::Failed))
        .map(|(e, _)| *e)
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
        let (events, error) = match caption(entry) {
            Ok(captioned) => {
                write_result(&folder, &entry.id, &captioned)?;
                summary.captioned += 1;
                (Some(captioned.events), None)
            }
            Err(e) => {
                let message = e.to_string();
                let record = json!({
                    "id": entry.id,
                    "video": entry.path.display().to_string(),
                    "error": message,
                    "settings": options.settings,
                });
                write(&folder.path(&entry.id, "error.json"), format!("{record:#}\n").as_bytes())?;
                summary.failed += 1;
                (None, Some(message))
            }
        };
        let finished = i + 1;
        let remaining = todo.len() - finished;
        let per_video = working.elapsed().as_secs_f64() / finished as f64;
        on(&Event::Video {
            id: entry.id.clone(),
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
fn write_result(folder: &Folder, id: &str, captioned: &Captioned) -> Result<(), BatchError> {
    for (extension, text) in &captioned.other {
        write(&folder.path(id, extension), text.as_bytes())?;
    }
    write(&folder.path(id, "json"), captioned.json.as_bytes())?;
    let stale = folder.path(id, "error.json");
    remove_if_present(&stale).map_err(|source| BatchError::Io { path: stale, source })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BatchError> {
    write_atomically(path, bytes).map_err(|source| BatchError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir;

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
