//! Dense-captioning scores by the protocol of ActivityNet Captions' `densevid_eval`, on any
//! truth file in its layout: what `glimpse score` prints, so that a result on a real benchmark is
//! the benchmark's own number.
//!
//! For each tIoU threshold, every prediction is paired with every reference segment it overlaps
//! by at least the threshold ([`matched_pairs`]); a prediction that overlaps none is scored
//! against a random string (here a token no caption contains, which scores the same: the string
//! is one token sharing nothing with anything). Each video's pairs are one corpus for the caption
//! metrics, a video without predictions scores 0, and the scores are averaged over the truth's
//! videos, then over the thresholds. Detection precision and recall use a strict `>`, as there,
//! and non-ASCII characters become spaces before tokenising, as there. METEOR (Java) and SODA_c
//! are not computed.

use std::collections::BTreeMap;

use glimpse_media::span::Segment;
use serde::{Deserialize, Serialize};

use crate::metrics::{TIOU_THRESHOLDS, bleu, cider_d, matched_pairs, precision_recall};

/// One predicted event, as in a submission's `results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub sentence: String,
    pub timestamp: [f64; 2],
}

/// One video of a truth file: its events' segments and sentences, in order.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Truth {
    pub timestamps: Vec<[f64; 2]>,
    pub sentences: Vec<String>,
}

/// Caption and detection scores at one threshold, or their mean over thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Scores {
    /// The tIoU threshold; `None` for the mean over thresholds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub bleu_1: f64,
    pub bleu_2: f64,
    pub bleu_3: f64,
    pub bleu_4: f64,
    /// CIDEr-D: pycocoevalcap's `Cider`, the scorer `densevid_eval` runs and reports as "CIDEr".
    pub cider_d: f64,
    pub precision: f64,
    pub recall: f64,
}

/// Reads a submission: `{"results": {id: [{"sentence", "timestamp": [start, end]}]}, ...}`.
pub fn read_predictions(json: &[u8]) -> Result<BTreeMap<String, Vec<Prediction>>, String> {
    #[derive(Deserialize)]
    struct Submission {
        results: BTreeMap<String, Vec<Prediction>>,
    }
    let submission: Submission = serde_json::from_slice(json).map_err(|e| {
        format!("not a submission in the ActivityNet Captions layout ({e}); expected {{\"results\": {{id: [{{\"sentence\", \"timestamp\": [start, end]}}]}}}}")
    })?;
    Ok(submission.results)
}

/// Reads a truth file: `{id: {"timestamps": [[start, end], ..], "sentences": [..], ...}}` (other
/// fields such as `duration` are ignored); each video needs one sentence per segment.
pub fn read_truth(json: &[u8]) -> Result<BTreeMap<String, Truth>, String> {
    let truth: BTreeMap<String, Truth> = serde_json::from_slice(json).map_err(|e| {
        format!("not a truth file in the ActivityNet Captions layout ({e}); expected {{id: {{\"timestamps\": [[start, end]], \"sentences\": [..]}}}}")
    })?;
    if let Some((id, video)) = truth.iter().find(|(_, v)| v.timestamps.len() != v.sentences.len()) {
        return Err(format!(
            "video {id} has {} segments but {} sentences",
            video.timestamps.len(),
            video.sentences.len()
        ));
    }
    Ok(truth)
}

/// A token no caption contains, standing in for `densevid_eval`'s random string.
const UNMATCHED: &str = "densevidunmatchedprediction";

/// Scores at each of [`TIOU_THRESHOLDS`], then their mean. Videos are the truth's; predictions of
/// other videos are ignored.
pub fn evaluate(predictions: &BTreeMap<String, Vec<Prediction>>, truth: &BTreeMap<String, Truth>) -> Vec<Scores> {
    let mut all: Vec<Scores> = TIOU_THRESHOLDS
        .iter()
        .map(|&threshold| {
            let videos = truth.iter().filter_map(|(id, video)| {
                let predicted = predictions.get(id).filter(|p| !p.is_empty())?;
                Some(video_scores(predicted, video, threshold))
            });
            // A video without predictions scores 0 and still counts.
            Scores { threshold: Some(threshold), ..mean(videos, truth.len()) }
        })
        .collect();
    all.push(mean(all.clone().into_iter(), all.len()));
    all
}

/// The mean of each figure of `scores` over `count` (0 for none); no threshold.
fn mean(scores: impl Iterator<Item = Scores>, count: usize) -> Scores {
    let sum = scores.fold(Scores::default(), |a, b| Scores {
        threshold: None,
        bleu_1: a.bleu_1 + b.bleu_1,
        bleu_2: a.bleu_2 + b.bleu_2,
        bleu_3: a.bleu_3 + b.bleu_3,
        bleu_4: a.bleu_4 + b.bleu_4,
        cider_d: a.cider_d + b.cider_d,
        precision: a.precision + b.precision,
        recall: a.recall + b.recall,
    });
    let n = count.max(1) as f64;
    Scores {
        threshold: None,
        bleu_1: sum.bleu_1 / n,
        bleu_2: sum.bleu_2 / n,
        bleu_3: sum.bleu_3 / n,
        bleu_4: sum.bleu_4 / n,
        cider_d: sum.cider_d / n,
        precision: sum.precision / n,
        recall: sum.recall / n,
    }
}

/// `densevid_eval`'s `remove_nonascii`: every non-ASCII character becomes a space.
fn ascii(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii() { c } else { ' ' }).collect()
}

/// One video's figures at `threshold`: its predictions' pairs as one corpus.
fn video_scores(predicted: &[Prediction], video: &Truth, threshold: f64) -> Scores {
    let predicted_segments: Vec<Segment> = predicted.iter().map(|p| (p.timestamp[0], p.timestamp[1])).collect();
    let truth_segments: Vec<Segment> = video.timestamps.iter().map(|&[s, e]| (s, e)).collect();
    let (precision, recall) = precision_recall(&predicted_segments, &truth_segments, threshold);
    let pairs = matched_pairs(&predicted_segments, &truth_segments, threshold);
    let mut corpus: Vec<(String, Vec<String>)> = Vec::new();
    for (index, prediction) in predicted.iter().enumerate() {
        let sentence = ascii(&prediction.sentence);
        let matched: Vec<usize> = pairs.iter().filter(|(p, _)| *p == index).map(|&(_, t)| t).collect();
        match matched.is_empty() {
            true => corpus.push((sentence, vec![UNMATCHED.to_string()])),
            false => corpus.extend(matched.iter().map(|&t| (sentence.clone(), vec![ascii(&video.sentences[t])]))),
        }
    }
    let [bleu_1, bleu_2, bleu_3, bleu_4] = bleu(&corpus);
    Scores { threshold: None, bleu_1, bleu_2, bleu_3, bleu_4, cider_d: cider_d(&corpus), precision, recall }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!((actual - expected).abs() <= tolerance, "got {actual}, expected {expected}");
    }

    #[test]
    fn precision_and_recall_average_per_video() {
        let video =
            |stamps: &[[f64; 2]]| Truth { timestamps: stamps.to_vec(), sentences: vec!["a".into(); stamps.len()] };
        let predicted = |stamps: &[[f64; 2]]| {
            stamps.iter().map(|&timestamp| Prediction { sentence: "a".into(), timestamp }).collect::<Vec<_>>()
        };
        let truth = BTreeMap::from([
            ("one".to_string(), video(&[[0.0, 10.0]])),
            ("two".to_string(), video(&[[0.0, 10.0], [20.0, 30.0], [60.0, 70.0], [80.0, 90.0]])),
        ]);
        let predictions = BTreeMap::from([
            ("one".to_string(), predicted(&[[0.0, 10.0]])),
            ("two".to_string(), predicted(&[[0.0, 10.0], [40.0, 50.0]])),
        ]);
        let scores = evaluate(&predictions, &truth);
        assert_eq!(scores.len(), TIOU_THRESHOLDS.len() + 1);
        for score in &scores {
            // Video 1: (1, 1); video 2: (1/2, 1/4). Pooling the events instead would give 2/3, 2/5.
            close(score.precision, 0.75, 1e-12);
            close(score.recall, 0.625, 1e-12);
        }
        assert!(evaluate(&BTreeMap::new(), &BTreeMap::new()).iter().all(|s| s.precision == 0.0 && s.recall == 0.0));
    }
}
