//! A batch folder merged into one file in the ActivityNet Captions submission layout, the one
//! `densevid_eval` and other dense-captioning scorers read.

use std::collections::BTreeMap;
use std::path::Path;

use glimpse_media::untrusted::read_regular_file;
use glimpse_world::densevid::Prediction;
use serde::Deserialize;
use serde_json::json;

use crate::run::{Folder, Status};
use crate::{BatchError, Entry};

/// The largest result file read (a video's events).
const MAX_RESULT_BYTES: u64 = 64 << 20;

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
}

/// The part of a result file (`caption-video --format json`) the merge reads.
#[derive(Deserialize)]
struct VideoResult {
    events: Vec<ResultEvent>,
}

#[derive(Deserialize)]
struct ResultEvent {
    start: f64,
    end: f64,
    caption: String,
}

/// Merges every result in `dir` (`<id>.json`); with the manifest's `entries`, also says which of
/// them failed or are missing.
pub fn merge(dir: &Path, entries: Option<&[Entry]>) -> Result<Merged, BatchError> {
    let folder = Folder::read(dir)?;
    let mut results = BTreeMap::new();
    let mut failed = Vec::new();
    for name in folder.names.iter().filter(|name| !name.starts_with('.')) {
        if let Some(id) = name.strip_suffix(".error.json") {
            if folder.status(id) == Status::Failed {
                failed.push(id.to_string());
            }
        } else if let Some(id) = name.strip_suffix(".json") {
            results.insert(id.to_string(), read_result(&dir.join(name))?);
        }
    }
    failed.sort();
    let missing = entries
        .unwrap_or_default()
        .iter()
        .filter(|e| folder.status(&e.id) == Status::Pending)
        .map(|e| e.id.clone())
        .collect();
    let done = results.len();
    let json = json!({
        "version": "VERSION 1.0",
        "results": results,
        "external_data": {
            "used": true,
            "details": "zero-shot: pretrained CLIP and GPT-2 aligned at test time by glimpse (ZeroTA), no training on the benchmark",
        },
    });
    Ok(Merged { json: format!("{json:#}\n"), done, failed, missing })
}

fn read_result(path: &Path) -> Result<Vec<Prediction>, BatchError> {
    let bytes = read_regular_file(path, MAX_RESULT_BYTES)?;
    let result: VideoResult = serde_json::from_slice(&bytes).map_err(|e| {
        BatchError::Result(format!(
            "{} is not a glimpse result ({e}); remove it or caption the video again",
            path.display()
        ))
    })?;
    let events = result.events.into_iter().map(|e| Prediction { sentence: e.caption, timestamp: [e.start, e.end] });
    Ok(events.collect())
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
        let entries: Vec<Entry> =
            ["v_a", "v_b", "v_c"].iter().map(|id| Entry { id: id.to_string(), path: PathBuf::from(id) }).collect();
        let merged = merge(&dir, Some(&entries)).unwrap();
        assert_eq!(
            (merged.done, merged.failed.as_slice(), merged.missing.as_slice()),
            (1, &["v_b".to_string()][..], &["v_c".to_string()][..])
        );
        let json: serde_json::Value = serde_json::from_str(&merged.json).unwrap();
        assert_eq!(json["version"], "VERSION 1.0");
        assert_eq!(json["results"]["v_a"][1], json!({"sentence": "two squares.", "timestamp": [4.5, 9.0]}));
        assert_eq!(json["external_data"]["used"], true);

        std::fs::write(dir.join("v_d.json"), "not json").unwrap();
        assert!(merge(&dir, None).unwrap_err().to_string().contains("v_d.json is not a glimpse result"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
