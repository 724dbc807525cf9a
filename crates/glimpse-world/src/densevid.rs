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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
    let mut all: Vec<Scores> = TIOU_THRESHOLDS.iter().map(|&t| at_threshold(predictions, truth, t)).collect();
    let count = all.len() as f64;
    let mean = |f: fn(&Scores) -> f64| all.iter().map(f).sum::<f64>() / count;
    let overall = Scores {
        threshold: None,
        bleu_1: mean(|s| s.bleu_1),
        bleu_2: mean(|s| s.bleu_2),
        bleu_3: mean(|s| s.bleu_3),
        bleu_4: mean(|s| s.bleu_4),
        cider_d: mean(|s| s.cider_d),
        precision: mean(|s| s.precision),
        recall: mean(|s| s.recall),
    };
    all.push(overall);
    all
}

/// `densevid_eval`'s `remove_nonascii`: every non-ASCII character becomes a space.
fn ascii(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii() { c } else { ' ' }).collect()
}

fn at_threshold(
    predictions: &BTreeMap<String, Vec<Prediction>>,
    truth: &BTreeMap<String, Truth>,
    threshold: f64,
) -> Scores {
    let mut sum = Scores { threshold: Some(threshold), ..Scores::default() };
    let segments = |stamps: &mut dyn Iterator<Item = [f64; 2]>| stamps.map(|[s, e]| (s, e)).collect::<Vec<Segment>>();
    for (id, video) in truth {
        let Some(predicted) = predictions.get(id).filter(|p| !p.is_empty()) else { continue };
        let predicted_segments = segments(&mut predicted.iter().map(|p| p.timestamp));
        let truth_segments = segments(&mut video.timestamps.iter().copied());
        let (precision, recall) = precision_recall(&predicted_segments, &truth_segments, threshold);
        sum.precision += precision;
        sum.recall += recall;
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
        let [b1, b2, b3, b4] = bleu(&corpus);
        sum.bleu_1 += b1;
        sum.bleu_2 += b2;
        sum.bleu_3 += b3;
        sum.bleu_4 += b4;
        sum.cider_d += cider_d(&corpus);
    }
    let videos = truth.len().max(1) as f64;
    Scores {
        threshold: Some(threshold),
        bleu_1: sum.bleu_1 / videos,
        bleu_2: sum.bleu_2 / videos,
        bleu_3: sum.bleu_3 / videos,
        bleu_4: sum.bleu_4 / videos,
        cider_d: sum.cider_d / videos,
        precision: sum.precision / videos,
        recall: sum.recall / videos,
    }
}
