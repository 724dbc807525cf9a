//! `glimpse score` against pycocoevalcap: the densevid_eval protocol and its PTB tokenisation on
//! the fixture made by `tests/fixtures/densevid/make_reference.py` (pycocoevalcap 1.2 with its
//! Java tokenizer). Tolerance 1e-9: the same arithmetic, summed in another order.

use glimpse_tests::fixture;
use glimpse_world::densevid::{evaluate, read_predictions, read_truth};
use glimpse_world::metrics::tokenize;
use serde_json::Value;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixture("densevid").join(name)).unwrap()
}

#[test]
fn tokens_are_those_of_the_java_ptb_tokenizer() {
    let reference: Value = serde_json::from_slice(&read("reference.json")).unwrap();
    for case in reference["tokenizer"].as_array().unwrap() {
        let expected: Vec<&str> = case["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(tokenize(case["text"].as_str().unwrap()), expected, "{}", case["text"]);
    }
}

#[test]
fn scores_are_densevid_evals_with_pycocoevalcaps_scorers() {
    let predictions = read_predictions(&read("results.json")).unwrap();
    let truth = read_truth(&read("truth.json")).unwrap();
    let scores = serde_json::to_value(evaluate(&predictions, &truth)).unwrap();
    let reference: Value = serde_json::from_slice(&read("reference.json")).unwrap();
    let expected = reference["scores"].as_array().unwrap();
    assert_eq!(scores.as_array().unwrap().len(), expected.len());
    for (ours, row) in scores.as_array().unwrap().iter().zip(expected) {
        for (metric, value) in row.as_object().unwrap() {
            let (ours, theirs) = (ours[metric].as_f64().unwrap(), value.as_f64().unwrap());
            assert!((ours - theirs).abs() <= 1e-9, "{metric} at {}: {ours} against {theirs}", row["threshold"]);
        }
    }
}

#[test]
fn malformed_files_are_refused_with_the_layout_named() {
    assert!(read_predictions(b"{\"v\": []}").unwrap_err().contains("expected {\"results\""));
    assert!(read_truth(b"[]").unwrap_err().contains("ActivityNet Captions layout"));
    let uneven = br#"{"v": {"timestamps": [[0, 1], [1, 2]], "sentences": ["one"]}}"#;
    assert_eq!(read_truth(uneven).unwrap_err(), "video v has 2 segments but 1 sentences");
}
