//! A video's result file, `<id>.json` as `caption-video --format json` writes it: read back and
//! checked (the batch loop counts a video as done only when its result reads as one, the merge
//! refuses one that does not), and the subtitles made from its events.

use std::path::Path;

use glimpse_media::subtitles::{Cue, to_srt, to_vtt};
use glimpse_media::untrusted::{quoted, read_regular_file};
use glimpse_world::densevid::Prediction;
use serde::Deserialize;

use crate::BatchError;

/// The largest result file read (a video's events).
const MAX_RESULT_BYTES: u64 = 64 << 20;

/// How far an event may end past the video's duration, in seconds: rounding, never a frame.
const DURATION_SLACK: f64 = 1e-6;

/// The part of a result file the batch reads. Every field glimpse writes is required: a file of
/// another shape beside the results (a world video's truth, `<id>.json` too, holds events with
/// captions) must not pass for the video's captions.
#[derive(Debug, Deserialize)]
pub(crate) struct VideoResult {
    /// The video it is the result of, as the batch's manifest named it.
    video: String,
    duration: f64,
    events: Vec<ResultEvent>,
    /// The batch's settings it was made with (see [`crate::run::with_settings`]); none in a file
    /// `caption-video` wrote, or an older batch.
    #[serde(default)]
    settings: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct ResultEvent {
    start: f64,
    end: f64,
    caption: String,
    /// Required, not read: glimpse scores each event (`null` where a score was not a number).
    #[serde(rename = "score")]
    _score: serde_json::Value,
}

impl VideoResult {
    /// A result from its JSON, its events checked: times finite, not negative, in order, and
    /// within the duration where there is one. Says what is wrong, without naming the file.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let result: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let duration = result.duration;
        if !(duration.is_finite() && duration >= 0.0) {
            return Err(format!("its duration {duration} is not a number of seconds"));
        }
        for (number, event) in result.events.iter().enumerate() {
            let ResultEvent { start, end, ref caption, .. } = *event;
            let event = format!("event {} (`{}`)", number + 1, quoted(caption));
            if !(start.is_finite() && end.is_finite() && start >= 0.0) {
                return Err(format!("{event} has a negative or non-finite time: start {start}, end {end}"));
            }
            if start > end {
                return Err(format!("{event} starts at {start} s, after it ends at {end} s"));
            }
            if end > duration + DURATION_SLACK {
                return Err(format!("{event} ends at {end} s, after the video's {duration} s"));
            }
        }
        Ok(result)
    }

    /// The result at `path`, or why it is not one (naming the file and what to do).
    pub(crate) fn read(path: &Path) -> Result<Self, BatchError> {
        // A link to nothing is a result gone, for the batch to caption again, not a disk to mend.
        let to_nothing = std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if std::fs::symlink_metadata(path).is_ok() && to_nothing {
            return Err(BatchError::Result(format!(
                "{} is a link to no file; remove it or caption the video again",
                path.display()
            )));
        }
        let bytes = read_regular_file(path, MAX_RESULT_BYTES)?;
        Self::parse(&bytes).map_err(|why| {
            BatchError::Result(format!(
                "{} is not a glimpse result ({why}); remove it or caption the video again",
                path.display()
            ))
        })
    }

    pub(crate) fn video(&self) -> &str {
        &self.video
    }

    /// How the settings it was made with differ from `settings` (`fps: 2.0 -> 0.5; ...`); `None`
    /// where they do not, or it does not say.
    pub(crate) fn made_otherwise(&self, settings: &serde_json::Value) -> Option<String> {
        let mut changed = Vec::new();
        crate::run::differences(self.settings.as_ref()?, settings, "", &mut changed);
        (!changed.is_empty()).then(|| crate::run::first_few(&changed, 3, "; "))
    }

    pub(crate) fn settings(&self) -> Option<&serde_json::Value> {
        self.settings.as_ref()
    }

    /// The files `--subtitles` adds, by extension: the same bytes as those made from the events
    /// when they were found (JSON keeps every f64 exactly).
    pub(crate) fn subtitles(&self) -> [(&'static str, String); 2] {
        let cues: Vec<Cue> =
            self.events.iter().map(|e| Cue { start: e.start, end: e.end, text: e.caption.clone() }).collect();
        [("srt", to_srt(&cues)), ("vtt", to_vtt(&cues))]
    }

    /// The events in the ActivityNet Captions layout.
    pub(crate) fn predictions(self) -> Vec<Prediction> {
        self.events.into_iter().map(|e| Prediction { sentence: e.caption, timestamp: [e.start, e.end] }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_with_impossible_times_are_refused_with_the_event_named() {
        let event = |start: &str, end: &str| {
            let events = format!(r#"[{{"caption":"a dog.","start":{start},"end":{end},"score":0.5}}]"#);
            format!(r#"{{"video":"a.gif","duration":9.0,"events":{events}}}"#)
        };
        assert!(VideoResult::parse(event("0.0", "9.0").as_bytes()).is_ok());
        assert!(VideoResult::parse(event("2.0", "2.0").as_bytes()).is_ok(), "an instant is a moment");
        for (start, end, needle) in [
            ("5.0", "1.0", "event 1 (`a dog.`) starts at 5 s, after it ends at 1 s"),
            ("-1.0", "1.0", "negative or non-finite"),
            ("1.0", "9.5", "ends at 9.5 s, after the video's 9 s"),
        ] {
            let err = VideoResult::parse(event(start, end).as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{start}..{end}: {err}");
        }
        // Cut short (a copy interrupted), or not a result at all.
        let whole = event("0.0", "9.0");
        assert!(VideoResult::parse(&whole.as_bytes()[..whole.len() / 2]).is_err());
        assert!(
            VideoResult::parse(br#"{"video":"a.gif","duration":9.0}"#).unwrap_err().contains("missing field `events`")
        );
        // A world video's truth beside its video holds events with captions, but no scores and no
        // video: it is no result.
        let truth = br#"{"duration":9.0,"fps":4.0,"events":[{"caption":"x","start":3,"end":4,"attributes":{}}]}"#;
        let err = VideoResult::parse(truth).unwrap_err();
        assert!(err.contains("missing field `score`") || err.contains("missing field `video`"), "{err}");
    }
}
