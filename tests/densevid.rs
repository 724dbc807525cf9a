//! `glimpse score` against pycocoevalcap: the densevid_eval protocol and its PTB tokenisation on
//! the fixture made by `tests/fixtures/densevid/make_reference.py` (pycocoevalcap 1.2 with its
//! Java tokenizer). Tolerance 1e-9: the same arithmetic, summed in another order.
//!
//! METEOR and SODA_c run METEOR 1.5 in Java: the test that checks them needs `java` and
//! `GLIMPSE_METEOR_JAR` (pycocoevalcap's `meteor/meteor-1.5.jar`); without them it says so and
//! stops, and `GLIMPSE_TEST_METEOR=require` (set in CI) makes that a failure.

use std::io::Write;
use std::path::PathBuf;

use glimpse_tests::fixture;
use glimpse_world::densevid::{evaluate, read_predictions, read_truth, soda_c};
use glimpse_world::meteor::Meteor;
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
    let scores = serde_json::to_value(evaluate(&predictions, &truth, None).unwrap()).unwrap();
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

/// METEOR 1.5's jar from `GLIMPSE_METEOR_JAR`, or `None` after saying why there is none.
fn meteor_jar() -> Option<PathBuf> {
    let jar = std::env::var_os("GLIMPSE_METEOR_JAR").map(PathBuf::from).filter(|jar| jar.is_file());
    if jar.is_none() {
        let required = std::env::var("GLIMPSE_TEST_METEOR").as_deref() == Ok("require");
        assert!(!required, "GLIMPSE_TEST_METEOR=require but GLIMPSE_METEOR_JAR names no file");
        // Past the harness's capture of a passing test's output: a skip must be seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: METEOR and SODA_c against pycocoevalcap: set GLIMPSE_METEOR_JAR to METEOR 1.5's jar (pip install pycocoevalcap; needs Java)"
        );
    }
    jar
}

#[test]
fn meteor_and_soda_are_pycocoevalcaps() {
    let Some(jar) = meteor_jar() else { return };
    let mut meteor = Meteor::start(&jar).unwrap();
    let predictions = read_predictions(&read("results.json")).unwrap();
    let truth = read_truth(&read("truth.json")).unwrap();
    let reference: Value = serde_json::from_slice(&read("reference.json")).unwrap();
    let scores = evaluate(&predictions, &truth, Some(&mut meteor)).unwrap();
    let expected = reference["meteor"].as_array().unwrap();
    assert_eq!(scores.len(), expected.len());
    for (ours, theirs) in scores.iter().zip(expected) {
        let (ours, theirs) = (ours.meteor.unwrap(), theirs.as_f64().unwrap());
        assert!((ours - theirs).abs() <= 1e-9, "METEOR at {:?}: {ours} against {theirs}", scores[0].threshold);
    }
    let soda = serde_json::to_value(soda_c(&predictions, &truth, &mut meteor).unwrap()).unwrap();
    for figure in ["precision", "recall", "f1"] {
        let (ours, theirs) = (soda[figure].as_f64().unwrap(), reference["soda_c"][figure].as_f64().unwrap());
        assert!((ours - theirs).abs() <= 1e-9, "SODA_c {figure}: {ours} against {theirs}");
    }
    // METEOR stops cleanly, and a jar that is not there is refused with its name.
    drop(meteor);
    let missing = Meteor::start(std::path::Path::new("/nonexistent/meteor-1.5.jar")).err().unwrap();
    assert!(missing.to_string().contains("/nonexistent/meteor-1.5.jar"), "{missing}");
}

#[test]
fn malformed_files_are_refused_with_the_layout_named() {
    assert!(read_predictions(b"{\"v\": []}").unwrap_err().contains("expected {\"results\""));
    assert!(read_truth(b"[]").unwrap_err().contains("ActivityNet Captions layout"));
    let uneven = br#"{"v": {"timestamps": [[0, 1], [1, 2]], "sentences": ["one"]}}"#;
    assert_eq!(read_truth(uneven).unwrap_err(), "video v has 2 segments but 1 sentences");
}
