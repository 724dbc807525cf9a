//! A batch folder merged into one file in the ActivityNet Captions submission layout, the one
//! `densevid_eval` and other dense-captioning scorers read.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::json;

use crate::result::VideoResult;
use glimpse_media::untrusted::quoted;

use crate::run::{Folder, Status, absorb, first_few, same_video};
use crate::{BatchError, Entry};

/// The merged results and what is not in them.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    /// `{"version", "results": {id: [{"sentence", "timestamp": [start, end]}]}, "external_data"}`.
    pub json: String,
    pub done: usize,
    /// Ids whose last attempt failed (an error record and no result).
    pub failed: Vec<String>,
    /// Ids of the manifest with neither a result nor an error record.
    pub missing: Vec<String>,
    /// Ids with a result that the manifest does not name, left out of the merge (a folder shared
    /// by several manifests, or an earlier archive's results).
    pub outside: Vec<String>,
    /// Ids whose result has no event (every scene blank), left out of the merge: `densevid_eval`
    /// fails on an empty list (it divides by the last index of the loop over it), and scores a
    /// video left out as one with no events; SODA_c, which scores only the videos both files
    /// have, then leaves their references out.
    pub without_events: Vec<String>,
}

/// Merges every result in `dir` (`<id>.json`); with the manifest's `entries`, only those of its
/// videos (the others are left out and listed), and says which of them failed or are missing. A
/// result that does not read as one (cut short, events with impossible times) is refused, named.
pub fn merge(dir: &Path, entries: Option<&[Entry]>) -> Result<Merged, BatchError> {
    let folder = Folder::read(dir)?;
    let listed: Option<HashMap<&str, &Path>> =
        entries.map(|entries| entries.iter().map(|e| (e.id.as_str(), e.path.as_path())).collect());
    let in_manifest = |id: &str| listed.as_ref().is_none_or(|ids| ids.contains_key(id));
    let mut results = BTreeMap::new();
    let (mut failed, mut outside, mut of_other_videos, mut without_events) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Every setting the results so far recorded (in name order), which each next must share.
    let (mut settled, mut made_otherwise) = (None::<serde_json::Value>, Vec::new());
    // In name order: the first result's settings are the ones the others are held to.
    let mut names: Vec<&String> = folder.names.iter().filter(|name| !name.starts_with('.')).collect();
    names.sort();
    for name in names {
        if let Some(id) = name.strip_suffix(".error.json") {
            if folder.status(id) == Status::Failed && in_manifest(id) {
                failed.push(id.to_string());
            }
        } else if let Some(id) = name.strip_suffix(".json") {
            if in_manifest(id) {
                let result = VideoResult::read(&dir.join(name))?;
                if let Some(path) = listed.as_ref().and_then(|ids| ids.get(id))
                    && !same_video(result.video(), path)
                {
                    of_other_videos.push(format!("{id} is of {}", quoted(result.video())));
                }
                match (&mut settled, result.settings()) {
                    (Some(settled), Some(own)) => match result.made_otherwise(settled) {
                        Some(changed) => made_otherwise.push(format!("{id}: {changed}")),
                        None => absorb(settled, own),
                    },
                    (None, own) => settled = own.cloned(),
                    (_, None) => {}
                }
                match result.predictions() {
                    events if events.is_empty() => without_events.push(id.to_string()),
                    events => drop(results.insert(id.to_string(), events)),
                }
            } else {
                outside.push(id.to_string());
            }
        }
    }
    if !of_other_videos.is_empty() {
        of_other_videos.sort();
        return Err(BatchError::OutDir(format!(
            "{}: the results of {} of the manifest's ids are of other videos ({}); merge the folder the manifest's \
             batch wrote, or remove those results",
            dir.display(),
            of_other_videos.len(),
            first_few(&of_other_videos, 5, "; ")
        )));
    }
    if !made_otherwise.is_empty() {
        return Err(BatchError::OutDir(format!(
            "{}: results made with different settings (a result's value -> that of the results named before it: \
             {}); they do not make one submission: merge the folders of each run apart",
            dir.display(),
            first_few(&made_otherwise, 3, "; ")
        )));
    }
    failed.sort();
    outside.sort();
    without_events.sort();
    let missing: Vec<String> = entries
        .unwrap_or_default()
        .iter()
        .filter(|e| folder.status(&e.id) == Status::Pending)
        .map(|e| e.id.clone())
        .collect();
    let done = results.len();
    if done == 0 {
        let counts = match entries {
            Some(_) => format!(
                " of the manifest's ({} failed, {} not captioned yet, {} without events; {} others)",
                failed.len(),
                missing.len(),
                without_events.len(),
                outside.len()
            ),
            None => format!(" ({} failed, {} without events)", failed.len(), without_events.len()),
        };
        return Err(BatchError::OutDir(format!(
            "{} holds no result to merge{counts}; merge the folder a batch run wrote its results into",
            dir.display()
        )));
    }
    let json = json!({
        "version": "VERSION 1.0",
        "results": results,
        "external_data": {
            "used": true,
            "details": "zero-shot: pretrained CLIP and GPT-2 aligned at test time by glimpse (ZeroTA), no training on the benchmark",
        },
    });
    Ok(Merged { json: format!("{json:#}\n"), done, failed, missing, outside, without_events })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn results_merge_into_the_activitynet_layout_with_failures_and_gaps_named() {
        let dir = crate::temp_dir("merge");
        let result = r#"{"duration":9.0,"events":[{"caption":"a red circle.","end":4.5,"score":0.7,"start":0.0},{"caption":"two squares.","end":9.0,"score":0.6,"start":4.5}],"video":"a.gif"}"#;
        std::fs::write(dir.join("v_a.json"), result).unwrap();
        std::fs::write(dir.join("v_a.srt"), "1\n").unwrap();
        std::fs::write(dir.join("v_b.error.json"), "{}").unwrap();
        std::fs::write(dir.join(".v_c.json.1.0.tmp"), "{").unwrap();
        let entries: Vec<Entry> = ["v_a", "v_b", "v_c"]
            .iter()
            .map(|id| Entry { id: id.to_string(), path: PathBuf::from(format!("{}.gif", &id[2..])) })
            .collect();
        let merged = merge(&dir, Some(&entries)).unwrap();
        assert_eq!(
            (merged.done, merged.failed.as_slice(), merged.missing.as_slice()),
            (1, &["v_b".to_string()][..], &["v_c".to_string()][..])
        );
        let json: serde_json::Value = serde_json::from_str(&merged.json).unwrap();
        assert_eq!(json["version"], "VERSION 1.0");
        assert_eq!(json["results"]["v_a"][1], json!({"sentence": "two squares.", "timestamp": [4.5, 9.0]}));
        assert_eq!(json["external_data"]["used"], true);

        // A folder is no result, whatever its name.
        std::fs::create_dir(dir.join("v_e.json")).unwrap();
        assert_eq!(merge(&dir, None).unwrap().done, 1);
        // A video without events (every scene blank) is left out and named: densevid_eval fails
        // on an empty list.
        std::fs::write(dir.join("v_f.json"), r#"{"duration":3.0,"events":[],"video":"f.gif"}"#).unwrap();
        let merged = merge(&dir, None).unwrap();
        assert_eq!((merged.done, merged.without_events.as_slice()), (1, &["v_f".to_string()][..]));
        let json: serde_json::Value = serde_json::from_str(&merged.json).unwrap();
        assert!(json["results"].get("v_f").is_none(), "{json}");
        std::fs::remove_file(dir.join("v_f.json")).unwrap();
        std::fs::write(dir.join("v_d.json"), "not json").unwrap();
        assert!(merge(&dir, None).unwrap_err().to_string().contains("v_d.json is not a glimpse result"));

        // Nothing to submit is no submission.
        let empty = crate::temp_dir("merge-empty");
        std::fs::write(empty.join("v_b.error.json"), "{}").unwrap();
        let err = merge(&empty, Some(&entries)).unwrap_err().to_string();
        assert!(
            err.contains(
                "holds no result to merge of the manifest's (1 failed, 2 not captioned yet, 0 without events; 0 others)"
            ),
            "{err}"
        );
        let err = merge(&empty, None).unwrap_err().to_string();
        assert!(err.contains("holds no result to merge (1 failed, 0 without events)"), "{err}");
        std::fs::remove_dir_all(&empty).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Results are held to every setting recorded by those before them, not only the first's: a
    /// key the first lacks is compared between the others.
    #[test]
    fn results_must_share_every_setting_any_of_them_records() {
        let dir = crate::temp_dir("merge-settings");
        let result = |settings: serde_json::Value| {
            json!({"video": "a.gif", "duration": 9.0, "events": [{"caption": "a dog.", "start": 0.0, "end": 1.0, "score": 0.5}], "settings": settings}).to_string()
        };
        std::fs::write(dir.join("v0.json"), result(json!({"events": 3}))).unwrap();
        std::fs::write(dir.join("v1.json"), result(json!({"events": 3, "fps": 2.0}))).unwrap();
        assert_eq!(merge(&dir, None).unwrap().done, 2);
        std::fs::write(dir.join("v2.json"), result(json!({"events": 3, "fps": 1.0}))).unwrap();
        let err = merge(&dir, None).unwrap_err().to_string();
        assert!(err.contains("v2: fps: 1.0 -> 2.0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_manifest_keeps_other_videos_out_and_impossible_times_are_refused() {
        let dir = crate::temp_dir("merge-manifest");
        let result = |start: f64, end: f64| {
            format!(
                r#"{{"video":"a.gif","duration":9.0,"events":[{{"caption":"a dog.","end":{end},"score":0.5,"start":{start}}}]}}"#
            )
        };
        std::fs::write(dir.join("v_a.json"), result(0.0, 4.5)).unwrap();
        std::fs::write(dir.join("old.json"), result(1.0, 2.0)).unwrap();
        std::fs::write(dir.join("old2.error.json"), "{}").unwrap();
        let entries = [Entry { id: "v_a".into(), path: PathBuf::from("a.gif") }];
        let merged = merge(&dir, Some(&entries)).unwrap();
        assert_eq!((merged.done, merged.outside.as_slice()), (1, &["old".to_string()][..]));
        assert!(merged.failed.is_empty(), "failures of other videos are not this manifest's");
        let json: serde_json::Value = serde_json::from_str(&merged.json).unwrap();
        assert_eq!(json["results"].as_object().unwrap().len(), 1);
        // Without a manifest, every result is merged.
        assert_eq!(merge(&dir, None).unwrap().done, 2);

        // A result of another video under the manifest's id is no result of its video.
        let other = [Entry { id: "v_a".into(), path: PathBuf::from("b/other.gif") }];
        let err = merge(&dir, Some(&other)).unwrap_err().to_string();
        assert!(err.contains("1 of the manifest's ids are of other videos (v_a is of a.gif)"), "{err}");

        std::fs::write(dir.join("v_a.json"), result(5.0, 1.0)).unwrap();
        let err = merge(&dir, Some(&entries)).unwrap_err().to_string();
        assert!(err.contains("v_a.json is not a glimpse result (event 1 (`a dog.`) starts at 5 s"), "{err}");
        std::fs::write(dir.join("v_a.json"), result(1.0, 12.0)).unwrap();
        let err = merge(&dir, Some(&entries)).unwrap_err().to_string();
        assert!(err.contains("after the video's 9 s"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
