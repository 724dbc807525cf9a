//! The `glimpse` binary end to end on the parity fixtures: output formats as documented, results
//! equal to transformers', errors on stderr with a non-zero exit code.

use std::process::{Command, Output};

use glimpse_tests::{Reference, fixture, max_abs_diff};
use serde_json::Value;

fn glimpse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glimpse")).args(args).output().expect("glimpse runs")
}

fn json_stdout(out: &Output) -> Value {
    assert!(out.status.success(), "glimpse failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn flat(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
        .collect()
}

#[test]
fn embed_json_matches_transformers() {
    let reference = Reference::load("clip-a");
    let mut args = vec!["--device".to_string(), "cpu".into(), "embed".into(), "--format".into(), "json".into()];
    args.extend(["--model".into(), fixture("clip-a").display().to_string()]);
    for text in reference.strings("texts") {
        args.extend(["--text".into(), text]);
    }
    for image in reference.strings("images") {
        args.extend(["--image".into(), fixture("images").join(image).display().to_string()]);
    }
    let out = json_stdout(&glimpse(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    for key in ["text_embeds", "image_embeds", "logits_per_image"] {
        let err = max_abs_diff(&flat(&out[key]), &reference.tensor(key).1);
        assert!(err <= 1e-4, "{key} differs by {err}");
    }
}

#[test]
fn embed_gives_only_what_was_asked() {
    let model = fixture("clip-b").display().to_string();
    let out = json_stdout(&glimpse(&[
        "--device",
        "cpu",
        "embed",
        "--model",
        &model,
        "--text",
        "a red circle",
        "--format",
        "json",
    ]));
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text_embeds"]);
    let norm: f32 = flat(&out["text_embeds"]).iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "embedding norm {norm}");
}

#[test]
fn generate_json_matches_transformers_greedy() {
    let reference = Reference::load("gpt2-base");
    let model = fixture("gpt2-base").display().to_string();
    for (prompt, expected) in reference.strings("prompts").iter().zip(reference.ids("greedy_ids")) {
        let n = expected.len().to_string();
        let out = json_stdout(&glimpse(&[
            "--device",
            "cpu",
            "generate",
            "--model",
            &model,
            "--prompt",
            prompt,
            "--max-new-tokens",
            &n,
            "--format",
            "json",
        ]));
        let ids: Vec<u32> = serde_json::from_value(out["ids"].clone()).unwrap();
        assert_eq!(ids, expected, "{prompt:?}");
        assert!(out["text"].is_string());
    }
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let model = fixture("gpt2-lmhead").display().to_string();
    let cases: [(&[&str], &str); 4] = [
        (&["generate", "--model", "/no/such/dir", "--prompt", "x"], "is not a directory"),
        (&["generate", "--model", &model, "--prompt", "x", "--max-new-tokens", "500"], "only 48 (n_positions)"),
        (&["embed", "--model", &model, "--text", "x"], "a CLIP checkpoint"),
        (&["embed", "--model", &model], "give at least one --text or --image"),
    ];
    for (args, message) in cases {
        let out = glimpse(&[&["--device", "cpu"][..], args].concat());
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
