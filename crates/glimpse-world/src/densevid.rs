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
//! and non-ASCII characters become spaces before tokenising, as there. METEOR, and SODA_c (which
//! scores with METEOR), are computed where a METEOR is given: it is a Java program ([`Meteor`]).
//!
//! SODA_c (Fujita et al., ECCV 2020, "SODA: Story Oriented Dense Video Captioning Evaluation
//! Framework"): per video, predictions and references in time order, every pair scored tIoU x
//! METEOR, and the pairs that keep both orders with the largest total chosen by dynamic
//! programming; the totals of all videos (those both files have) over the number of predictions
//! and of references give precision and recall, and their harmonic mean F1.

use std::collections::BTreeMap;
use std::io;

use glimpse_media::span::{Segment, tiou};
use glimpse_media::untrusted::quoted;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::meteor::Meteor;
use crate::metrics::{TIOU_THRESHOLDS, bleu, cider_d, matched_pairs, precision_recall, tokenize};

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
    /// Where a METEOR was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meteor: Option<f64>,
    pub precision: f64,
    pub recall: f64,
}

/// Reads a submission: `{"results": {id: [{"sentence", "timestamp": [start, end]}]}, ...}`; a
/// timestamp that ends before it starts is refused, named (tIoU would score it as a segment).
pub fn read_predictions(json: &[u8]) -> Result<BTreeMap<String, Vec<Prediction>>, String> {
    #[derive(Deserialize)]
    struct Submission {
        #[serde(deserialize_with = "videos_once_each")]
        results: BTreeMap<String, Vec<Prediction>>,
    }
    let json = utf8_json(json)?;
    let submission: Submission = serde_json::from_slice(json).map_err(|e| {
        if e.to_string().starts_with(TWICE) {
            return e.to_string();
        }
        let swapped = if looks_like_truth(json) { "; this is a truth file: the submission comes first" } else { "" };
        format!("not a submission in the ActivityNet Captions layout ({e}); expected {{\"results\": {{id: [{{\"sentence\", \"timestamp\": [start, end]}}]}}}}{swapped}")
    })?;
    for (id, predicted) in &submission.results {
        for (index, prediction) in predicted.iter().enumerate() {
            check_timestamp(prediction.timestamp, id, index, &prediction.sentence)?;
        }
    }
    Ok(submission.results)
}

/// Refuses a segment that is not one: `[start, end]` with `start <= end`, both finite. Negative
/// times stay, as `densevid_eval` takes them (a detector may start a little before the video).
fn check_timestamp([start, end]: [f64; 2], id: &str, index: usize, sentence: &str) -> Result<(), String> {
    // JSON holds no infinities or NaN: order is all there is to check.
    if start <= end {
        return Ok(());
    }
    Err(format!(
        "video {}, event {} (`{}`): timestamp [{start}, {end}] ends before it starts; give [start, end]",
        quoted(id),
        index + 1,
        quoted(sentence)
    ))
}

/// Reads a truth file: `{id: {"timestamps": [[start, end], ..], "sentences": [..], ...}}` (other
/// fields such as `duration` are ignored); each video needs one sentence per segment. A reversed
/// segment is kept, as densevid_eval keeps it: public truth files are scored as they are.
pub fn read_truth(json: &[u8]) -> Result<BTreeMap<String, Truth>, String> {
    #[derive(Deserialize)]
    struct TruthFile(#[serde(deserialize_with = "videos_once_each")] BTreeMap<String, Truth>);
    let json = utf8_json(json)?;
    let TruthFile(truth) = serde_json::from_slice(json).map_err(|e| {
        if e.to_string().starts_with(TWICE) {
            return e.to_string();
        }
        let swapped = if looks_like_submission(json) { "; a submission (with \"results\") comes first, the truth second" } else { "" };
        format!("not a truth file in the ActivityNet Captions layout ({e}); expected {{id: {{\"timestamps\": [[start, end]], \"sentences\": [..]}}}}{swapped}")
    })?;
    // densevid_eval divides by a video's segments: it cannot score one without.
    if let Some(id) = truth.iter().find_map(|(id, video)| video.timestamps.is_empty().then_some(id)) {
        return Err(format!(
            "video {} has no segments, and densevid_eval's recall divides by them; leave it out of the truth file",
            quoted(id)
        ));
    }
    if let Some((id, video)) = truth.iter().find(|(_, v)| v.timestamps.len() != v.sentences.len()) {
        return Err(format!(
            "video {} has {} segments but {} sentences",
            quoted(id),
            video.timestamps.len(),
            video.sentences.len()
        ));
    }
    if let Some((id, video)) = truth.iter().find(|(_, v)| v.timestamps.len() > MAX_TRUTH_SEGMENTS) {
        return Err(format!(
            "video {} has {} segments, more than the {MAX_TRUTH_SEGMENTS} glimpse scores against; is this a truth \
             file (a few dozen events a video at most)?",
            quoted(id),
            video.timestamps.len()
        ));
    }
    Ok(truth)
}

/// Whether `json` reads as a truth file (an object of videos with `timestamps`), or as a
/// submission (`results` at the top), to tell the two given the wrong way round. Values are
/// skipped, not built: the file may be as large as glimpse reads.
fn looks_like_truth(json: &[u8]) -> bool {
    // Objects by name: a derived struct would take an array too (a submission without its
    // `results`, one prediction a video).
    serde_json::from_slice::<BTreeMap<String, BTreeMap<String, IgnoredAny>>>(json)
        .is_ok_and(|videos| videos.values().next().is_some_and(|video| video.contains_key("timestamps")))
}

fn looks_like_submission(json: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Submission {
        #[serde(rename = "results")]
        _results: IgnoredAny,
    }
    serde_json::from_slice::<Submission>(json).is_ok()
}

/// JSON as the scorers read it: UTF-8, a byte-order mark (Windows editors write one) passed over.
fn utf8_json(json: &[u8]) -> Result<&[u8], String> {
    let json = json.strip_prefix("\u{feff}".as_bytes()).unwrap_or(json);
    match std::str::from_utf8(json) {
        Ok(_) => Ok(json),
        Err(e) => Err(format!(
            "not UTF-8 text (byte {} is not); JSON files are UTF-8: convert it (a UTF-16 file, as some Windows tools \
             write, with `iconv -f UTF-16 -t UTF-8`)",
            e.valid_up_to()
        )),
    }
}

/// How a video given twice is refused (and told from a file of another shape).
const TWICE: &str = "video `";

/// An object of videos by id, each id once: serde_json keeps the last of a key given twice, and a
/// file merged by hand would lose the other's events without a word.
fn videos_once_each<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Videos<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Videos<T> {
        type Value = BTreeMap<String, T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of videos by id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut videos = BTreeMap::new();
            while let Some((id, video)) = map.next_entry::<String, T>()? {
                if videos.contains_key(&id) {
                    return Err(serde::de::Error::custom(format!(
                        "{TWICE}{}` is given twice, and JSON keeps only the last; give each video once, its events \
                         together",
                        quoted(&id)
                    )));
                }
                videos.insert(id, video);
            }
            Ok(videos)
        }
    }
    deserializer.deserialize_map(Videos(std::marker::PhantomData))
}

/// The predictions of a video that count: `densevid_eval` keeps a video's first 1000 (its
/// `max_proposals`, `-ppv`) and drops the rest. It also bounds the pairs a video's corpus holds.
pub const MAX_PROPOSALS: usize = 1000;

/// The most segments a video of a truth file may have: benchmarks have a few dozen at most, and
/// each is paired with every prediction it overlaps.
pub const MAX_TRUTH_SEGMENTS: usize = 1000;

/// A token no caption contains, standing in for `densevid_eval`'s random string.
const UNMATCHED: &str = "densevidunmatchedprediction";

/// Scores at each of [`TIOU_THRESHOLDS`], then their mean, with METEOR where `meteor` is given.
/// Videos are the truth's; predictions of other videos are ignored, and so are a video's past
/// the first [`MAX_PROPOSALS`].
pub fn evaluate(
    predictions: &BTreeMap<String, Vec<Prediction>>,
    truth: &BTreeMap<String, Truth>,
    mut meteor: Option<&mut Meteor>,
) -> io::Result<Vec<Scores>> {
    let with_meteor = meteor.is_some();
    let mut all = Vec::with_capacity(TIOU_THRESHOLDS.len() + 1);
    for threshold in TIOU_THRESHOLDS {
        let mut videos = Vec::new();
        for (id, video) in truth {
            if let Some(predicted) = predictions.get(id).filter(|p| !p.is_empty()) {
                let predicted = &predicted[..predicted.len().min(MAX_PROPOSALS)];
                videos.push(video_scores(predicted, video, threshold, meteor.as_deref_mut())?);
            }
        }
        // A video without predictions scores 0 and still counts.
        all.push(Scores { threshold: Some(threshold), ..mean(&videos, truth.len(), with_meteor) });
    }
    all.push(mean(&all, all.len(), with_meteor));
    Ok(all)
}

/// The mean of each figure of `scores` over `count` (0 for none), METEOR's too `with_meteor`; no
/// threshold.
fn mean(scores: &[Scores], count: usize, with_meteor: bool) -> Scores {
    let n = count.max(1) as f64;
    // Summed from +0: `Sum for f64` starts at -0.0, which an empty sum keeps and prints as `-0.0000`.
    let average = |figure: fn(&Scores) -> f64| scores.iter().map(figure).fold(0.0, |sum, x| sum + x) / n;
    Scores {
        threshold: None,
        bleu_1: average(|s| s.bleu_1),
        bleu_2: average(|s| s.bleu_2),
        bleu_3: average(|s| s.bleu_3),
        bleu_4: average(|s| s.bleu_4),
        cider_d: average(|s| s.cider_d),
        meteor: with_meteor.then(|| average(|s| s.meteor.unwrap_or(0.0))),
        precision: average(|s| s.precision),
        recall: average(|s| s.recall),
    }
}

/// `densevid_eval`'s `remove_nonascii`: every non-ASCII character becomes a space.
fn ascii(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii() { c } else { ' ' }).collect()
}

/// A sentence as the caption metrics see it: ASCII, PTB-tokenised, tokens joined by spaces.
fn tokenized(sentence: &str) -> String {
    tokenize(&ascii(sentence)).join(" ")
}

/// One video's figures at `threshold`: its predictions' pairs as one corpus.
fn video_scores(
    predicted: &[Prediction],
    video: &Truth,
    threshold: f64,
    meteor: Option<&mut Meteor>,
) -> io::Result<Scores> {
    let predicted_segments: Vec<Segment> = predicted.iter().map(|p| (p.timestamp[0], p.timestamp[1])).collect();
    let truth_segments: Vec<Segment> = video.timestamps.iter().map(|&[s, e]| (s, e)).collect();
    let (precision, recall) = precision_recall(&predicted_segments, &truth_segments, threshold);
    let mut matched = vec![Vec::new(); predicted.len()];
    for (p, t) in matched_pairs(&predicted_segments, &truth_segments, threshold) {
        matched[p].push(t);
    }
    let (predicted_text, truth_text): (Vec<String>, Vec<String>) =
        (predicted.iter().map(|p| ascii(&p.sentence)).collect(), video.sentences.iter().map(|s| ascii(s)).collect());
    let mut corpus: Vec<(&str, Vec<&str>)> = Vec::new();
    for (sentence, matched) in predicted_text.iter().zip(&matched) {
        match matched.is_empty() {
            true => corpus.push((sentence.as_str(), vec![UNMATCHED])),
            false => corpus.extend(matched.iter().map(|&t| (sentence.as_str(), vec![truth_text[t].as_str()]))),
        }
    }
    let [bleu_1, bleu_2, bleu_3, bleu_4] = bleu(&corpus);
    let meteor = match meteor {
        Some(meteor) => {
            let tokens: Vec<(String, Vec<String>)> =
                corpus.iter().map(|(h, refs)| (tokenized(h), refs.iter().map(|r| tokenized(r)).collect())).collect();
            Some(meteor.score(&tokens)?.1)
        }
        None => None,
    };
    Ok(Scores { threshold: None, bleu_1, bleu_2, bleu_3, bleu_4, cider_d: cider_d(&corpus), meteor, precision, recall })
}

/// SODA_c's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Soda {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// SODA_c with METEOR, as the paper reports it.
pub fn soda_c(
    predictions: &BTreeMap<String, Vec<Prediction>>,
    truth: &BTreeMap<String, Truth>,
    meteor: &mut Meteor,
) -> io::Result<Soda> {
    soda_c_by(predictions, truth, |hypotheses, reference| {
        let pairs: Vec<(String, Vec<String>)> =
            hypotheses.iter().map(|h| (h.clone(), vec![reference.to_string()])).collect();
        Ok(meteor.score(&pairs)?.0)
    })
}

/// SODA_c with any sentence metric: `score(hypotheses, reference)` scores each (tokenised)
/// hypothesis against one (tokenised) reference.
pub fn soda_c_by<E>(
    predictions: &BTreeMap<String, Vec<Prediction>>,
    truth: &BTreeMap<String, Truth>,
    mut score: impl FnMut(&[String], &str) -> Result<Vec<f64>, E>,
) -> Result<Soda, E> {
    let (mut total, mut predicted_count, mut reference_count) = (0.0, 0, 0);
    for (id, video) in truth {
        let Some(predicted) = predictions.get(id) else { continue };
        let mut predicted: Vec<&Prediction> = predicted.iter().take(MAX_PROPOSALS).collect();
        predicted.sort_by(|a, b| a.timestamp[0].total_cmp(&b.timestamp[0]));
        let mut references: Vec<usize> = (0..video.timestamps.len()).collect();
        references.sort_by(|&a, &b| video.timestamps[a][0].total_cmp(&video.timestamps[b][0]));
        predicted_count += predicted.len();
        reference_count += references.len();
        if predicted.is_empty() || references.is_empty() {
            continue;
        }
        let hypotheses: Vec<String> = predicted.iter().map(|p| tokenized(&p.sentence)).collect();
        let mut matrix = Vec::with_capacity(references.len());
        for &r in &references {
            let scores = score(&hypotheses, &tokenized(&video.sentences[r]))?;
            let [start, end] = video.timestamps[r];
            let row: Vec<f64> = predicted
                .iter()
                .zip(scores)
                .map(|(p, s)| tiou((start, end), (p.timestamp[0], p.timestamp[1])) * s)
                .collect();
            matrix.push(row);
        }
        total += best_ordered_matching(&matrix);
    }
    let precision = if predicted_count == 0 { 0.0 } else { total / predicted_count as f64 };
    let recall = if reference_count == 0 { 0.0 } else { total / reference_count as f64 };
    let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    Ok(Soda { precision, recall, f1 })
}

/// The largest total of `scores[r][p]` over pairs that keep both orders (each row and column in
/// at most one pair, and `r < r'` exactly when `p < p'`): an alignment of two stories.
fn best_ordered_matching(scores: &[Vec<f64>]) -> f64 {
    let columns = scores.first().map_or(0, Vec::len);
    let mut previous = vec![0.0f64; columns + 1];
    for row in scores {
        let mut current = vec![0.0; columns + 1];
        for (p, &s) in row.iter().enumerate() {
            current[p + 1] = previous[p + 1].max(current[p]).max(previous[p] + s);
        }
        previous = current;
    }
    previous[columns]
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
        let scores = evaluate(&predictions, &truth, None).unwrap();
        assert_eq!(scores.len(), TIOU_THRESHOLDS.len() + 1);
        for score in &scores {
            // Video 1: (1, 1); video 2: (1/2, 1/4). Pooling the events instead would give 2/3, 2/5.
            close(score.precision, 0.75, 1e-12);
            close(score.recall, 0.625, 1e-12);
        }
        let empty = evaluate(&BTreeMap::new(), &BTreeMap::new(), None).unwrap();
        assert!(empty.iter().all(|s| s.precision == 0.0 && s.recall == 0.0 && s.meteor.is_none()));
    }

    #[test]
    fn soda_aligns_the_stories_in_order() {
        // Pair scores 0.9 and 0.8 on the diagonal, but 1.0 for (0, 1) and (1, 0) crossed: the
        // crossing pairs cannot both be taken, so the best is the diagonal's 1.7 or one crossing 1.0.
        assert!((best_ordered_matching(&[vec![0.9, 1.0], vec![1.0, 0.8]]) - 1.7).abs() < 1e-12);
        // One reference, three predictions: only the best single pair counts.
        assert!((best_ordered_matching(&[vec![0.2, 0.7, 0.1]]) - 0.7).abs() < 1e-12);
        assert_eq!(best_ordered_matching(&[]), 0.0);

        let truth = BTreeMap::from([(
            "v".to_string(),
            Truth { timestamps: vec![[10.0, 20.0], [0.0, 10.0]], sentences: vec!["b".into(), "a".into()] },
        )]);
        let predictions = BTreeMap::from([(
            "v".to_string(),
            vec![
                Prediction { sentence: "a".into(), timestamp: [0.0, 10.0] },
                Prediction { sentence: "b".into(), timestamp: [10.0, 15.0] },
                Prediction { sentence: "c".into(), timestamp: [15.0, 20.0] },
            ],
        )]);
        // Exact words score 1: "a" matches fully (tIoU 1), "b" half (tIoU 0.5), "c" nothing.
        let exact = |hypotheses: &[String], reference: &str| -> Result<Vec<f64>, ()> {
            Ok(hypotheses.iter().map(|h| f64::from(u8::from(h == reference))).collect())
        };
        let soda = soda_c_by(&predictions, &truth, exact).unwrap();
        assert!((soda.precision - 1.5 / 3.0).abs() < 1e-6 && (soda.recall - 1.5 / 2.0).abs() < 1e-6, "{soda:?}");
        assert!((soda.f1 - 0.6).abs() < 1e-6, "{soda:?}");
    }

    /// Nothing predicted scores +0 (an empty `Sum` of f64 is -0.0, printed `-0.0000`); a reversed
    /// timestamp in a submission is refused with the video and the event named, one in the truth
    /// scored as densevid_eval scores it.
    #[test]
    fn empty_scores_are_positive_zeros_and_reversed_timestamps_are_refused() {
        let truth = read_truth(br#"{"v1": {"duration": 9, "timestamps": [[0, 5]], "sentences": ["a dog runs."]}}"#);
        let scores = evaluate(&BTreeMap::new(), &truth.unwrap(), None).unwrap();
        for s in &scores {
            for figure in [s.bleu_1, s.bleu_2, s.bleu_3, s.bleu_4, s.cider_d, s.precision, s.recall] {
                assert!(figure == 0.0 && figure.is_sign_positive(), "{s:?}");
            }
        }

        assert!(read_truth(br#"{"v1": {"timestamps": [[0, 5], [7, 6]], "sentences": ["a dog.", "a cat."]}}"#).is_ok());
        let submission = br#"{"results": {"v1": [{"sentence": "a dog.", "timestamp": [5, 0]}]}}"#;
        let err = read_predictions(submission).unwrap_err();
        assert!(err.starts_with("video v1, event 1 (`a dog.`): timestamp [5, 0] ends before it starts"), "{err}");
        let fine = br#"{"results": {"v1": [{"sentence": "a dog.", "timestamp": [-0.5, 0]}]}}"#;
        assert!(read_predictions(fine).is_ok(), "densevid_eval takes a start before the video");

        // A truth video without segments cannot be scored (densevid_eval divides by zero on it).
        let err = read_truth(br#"{"v1": {"timestamps": [], "sentences": []}}"#).unwrap_err();
        assert!(err.contains("video v1 has no segments"), "{err}");
        // The two files the wrong way round are said to be.
        let truth = br#"{"v1": {"timestamps": [[0, 5]], "sentences": ["a dog."]}}"#;
        assert!(read_predictions(truth).unwrap_err().ends_with("this is a truth file: the submission comes first"));
        assert!(read_truth(submission).unwrap_err().contains("a submission (with \"results\") comes first"));
    }

    /// A video given twice (two files merged by hand) is refused, named, where JSON would keep the
    /// last silently; a byte-order mark is passed over, and text that is not UTF-8 is said to be.
    #[test]
    fn videos_given_twice_are_refused_and_files_read_as_utf8() {
        let submission = br#"{"results": {"a": [{"sentence": "x.", "timestamp": [0, 1]}], "a": []}}"#;
        let err = read_predictions(submission).unwrap_err();
        assert!(err.starts_with("video `a` is given twice, and JSON keeps only the last"), "{err}");
        let truth = br#"{"b": {"timestamps": [[0, 5]], "sentences": ["x."]}, "b": {"timestamps": [[1, 2]], "sentences": ["y."]}}"#;
        let err = read_truth(truth).unwrap_err();
        assert!(err.starts_with("video `b` is given twice"), "{err}");

        let with_mark =
            [&b"\xef\xbb\xbf"[..], br#"{"v1": {"timestamps": [[0, 5]], "sentences": ["a dog."]}}"#].concat();
        assert_eq!(read_truth(&with_mark).unwrap().len(), 1);
        let utf16: Vec<u8> = [0xff, 0xfe].into_iter().chain("{}".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        let err = read_predictions(&utf16).unwrap_err();
        assert!(err.starts_with("not UTF-8 text (byte 0 is not)") && err.contains("iconv"), "{err}");
    }

    /// densevid_eval keeps a video's first 1000 predictions: a perfect one after 1000 misses
    /// counts for nothing. A truth video of more segments than any benchmark's is refused.
    #[test]
    fn predictions_past_the_first_thousand_are_not_scored() {
        let truth = read_truth(br#"{"v1": {"timestamps": [[0, 5]], "sentences": ["a dog runs."]}}"#).unwrap();
        let miss = Prediction { sentence: "a cat.".into(), timestamp: [8.0, 9.0] };
        let hit = Prediction { sentence: "a dog runs.".into(), timestamp: [0.0, 5.0] };
        let mut predicted = vec![miss; MAX_PROPOSALS];
        predicted.push(hit.clone());
        let scores = evaluate(&BTreeMap::from([("v1".to_string(), predicted)]), &truth, None).unwrap();
        assert_eq!((scores[4].recall, scores[4].precision), (0.0, 0.0), "{:?}", scores[4]);
        let scores = evaluate(&BTreeMap::from([("v1".to_string(), vec![hit])]), &truth, None).unwrap();
        assert_eq!(scores[4].recall, 1.0);

        let segments = vec![[0.0, 1.0]; MAX_TRUTH_SEGMENTS + 1];
        let sentences = vec!["a dog."; MAX_TRUTH_SEGMENTS + 1];
        let json = serde_json::json!({"v1": {"timestamps": segments, "sentences": sentences}});
        let err = read_truth(json.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("1001 segments, more than the 1000"), "{err}");
    }
}
