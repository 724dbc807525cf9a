//! The batch loop: each video of the shard captioned once, its result written atomically, a
//! failure recorded and passed over, the folder itself the only record of what is done.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;

use glimpse_media::files::{pid_namespace, remove_if_present, stale_temporary_of, write_new, writer_is_gone};
use glimpse_media::untrusted::{quoted, read_regular_file};
use glimpse_media::write_atomically;
use serde::Serialize;
use serde_json::json;

use crate::result::VideoResult;
use crate::{BatchError, Entry, Shard};

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub out_dir: PathBuf,
    pub shard: Shard,
    /// Caption again the videos whose last attempt failed (otherwise they are passed over).
    pub retry_failed: bool,
    /// Also write `<id>.srt` and `<id>.vtt`, made from the result's events. A video whose result
    /// lacks them is not done: they are written from the result, without captioning it again.
    pub subtitles: bool,
    /// The settings of the run, recorded in each error record so a failure can be reproduced.
    pub settings: serde_json::Value,
}

/// One video's result: `<id>.json` as `caption-video --format json` writes it (the subtitles
/// [`Options::subtitles`] asks for are made from it).
#[derive(Debug, Clone, PartialEq)]
pub struct Captioned {
    pub json: String,
    /// Events found, for the progress line.
    pub events: usize,
    /// What the progress line warns of: damage the reading met and went past
    /// (`glimpse_media::video::Reading`), a video sampled at a lower rate to fit.
    pub warning: Option<String>,
}

/// What a batch reports as it goes; serialises as one JSON object per event (`--format json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A result an earlier run left that does not read as one (cut short by a copy, edited by
    /// hand): it is moved aside, to `kept_as` in the same folder, and the video is captioned again.
    /// Comes before `Start`, whose counts it changes.
    InvalidResult {
        id: String,
        error: String,
        kept_as: String,
    },
    /// The shard's share of the manifest and what earlier runs left: `to_complete` videos have
    /// their result but not every file this run asks for (`--subtitles` added on a rerun, a
    /// subtitle file deleted), which are made from the result.
    Start {
        shard: String,
        videos: usize,
        done: usize,
        failed: usize,
        to_complete: usize,
        to_caption: usize,
    },
    /// A video's missing files were written from its result.
    Completed {
        id: String,
        files: Vec<String>,
    },
    /// A video was captioned or failed.
    Video {
        id: String,
        seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<usize>,
        /// A video captioned with a warning (see [`Captioned::warning`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
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
        completed: usize,
        failed: usize,
        passed_over: usize,
        seconds: f64,
    },
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The shard's videos.
    pub videos: usize,
    /// The shard's videos with a result once the run is over (done before, completed, captioned,
    /// or captioned meanwhile by another worker).
    pub with_result: usize,
    pub captioned: usize,
    /// Done before but for files this run asks for, written from their results.
    pub completed: usize,
    pub failed: usize,
    /// Done (or failed, without `retry_failed`) by an earlier run.
    pub passed_over: usize,
}

/// What the output folder's names say about a video (whether its result reads as one is
/// [`run`]'s to check).
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

/// The output folder, listed once: the names of its files, and of its folders.
pub(crate) struct Folder {
    pub(crate) dir: PathBuf,
    pub(crate) names: HashSet<String>,
    folders: HashSet<String>,
}

impl Folder {
    pub(crate) fn read(dir: &Path) -> Result<Self, BatchError> {
        let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
        let (mut names, mut folders) = (HashSet::new(), HashSet::new());
        for item in std::fs::read_dir(dir).map_err(io)? {
            let item = item.map_err(io)?;
            let name = item.file_name().to_string_lossy().into_owned();
            // A folder is no result, whatever its name.
            match item.file_type().map_err(io)?.is_dir() {
                true => folders.insert(name),
                false => names.insert(name),
            };
        }
        Ok(Self { dir: dir.to_path_buf(), names, folders })
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

    fn has(&self, id: &str, extension: &str) -> bool {
        self.names.contains(&format!("{id}.{extension}"))
    }

    fn path(&self, id: &str, extension: &str) -> PathBuf {
        self.dir.join(format!("{id}.{extension}"))
    }

    /// Removes the temporaries (`glimpse_media::files::stale_temporary_of`) that writers now gone
    /// left for videos `shard` owns: a worker killed while writing leaves one. Other shards'
    /// temporaries may be written right now by a worker on another machine, whose process ids
    /// `/proc` does not show, so they stay; so does everything where there is no `/proc`.
    fn remove_stale_temporaries(&self, shard: Shard) -> Result<(), BatchError> {
        for name in &self.names {
            let Some(file) = stale_temporary_of(name) else { continue };
            let id = RESULT_EXTENSIONS.iter().find_map(|extension| file.strip_suffix(&format!(".{extension}")));
            if id.is_some_and(|id| shard.owns(id)) {
                let path = self.dir.join(name);
                std::fs::remove_file(&path).map_err(|source| BatchError::Io { path, source })?;
            }
        }
        Ok(())
    }
}

/// What a run does with a video of its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Done, or failed before and not retried.
    PassOver,
    /// Its result is there, some of the files this run asks for are not.
    Complete,
    Caption,
}

/// Captions every video of `entries` that `options.shard` owns and no earlier run finished, one
/// after another, with `caption`; `on` sees each [`Event`]. A result left by an earlier run is
/// read back: one that does not read as a result is captioned again, one without every file this
/// run asks for gets them from it. A video whose captioning fails gets an error record and the
/// batch goes on; failing to write into the output folder stops it.
pub fn run<E: Display>(
    entries: &[Entry],
    options: &Options,
    mut caption: impl FnMut(&Entry) -> Result<Captioned, E>,
    mut on: impl FnMut(&Event),
) -> Result<Summary, BatchError> {
    let dir = &options.out_dir;
    // A caller may claim the folder before loading its models, to fail early; again here, so
    // that no caller can skip it (the second claim finds its own record).
    claim_out_dir(dir, &options.settings)?;
    let folder = Folder::read(dir)?;
    folder.remove_stale_temporaries(options.shard)?;
    let started = Instant::now();
    let others = options.others();
    // A folder where a result goes would be taken for none and stop the run at its first write.
    // The folder's subfolders (seldom any) are matched against the shard's ids, not the reverse.
    let owned: HashSet<&str> = match folder.folders.is_empty() {
        true => HashSet::new(),
        false => entries.iter().map(|e| e.id.as_str()).filter(|id| options.shard.owns(id)).collect(),
    };
    let written = |name: &str| {
        ["json", "error.json"]
            .iter()
            .chain(others)
            .any(|ext| name.strip_suffix(ext).and_then(|id| id.strip_suffix('.')).is_some_and(|id| owned.contains(id)))
    };
    let mut in_the_way: Vec<String> = folder.folders.iter().filter(|name| written(name)).cloned().collect();
    if !in_the_way.is_empty() {
        in_the_way.sort();
        return Err(BatchError::OutDir(format!(
            "{}: {} folder(s) where this run writes videos' results ({}); move them out of the way",
            dir.display(),
            in_the_way.len(),
            first_few(&in_the_way, 5, ", ")
        )));
    }
    let (mut done, mut failed_before) = (0, 0);
    let (mut mine, mut of_other_videos, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    let mut made_otherwise = Vec::new();
    for entry in entries.iter().filter(|e| options.shard.owns(&e.id)) {
        let plan = match folder.status(&entry.id) {
            Status::Done => match VideoResult::read(&folder.path(&entry.id, "json")) {
                Ok(result) if !same_video(result.video(), &entry.path) => {
                    of_other_videos.push(format!("{} is of {}", entry.id, quoted(result.video())));
                    Plan::PassOver
                }
                // A folder copied without its settings record, or the record removed.
                Ok(result) if let Some(changed) = result.made_otherwise(&options.settings) => {
                    made_otherwise.push(format!("{}: {changed}", entry.id));
                    Plan::PassOver
                }
                Ok(_) if others.iter().all(|extension| folder.has(&entry.id, extension)) => {
                    done += 1;
                    Plan::PassOver
                }
                Ok(_) => Plan::Complete,
                // Never kept as done: the merge would refuse it, and the video has no result.
                Err(e @ BatchError::Result(_)) => {
                    unreadable.push((entry, e.to_string()));
                    Plan::Caption
                }
                // A file that cannot be read (its permissions, the disk) stops the run, as a folder
                // that cannot be written does: captioning again would replace a result that may be
                // whole.
                Err(e) => return Err(e),
            },
            Status::Failed => {
                failed_before += 1;
                if options.retry_failed { Plan::Caption } else { Plan::PassOver }
            }
            Status::Pending => Plan::Caption,
        };
        mine.push((entry, plan));
    }
    if !of_other_videos.is_empty() {
        return Err(BatchError::OutDir(format!(
            "{}: the results of {} of the manifest's ids are of other videos ({}); an id names one video: use \
             another --out-dir, or remove those results to caption the manifest's videos",
            dir.display(),
            of_other_videos.len(),
            first_few(&of_other_videos, 5, "; ")
        )));
    }
    if !made_otherwise.is_empty() {
        return Err(made_with_other_settings(dir, &made_otherwise));
    }
    // Moved aside rather than replaced: it may be a file of the user's that is no result.
    for (entry, error) in unreadable {
        let kept_as = keep_aside(dir, &entry.id)?;
        on(&Event::InvalidResult { id: entry.id.clone(), error, kept_as });
    }
    let planned = |plan: Plan| mine.iter().filter(move |(_, p)| *p == plan).map(|(e, _)| *e);
    let (complete, todo): (Vec<&Entry>, Vec<&Entry>) =
        (planned(Plan::Complete).collect(), planned(Plan::Caption).collect());
    on(&Event::Start {
        shard: options.shard.to_string(),
        videos: mine.len(),
        done,
        failed: failed_before,
        to_complete: complete.len(),
        to_caption: todo.len(),
    });
    let passed_over = mine.len() - complete.len() - todo.len();
    let mut summary =
        Summary { videos: mine.len(), with_result: done, captioned: 0, completed: 0, failed: 0, passed_over };
    for entry in complete {
        // Read again rather than held from the check above: a shard's results may be many.
        let result = VideoResult::read(&folder.path(&entry.id, "json"))?;
        let mut files = Vec::new();
        for (extension, text) in options.made_from(&result) {
            if !folder.has(&entry.id, extension) {
                let path = folder.path(&entry.id, extension);
                write(&path, text.as_bytes())?;
                files.push(format!("{}.{extension}", entry.id));
            }
        }
        summary.completed += 1;
        summary.with_result += 1;
        on(&Event::Completed { id: entry.id.clone(), files });
    }
    let working = Instant::now();
    for (i, entry) in todo.iter().enumerate() {
        // Another worker on the same shard (a replacement overlapping the one it replaces) may
        // have captioned it since the folder was read.
        if folder.path(&entry.id, "json").is_file() {
            summary.passed_over += 1;
            summary.with_result += 1;
            continue;
        }
        let video_started = Instant::now();
        let outcome = caption(entry).map_err(|e| e.to_string()).and_then(|captioned| {
            let result = VideoResult::parse(captioned.json.as_bytes())
                .map_err(|why| format!("the captioning gave no glimpse result ({why})"))?;
            Ok((captioned, result))
        });
        let (events, warning, error) = match outcome {
            Ok((captioned, result)) => {
                let json = with_settings(&captioned.json, &options.settings);
                write_result(&folder, &entry.id, &options.made_from(&result), &json)?;
                summary.captioned += 1;
                summary.with_result += 1;
                (Some(captioned.events), captioned.warning, None)
            }
            Err(message) => {
                let record = json!({
                    "id": entry.id,
                    "video": entry.path.display().to_string(),
                    "error": message,
                    "settings": options.settings,
                });
                write(&folder.path(&entry.id, "error.json"), format!("{record:#}\n").as_bytes())?;
                summary.failed += 1;
                (None, None, Some(message))
            }
        };
        let finished = i + 1;
        let remaining = todo.len() - finished;
        let per_video = working.elapsed().as_secs_f64() / finished as f64;
        on(&Event::Video {
            id: entry.id.clone(),
            seconds: video_started.elapsed().as_secs_f64(),
            events,
            warning,
            error,
            finished,
            remaining,
            eta_seconds: per_video * remaining as f64,
        });
    }
    on(&Event::Finish {
        captioned: summary.captioned,
        completed: summary.completed,
        failed: summary.failed,
        passed_over: summary.passed_over,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

impl Options {
    /// The extensions of the files besides `<id>.json` a video of this run is done with.
    fn others(&self) -> &'static [&'static str] {
        if self.subtitles { &["srt", "vtt"] } else { &[] }
    }

    /// Those files, made from the video's result.
    fn made_from(&self, result: &VideoResult) -> Vec<(&'static str, String)> {
        if self.subtitles { result.subtitles().to_vec() } else { Vec::new() }
    }
}

/// The record of the settings a batch folder's results were made with. Hidden: merges and
/// listings pass over it.
const SETTINGS_FILE: &str = ".glimpse-batch.json";

/// Makes `dir` the output folder of a batch run with `settings`: creates it and records them, or
/// refuses a folder whose results were made with other settings, since its results merge into one
/// submission. Writing the record first finds a folder that cannot be written before anything is
/// captioned. A folder from before the record was kept is taken as it is, and a record with no
/// result or error record beside it is replaced where the run that wrote it has stopped (before
/// its first video: models that did not load); where it may still run, the folder is refused.
/// Settings are compared where both have them, so that a setting a later glimpse adds does not
/// disown every archive.
pub fn claim_out_dir(dir: &Path, settings: &serde_json::Value) -> Result<(), BatchError> {
    if dir.exists() && !dir.is_dir() {
        return Err(BatchError::OutDir(format!("--out-dir {} is a file; name a folder", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|source| BatchError::Io { path: dir.to_path_buf(), source })?;
    let path = dir.join(SETTINGS_FILE);
    let recorded = match std::fs::symlink_metadata(&path) {
        Ok(_) => Some(read_regular_file(&path, MAX_SETTINGS_BYTES)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(BatchError::Io { path, source }),
    };
    // Who claims it: a record of other settings is replaced only where its run has stopped.
    let claimant = json!({ "pid": std::process::id(), "pid_namespace": pid_namespace() });
    let record = format!("{:#}\n", json!({ "settings": settings, "claimed_by": claimant }));
    let Some(recorded) = recorded else {
        // No record, results beside it (copied without the hidden file, or the record removed):
        // their own settings say what they were made with, and a record of others would stick.
        let made_otherwise = results_made_otherwise(dir, settings)?;
        if !made_otherwise.is_empty() {
            return Err(made_with_other_settings(dir, &made_otherwise));
        }
        // Two runs starting at once: the first to write its record claims the folder, and the
        // other then reads it.
        return match write_new(&path, record.as_bytes()) {
            Ok(true) => Ok(()),
            Ok(false) => claim_out_dir(dir, settings),
            Err(source) => Err(BatchError::Io { path, source }),
        };
    };
    // The same record (a run claiming the folder its command claimed before the models loaded).
    if recorded == record.as_bytes() {
        return Ok(());
    }
    let remove = format!(
        "remove {} if the results beside it were made with this run's options (or others that give the same)",
        path.display()
    );
    let parsed = serde_json::from_slice::<serde_json::Value>(&recorded).map_err(|e| e.to_string()).and_then(|value| {
        if value.get("settings").is_some() { Ok(value) } else { Err("it has no `settings`".to_string()) }
    });
    let empty = !holds_records(dir)?;
    let recorded = match parsed {
        Ok(recorded) => recorded,
        // No results it could describe.
        Err(_) if empty => return write(&path, record.as_bytes()),
        Err(why) => {
            return Err(BatchError::OutDir(format!(
                "{} is not the settings record glimpse writes ({why}); {remove}",
                path.display()
            )));
        }
    };
    let mut changed = Vec::new();
    differences(&recorded["settings"], settings, "", &mut changed);
    let claimed_by = &recorded["claimed_by"];
    if changed.is_empty() {
        // Joining a folder with nothing in it yet, this run is its claimant from now on: the one
        // that claimed it may stop first.
        if empty && *claimed_by != claimant {
            write(&path, record.as_bytes())?;
        }
        return Ok(());
    }
    let changed = first_few(&changed, 5, "; ");
    if !empty {
        return Err(BatchError::OutDir(format!(
            "{} holds results made with other settings ({changed}); one folder's results merge into one submission, \
             so they come from one setting: use another --out-dir or the options those results were made with, or \
             {remove}",
            dir.display(),
        )));
    }
    // Nothing beside the record: its run stopped before its first video (models that did not
    // load), or is still loading or captioning it. A record that names no claimant is from
    // before records did.
    let here = claimed_by["pid_namespace"].as_str() == Some(pid_namespace().as_str());
    let whom = match claimed_by["pid"].as_u64().and_then(|pid| u32::try_from(pid).ok()) {
        Some(pid) if here && writer_is_gone(pid) => None,
        None => None,
        Some(pid) if here => Some(format!("process {pid}, still running")),
        Some(pid) => Some(format!("process {pid} on another machine or in another container")),
    };
    let Some(whom) = whom else { return write(&path, record.as_bytes()) };
    Err(BatchError::OutDir(format!(
        "{} is claimed by another run with other settings ({changed}), {whom}, which has written no result yet; \
         one folder's results come from one setting: use another --out-dir, or remove {} once that run has stopped",
        dir.display(),
        path.display()
    )))
}

/// `id: changes` of every result in `dir` that records settings other than `settings`; results
/// that do not read are the run's to deal with.
fn results_made_otherwise(dir: &Path, settings: &serde_json::Value) -> Result<Vec<String>, BatchError> {
    let folder = Folder::read(dir)?;
    let mut made_otherwise: Vec<String> = folder
        .names
        .iter()
        .filter(|name| !name.starts_with('.') && !name.ends_with(".error.json"))
        .filter_map(|name| name.strip_suffix(".json"))
        .filter_map(|id| {
            Some(format!("{id}: {}", VideoResult::read(&folder.path(id, "json")).ok()?.made_otherwise(settings)?))
        })
        .collect();
    made_otherwise.sort();
    Ok(made_otherwise)
}

fn made_with_other_settings(dir: &Path, made_otherwise: &[String]) -> BatchError {
    BatchError::OutDir(format!(
        "{}: the results of {} videos were made with other settings than this run's ({}); one folder's results merge \
         into one submission: use another --out-dir, or remove those results to caption them again",
        dir.display(),
        made_otherwise.len(),
        first_few(made_otherwise, 3, "; ")
    ))
}

/// Whether `dir` holds a result or an error record (a visible `.json` file): listed up to the
/// first one, not whole.
fn holds_records(dir: &Path) -> Result<bool, BatchError> {
    let io = |source| BatchError::Io { path: dir.to_path_buf(), source };
    for item in std::fs::read_dir(dir).map_err(io)? {
        let item = item.map_err(io)?;
        let name = item.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && name.ends_with(".json") && !item.file_type().map_err(io)?.is_dir() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The largest settings record read.
const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// `name: before -> now` for each value that differs between two settings, by its path; a name
/// only one of them has is not compared.
pub(crate) fn differences(before: &serde_json::Value, now: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    match (before, now) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (key, value) in a {
                if let Some(other) = b.get(key) {
                    let name = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                    differences(value, other, &name, out);
                }
            }
        }
        _ if before != now => out.push(format!("{at}: {before} -> {now}")),
        _ => {}
    }
}

/// Adds to `into` the keys of `from` it lacks, at every depth.
pub(crate) fn absorb(into: &mut serde_json::Value, from: &serde_json::Value) {
    if let (serde_json::Value::Object(into), serde_json::Value::Object(from)) = (into, from) {
        for (key, value) in from {
            match into.get_mut(key) {
                Some(held) => absorb(held, value),
                None => drop(into.insert(key.clone(), value.clone())),
            }
        }
    }
}

/// A result as the batch writes it: the captioning's JSON with the batch's settings added, so
/// that results of other settings are told apart even in a folder without its record.
pub(crate) fn with_settings(json: &str, settings: &serde_json::Value) -> String {
    let mut result: serde_json::Value = serde_json::from_str(json).expect("parsed as a result before");
    result["settings"] = settings.clone();
    format!("{result}\n")
}

/// The first `shown` of `items` joined by `separator`, and how many more.
pub fn first_few(items: &[String], shown: usize, separator: &str) -> String {
    let more = if items.len() > shown { format!(" and {} more", items.len() - shown) } else { String::new() };
    format!("{}{more}", items[..items.len().min(shown)].join(separator))
}

/// Whether the video a result names (as it was written: `display()`, lossy for a name that is
/// not UTF-8) is `path`: the same path; where both are there, the same file; where one is gone
/// (an archive moved, or read through another mount), the same file name.
pub(crate) fn same_video(recorded: &str, path: &Path) -> bool {
    if recorded == path.display().to_string() {
        return true;
    }
    match (std::fs::canonicalize(recorded), std::fs::canonicalize(path)) {
        (Ok(a), Ok(b)) => a == b,
        _ => {
            Path::new(recorded).file_name().map(|n| n.to_string_lossy())
                == path.file_name().map(|n| n.to_string_lossy())
        }
    }
}

/// Moves `<id>.json`, which does not read as a result, to the first free `<id>.json.unreadable`,
/// `<id>.json.unreadable.2`, ... (never over a file an earlier run kept); its new name. Gone
/// already (another worker on the same shard moved it) is no error.
fn keep_aside(dir: &Path, id: &str) -> Result<String, BatchError> {
    let from = dir.join(format!("{id}.json"));
    let mut n = 1;
    loop {
        let name = if n == 1 { format!("{id}.json.unreadable") } else { format!("{id}.json.unreadable.{n}") };
        let to = dir.join(&name);
        n += 1;
        if to.exists() {
            continue;
        }
        return match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BatchError::Io { path: from, source: e }),
            _ => Ok(name),
        };
    }
}

/// The other files first and `<id>.json` last: the JSON's presence means the video is done. A
/// failure recorded by an earlier run is removed once the video succeeds.
fn write_result(folder: &Folder, id: &str, others: &[(&str, String)], json: &str) -> Result<(), BatchError> {
    for (extension, text) in others {
        write(&folder.path(id, extension), text.as_bytes())?;
    }
    write(&folder.path(id, "json"), json.as_bytes())?;
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
        Options { out_dir: dir.to_path_buf(), shard, retry_failed, subtitles: true, settings: json!({"events": 3}) }
    }

    /// Captions every id but `bad`, counting the calls.
    fn captioner<'a>(bad: &'a str, calls: &'a mut Vec<String>) -> impl FnMut(&Entry) -> Result<Captioned, String> + 'a {
        move |entry| {
            calls.push(entry.id.clone());
            if entry.id == bad {
                return Err(format!("{}: cannot read the video", entry.path.display()));
            }
            let events = json!([
                {"caption": format!("{} starts.", entry.id), "start": 0.0, "end": 1.25, "score": 0.5},
                {"caption": "it ends.", "start": 1.25, "end": 3.0, "score": 0.25},
            ]);
            let json = json!({"video": entry.path.display().to_string(), "duration": 3.0, "events": events});
            Ok(Captioned { json: format!("{json}\n"), events: 2, warning: None })
        }
    }

    /// The folder's files but the settings record.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != SETTINGS_FILE)
            .collect();
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
        let expected = Summary { videos: 5, with_result: 4, captioned: 4, completed: 0, failed: 1, passed_over: 0 };
        assert_eq!(summary.unwrap(), expected);
        assert_eq!(calls, ["v0", "v1", "v2", "v3", "v4"]);
        let expected: Vec<String> = ["v0", "v1", "v2", "v3", "v4"]
            .iter()
            .flat_map(|id| match *id {
                "v3" => vec![format!("{id}.error.json")],
                _ => vec![format!("{id}.json"), format!("{id}.srt"), format!("{id}.vtt")],
            })
            .collect();
        assert_eq!(files(&dir), expected, "no temporary file is left");
        let srt = std::fs::read_to_string(dir.join("v1.srt")).unwrap();
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,250\nv1 starts.\n\n2\n00:00:01,250 --> 00:00:03,000\nit ends.\n\n"
        );
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

    /// `--subtitles` added on a rerun, or a subtitle file deleted: the video is not done, and the
    /// files are made from its result, byte for byte what captioning would have written, without
    /// captioning it again.
    #[test]
    fn files_a_rerun_asks_for_are_made_from_the_results_already_there() {
        let (dir, reference) = (temp_dir("complete"), temp_dir("complete-reference"));
        let all = entries(3);
        run(&all, &options(&reference, Shard::ALL, false), captioner("", &mut Vec::new()), |_| {}).unwrap();
        let plain = Options { subtitles: false, ..options(&dir, Shard::ALL, false) };
        run(&all, &plain, captioner("", &mut Vec::new()), |_| {}).unwrap();
        assert_eq!(files(&dir), ["v0.json", "v1.json", "v2.json"]);

        let (mut calls, mut events) = (Vec::new(), Vec::new());
        let summary =
            run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |e| events.push(e.clone()))
                .unwrap();
        assert_eq!(
            summary,
            Summary { videos: 3, with_result: 3, captioned: 0, completed: 3, failed: 0, passed_over: 0 }
        );
        assert!(calls.is_empty(), "nothing captioned again: {calls:?}");
        assert!(matches!(&events[0], Event::Start { done: 0, to_complete: 3, to_caption: 0, .. }), "{events:?}");
        assert_eq!(events[1], Event::Completed { id: "v0".into(), files: vec!["v0.srt".into(), "v0.vtt".into()] });
        assert_eq!(files(&dir), files(&reference));
        for name in files(&dir) {
            assert_eq!(
                std::fs::read(dir.join(&name)).unwrap(),
                std::fs::read(reference.join(&name)).unwrap(),
                "{name}"
            );
        }

        // One file deleted: only it is written again; then everything is done.
        std::fs::remove_file(dir.join("v2.vtt")).unwrap();
        let mut events = Vec::new();
        run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |e| events.push(e.clone())).unwrap();
        assert_eq!(events[1], Event::Completed { id: "v2".into(), files: vec!["v2.vtt".into()] });
        assert_eq!(std::fs::read(dir.join("v2.vtt")).unwrap(), std::fs::read(reference.join("v2.vtt")).unwrap());
        let summary = run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |_| {}).unwrap();
        assert_eq!((summary.passed_over, summary.completed, calls.len()), (3, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&reference).unwrap();
    }

    /// A result cut short (a copy interrupted) or with impossible times is not done: the run
    /// says so, moves it aside and captions the video again; if that fails, the error record is
    /// the video's state, the file still kept aside.
    #[test]
    fn a_result_that_does_not_read_as_one_is_captioned_again_and_said() {
        let dir = temp_dir("invalid");
        let all = entries(4);
        run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut Vec::new()), |_| {}).unwrap();
        let good = std::fs::read(dir.join("v1.json")).unwrap();
        std::fs::write(dir.join("v1.json"), &good[..good.len() / 2]).unwrap();
        // What an earlier run kept aside stays.
        std::fs::write(dir.join("v1.json.unreadable"), b"kept before").unwrap();
        std::fs::write(
            dir.join("v2.json"),
            r#"{"video":"v2.gif","duration":3.0,"events":[{"caption":"x","start":2,"end":1,"score":0.5}]}"#,
        )
        .unwrap();
        std::fs::write(dir.join("v3.json"), "").unwrap();

        let (mut calls, mut events) = (Vec::new(), Vec::new());
        let summary =
            run(&all, &options(&dir, Shard::ALL, false), captioner("v3", &mut calls), |e| events.push(e.clone()))
                .unwrap();
        assert_eq!(calls, ["v1", "v2", "v3"]);
        assert_eq!(
            summary,
            Summary { videos: 4, with_result: 3, captioned: 2, completed: 0, failed: 1, passed_over: 1 }
        );
        let Event::InvalidResult { id, error, kept_as } = &events[0] else { panic!("{events:?}") };
        assert!(id == "v1" && error.contains("v1.json is not a glimpse result"), "{error}");
        assert_eq!(kept_as, "v1.json.unreadable.2");
        assert_eq!(std::fs::read(dir.join(kept_as)).unwrap(), &good[..good.len() / 2]);
        assert_eq!(std::fs::read(dir.join("v1.json.unreadable")).unwrap(), b"kept before");
        let Event::InvalidResult { error, .. } = &events[1] else { panic!("{events:?}") };
        assert!(error.contains("starts at 2 s, after it ends at 1 s"), "{error}");
        assert!(matches!(events[3], Event::Start { done: 1, to_caption: 3, .. }), "{events:?}");
        assert_eq!(std::fs::read(dir.join("v1.json")).unwrap(), good);
        assert!(!dir.join("v3.json").exists() && dir.join("v3.error.json").exists());
        assert!(dir.join("v3.json.unreadable").exists(), "{:?}", files(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A link to nothing where a result was is a result gone: kept aside and captioned again. A
    /// folder where this run writes a result is said before any video, not met at the first write.
    #[cfg(unix)]
    #[test]
    fn a_dangling_link_is_captioned_again_and_a_folder_in_the_way_refused() {
        let dir = temp_dir("in-the-way");
        let all = entries(3);
        std::os::unix::fs::symlink(dir.join("nowhere.json"), dir.join("v1.json")).unwrap();
        let (mut calls, mut events) = (Vec::new(), Vec::new());
        let summary =
            run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |e| events.push(e.clone()))
                .unwrap();
        assert_eq!((summary.captioned, calls.len()), (3, 3));
        let Event::InvalidResult { error, kept_as, .. } = &events[0] else { panic!("{events:?}") };
        assert!(error.contains("v1.json is a link to no file") && kept_as == "v1.json.unreadable", "{error}");
        assert!(std::fs::symlink_metadata(dir.join("v1.json")).unwrap().is_file());

        let more = entries(5);
        for name in ["v3.json", "v4.srt"] {
            std::fs::create_dir(dir.join(name)).unwrap();
        }
        let mut calls = Vec::new();
        let err = run(&more, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |_| {}).unwrap_err();
        assert!(
            err.to_string().contains("2 folder(s) where this run writes videos' results (v3.json, v4.srt)"),
            "{err}"
        );
        assert!(calls.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// One folder's results merge into one submission: a run with other settings, or whose ids
    /// name other videos than the results there, is refused before anything is captioned.
    #[test]
    fn a_folder_of_other_settings_or_other_videos_is_refused() {
        let dir = temp_dir("claimed");
        let all = entries(3);
        run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut Vec::new()), |_| {}).unwrap();
        let mut calls = Vec::new();
        let other = Options { settings: json!({"events": 5}), ..options(&dir, Shard::ALL, false) };
        let err = run(&all, &other, captioner("", &mut calls), |_| {}).unwrap_err().to_string();
        assert!(err.contains("other settings (events: 3 -> 5)"), "{err}");
        // Without the record (a folder copied without its hidden file), each result's settings
        // say it, and no record of the refused settings is left to stick.
        std::fs::remove_file(dir.join(SETTINGS_FILE)).unwrap();
        let err = run(&all, &other, captioner("", &mut calls), |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("the results of 3 videos were made with other settings than this run's (v0: events: 3 -> 5"),
            "{err}"
        );
        assert!(calls.is_empty() && !dir.join(SETTINGS_FILE).exists());
        let merged = crate::merge(&dir, None).unwrap();
        assert_eq!(merged.done, 3);
        std::fs::write(
            dir.join("v2.json"),
            with_settings(&std::fs::read_to_string(dir.join("v2.json")).unwrap(), &json!({"events": 5})),
        )
        .unwrap();
        let err = crate::merge(&dir, None).unwrap_err().to_string();
        assert!(err.contains("named before it: v2: events: 5 -> 3)"), "{err}");
        std::fs::remove_file(dir.join("v2.json")).unwrap();
        run(&all, &options(&dir, Shard::ALL, false), captioner("", &mut Vec::new()), |_| {}).unwrap();

        // Other files under the same ids: refused. The same names elsewhere, where the recorded
        // files are gone (an archive moved, another mount): the same videos.
        let elsewhere = |name: &dyn Fn(&str) -> String| -> Vec<Entry> {
            all.iter().map(|e| Entry { path: PathBuf::from(name(&e.id)), ..e.clone() }).collect()
        };
        let other = elsewhere(&|id| format!("/videos/{id}-b.mp4"));
        let err =
            run(&other, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |_| {}).unwrap_err().to_string();
        assert!(err.contains("3 of the manifest's ids are of other videos (v0 is of /videos/v0.mp4"), "{err}");
        let moved = elsewhere(&|id| format!("/elsewhere/{id}.mp4"));
        let summary = run(&moved, &options(&dir, Shard::ALL, false), captioner("", &mut calls), |_| {}).unwrap();
        assert_eq!(summary.passed_over, 3);
        assert!(calls.is_empty(), "{calls:?}");
        // Two files that are both there are told apart, whatever their names.
        let (a, b) = (temp_dir("same-name-a"), temp_dir("same-name-b"));
        for folder in [&a, &b] {
            std::fs::write(folder.join("v.mp4"), b"").unwrap();
        }
        assert!(same_video(&a.join("v.mp4").display().to_string(), &a.join(".").join("v.mp4")));
        assert!(!same_video(&a.join("v.mp4").display().to_string(), &b.join("v.mp4")));
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();

        // A video another worker (on the same shard) captioned since the folder was read is
        // passed over, not captioned again.
        let fresh = temp_dir("claimed-meanwhile");
        let mut calls = Vec::new();
        let mut captioner = captioner("", &mut calls);
        let summary = run(
            &all,
            &options(&fresh, Shard::ALL, false),
            |entry: &Entry| {
                let done = captioner(entry);
                if entry.id == "v0" {
                    let other = Entry { id: "v1".into(), ..all[1].clone() };
                    std::fs::write(fresh.join("v1.json"), captioner(&other).unwrap().json).unwrap();
                }
                done
            },
            |_| {},
        )
        .unwrap();
        assert_eq!((summary.captioned, summary.passed_over, summary.with_result), (2, 1, 3));
        drop(captioner);
        assert_eq!(calls, ["v0", "v1", "v2"], "v1 once, by the other worker");
        std::fs::remove_dir_all(&fresh).unwrap();

        // A record with nothing beside it gives way where its run has stopped (its models did
        // not load), not while it may still run (loading, or captioning its first video), here or
        // elsewhere; a key only one side has is not compared.
        let bare = temp_dir("claimed-bare");
        claim_out_dir(&bare, &json!({"clip": "/nowhere"})).unwrap();
        let err = claim_out_dir(&bare, &json!({"clip": null})).unwrap_err().to_string();
        let ours = std::process::id();
        assert!(
            err.contains(&format!(
                "claimed by another run with other settings (clip: \"/nowhere\" -> null), process {ours}, still running"
            )),
            "{err}"
        );
        let claimed_by = |pid: u32, namespace: &str| {
            let record =
                json!({"settings": {"clip": "/nowhere"}, "claimed_by": {"pid": pid, "pid_namespace": namespace}});
            std::fs::write(bare.join(SETTINGS_FILE), record.to_string()).unwrap();
        };
        claimed_by(4_194_304, "pid:[1]@elsewhere");
        let err = claim_out_dir(&bare, &json!({"clip": null})).unwrap_err().to_string();
        assert!(err.contains("process 4194304 on another machine or in another container"), "{err}");
        // Above Linux's highest pid: no such process.
        claimed_by(4_194_304, &pid_namespace());
        claim_out_dir(&bare, &json!({"clip": null})).unwrap();
        // A run joining with the same settings claims it from then on: the dead claimant is gone
        // from the record, and other settings are refused while this run lives.
        let dead =
            json!({"settings": {"clip": null}, "claimed_by": {"pid": 4_194_304, "pid_namespace": pid_namespace()}});
        std::fs::write(bare.join(SETTINGS_FILE), dead.to_string()).unwrap();
        claim_out_dir(&bare, &json!({"clip": null})).unwrap();
        let err = claim_out_dir(&bare, &json!({"clip": "/elsewhere"})).unwrap_err().to_string();
        assert!(err.contains(&format!("process {ours}, still running")), "{err}");
        // A record from before records named their claimant gives way, as all such did.
        std::fs::write(bare.join(SETTINGS_FILE), json!({"settings": {"clip": "/elsewhere"}}).to_string()).unwrap();
        claim_out_dir(&bare, &json!({"clip": null})).unwrap();
        std::fs::write(bare.join("v0.error.json"), b"{}").unwrap();
        claim_out_dir(&bare, &json!({"clip": null, "added_later": 1})).unwrap();
        assert!(claim_out_dir(&bare, &json!({"clip": "/somewhere"})).is_err());
        std::fs::remove_dir_all(&bare).unwrap();

        // An output folder that is a file is said at once.
        let file = dir.join("v0.json");
        let err = claim_out_dir(&file, &json!({})).unwrap_err().to_string();
        assert!(err.contains("is a file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
