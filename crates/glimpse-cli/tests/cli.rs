//! The `glimpse` binary end to end on the parity fixtures: output formats as documented, results
//! equal to transformers', errors on stderr with a non-zero exit code.

use std::path::Path;
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

/// `models convert` writes a complete folder that the other commands load (f16 continuing as
/// transformers' f32 does), and refuses to overwrite weights or to convert what is not a model.
#[test]
fn converted_checkpoints_load_and_convert_refuses_what_it_cannot_do() {
    let dir = temp_dir("convert");
    let reference = Reference::load("gpt2-base");
    let source = fixture("gpt2-base").display().to_string();
    for dtype in ["f16", "q8"] {
        let out = dir.join(dtype).display().to_string();
        let converted = glimpse(&["models", "convert", &source, "--dtype", dtype, "--out", &out]);
        assert!(converted.status.success(), "{dtype}: {}", String::from_utf8_lossy(&converted.stderr));
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            assert!(dir.join(dtype).join(file).is_file(), "{dtype}: {file} missing");
        }
        let (prompt, expected) = (&reference.strings("prompts")[0], &reference.ids("greedy_ids")[0]);
        let n = expected.len().to_string();
        let args = ["--device", "cpu", "generate", "--model", &out, "--prompt", prompt, "--max-new-tokens", &n];
        let generated = json_stdout(&glimpse(&[&args[..], &["--format", "json"]].concat()));
        let ids: Vec<u32> = serde_json::from_value(generated["ids"].clone()).unwrap();
        if dtype == "f16" {
            assert_eq!(&ids, expected, "{dtype}");
        } else {
            assert_eq!(ids.len(), expected.len(), "{dtype}");
        }

        // A second conversion into the same folder would overwrite the weights: refused.
        let again = glimpse(&["models", "convert", &source, "--dtype", dtype, "--out", &out]);
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(!again.status.success() && stderr.contains("already holds config.json"), "{stderr}");
    }
    // So is a folder holding any file of a checkpoint: a stray preprocessor_config.json would
    // change what the converted model sees, and `models random` would mix its files with them.
    let stray = dir.join("stray");
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("preprocessor_config.json"), "{}").unwrap();
    let stray = stray.display().to_string();
    for args in [
        &["models", "convert", &source, "--dtype", "f16", "--out", &stray][..],
        &["models", "random", "gpt2-small", "--out", &stray],
    ] {
        let refused = glimpse(args);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && stderr.contains("already holds preprocessor_config.json"), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(&stray).unwrap().count(), 1, "nothing written beside it");
    let projector = dir.join("projector");
    let not_a_model = glimpse(&[
        "models",
        "convert",
        &fixture("images").display().to_string(),
        "--dtype",
        "q8",
        "--out",
        &projector.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&not_a_model.stderr);
    assert!(!not_a_model.status.success() && stderr.contains("config.json"), "{stderr}");
    assert!(!projector.join("model.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit() {
    let model = fixture("gpt2-lmhead").display().to_string();
    let video = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shapes.gif");
    let cases: [(&[&str], &str); 11] = [
        (&["generate", "--prompt", "x", "--decoding", "contrastive", "--k", "0"], "--k 0 must be at least 1"),
        (&["generate", "--prompt", "x", "--decoding", "beam", "--beams", "0"], "--beams 0 must be at least 1"),
        // Refused before the video is read: the embedded GPT-2 has 32 positions.
        (
            &["caption-video", video, "--max-tokens", "100"],
            "--max-tokens (100) need more than the 32 positions the model has (n_positions)",
        ),
        // Refused before the 14 s video is captioned.
        (&["caption-video", video, "--format", "chapters"], "this one lasts 14.0 s; use another format"),
        (&["train", "clip", "--out", "/tmp/never", "--batch-size", "1000"], "must be between 2 and 512"),
        (&["eval", "--fps", "0"], "--fps 0 must be in (0, 50]"),
        (&["world", "video", "--out", "/tmp/never.gif", "--size", "5"], "--size 5 must be between 16 and 2048"),
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

/// A two-scene animated GIF (1.5 s of each fixture image) in a fresh temporary folder.
fn two_scene_gif(name: &str) -> std::path::PathBuf {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame};
    let dir = std::env::temp_dir().join(format!("glimpse-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("clip.gif");
    let mut encoder = GifEncoder::new(std::fs::File::create(&path).unwrap());
    for image in ["rgb_45x38.png", "gray_64x64.png"] {
        let rgba = image::open(fixture("images").join(image)).unwrap().to_rgba8();
        encoder.encode_frame(Frame::from_parts(rgba, 0, 0, Delay::from_numer_denom_ms(1500, 1))).unwrap();
    }
    path
}

fn caption_video_args<'a>(video: &'a str, clip: &'a str, lm: &'a str, format: &'a str) -> Vec<&'a str> {
    vec![
        "--device",
        "cpu",
        "caption-video",
        video,
        "--clip",
        clip,
        "--lm",
        lm,
        "--events",
        "2",
        "--max-tokens",
        "3",
        "--steps-per-token",
        "2",
        "--top-k",
        "6",
        "--seed",
        "5",
        "--format",
        format,
    ]
}

#[test]
fn caption_video_json_is_well_formed_and_deterministic() {
    let gif = two_scene_gif("json");
    let (clip, lm) = (fixture("clip-a").display().to_string(), fixture("gpt2-lmhead").display().to_string());
    let args = caption_video_args(gif.to_str().unwrap(), &clip, &lm, "json");
    let first = json_stdout(&glimpse(&args));
    assert_eq!(first["duration"], 3.0);
    let events = first["events"].as_array().unwrap();
    assert!(!events.is_empty() && events.len() <= 2);
    let mut last_end = 0.0;
    for e in events {
        let (start, end) = (e["start"].as_f64().unwrap(), e["end"].as_f64().unwrap());
        assert!(last_end <= start && start < end && end <= 3.0, "{first}");
        assert!(e["caption"].is_string() && e["score"].is_number());
        last_end = end;
    }
    assert_eq!(json_stdout(&glimpse(&args)), first, "same seed, different result");
}

#[test]
fn caption_video_writes_subtitles_atomically() {
    let gif = two_scene_gif("srt");
    let out = gif.with_file_name("events.vtt");
    let (clip, lm) = (fixture("clip-a").display().to_string(), fixture("gpt2-lmhead").display().to_string());
    let mut args = caption_video_args(gif.to_str().unwrap(), &clip, &lm, "vtt");
    args.extend(["--out", out.to_str().unwrap()]);
    let run = glimpse(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.stdout.is_empty());
    let vtt = std::fs::read_to_string(&out).unwrap();
    assert!(vtt.starts_with("WEBVTT\n\n00:00:"), "{vtt}");

    // A failing run (a still image is not a video) leaves no file behind.
    let missing = gif.with_file_name("never.srt");
    let still = fixture("images").join("rgb_45x38.png");
    let mut args = caption_video_args(still.to_str().unwrap(), &clip, &lm, "srt");
    args.extend(["--out", missing.to_str().unwrap()]);
    let run = glimpse(&args);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("is a still image"));
    assert!(!missing.exists());
    let leftovers: Vec<_> = std::fs::read_dir(gif.parent().unwrap()).unwrap().filter_map(Result::ok).collect();
    assert_eq!(leftovers.len(), 2, "only the GIF and the VTT: {leftovers:?}");

    // A read-only result is not replaced (as a shell's `>` would not), said before any work.
    let mut read_only = std::fs::metadata(&out).unwrap().permissions();
    read_only.set_readonly(true);
    std::fs::set_permissions(&out, read_only).unwrap();
    let mut args = caption_video_args(gif.to_str().unwrap(), &clip, &lm, "srt");
    args.extend(["--out", out.to_str().unwrap()]);
    let run = glimpse(&args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("may not be replaced") && stderr.contains("read-only"),
        "{stderr}"
    );
    assert!(!stderr.contains(" frames at "), "refused before reading the video: {stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), vtt);
}

#[test]
fn caption_image_json_has_one_caption_per_image() {
    let (clip, lm) = (fixture("clip-b").display().to_string(), fixture("gpt2-base").display().to_string());
    let images: Vec<String> =
        ["rgb_45x38.png", "rgba_30x61.png"].iter().map(|f| fixture("images").join(f).display().to_string()).collect();
    let out = json_stdout(&glimpse(&[
        "--device",
        "cpu",
        "caption-image",
        &images[0],
        &images[1],
        "--clip",
        &clip,
        "--lm",
        &lm,
        "--max-tokens",
        "3",
        "--top-k",
        "5",
        "--format",
        "json",
    ]));
    let captions = out["captions"].as_array().unwrap();
    assert_eq!(captions.len(), 2);
    assert_eq!(captions[1]["image"], images[1].as_str());
    assert!(captions.iter().all(|c| c["caption"].is_string() && c["score"].as_f64().unwrap().abs() <= 1.0));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("glimpse-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// README's main job: a world video captioned by the embedded default, with no model arguments.
#[test]
fn world_video_is_captioned_by_the_embedded_default() {
    let dir = temp_dir("world");
    let gif = dir.join("scenes.gif");
    let made = glimpse(&["world", "video", "--seed", "4", "--out", gif.to_str().unwrap()]);
    let truth = json_stdout(&made);
    let on_disk: Value = serde_json::from_slice(&std::fs::read(gif.with_extension("json")).unwrap()).unwrap();
    assert_eq!(on_disk, truth);
    let events = truth["events"].as_array().unwrap().len();
    assert!((2..=5).contains(&events), "{truth}");
    // The hard world: crossfades, pans and shots of other lengths.
    let hard_gif = dir.join("hard.gif");
    let hard = json_stdout(&glimpse(&["world", "video", "--seed", "4", "--hard", "--out", hard_gif.to_str().unwrap()]));
    assert_ne!(std::fs::read(&hard_gif).unwrap(), std::fs::read(&gif).unwrap());
    assert_ne!(hard["events"], truth["events"], "--hard also varies the shots' lengths");

    // The default counts the events: one per scene that is not blank background.
    let out = json_stdout(&glimpse(&["--device", "cpu", "caption-video", gif.to_str().unwrap(), "--format", "json"]));
    let predicted = out["events"].as_array().unwrap();
    assert_eq!(predicted.len(), events, "{out}\ntruth: {truth}");
    for e in predicted {
        assert!(!e["caption"].as_str().unwrap().is_empty(), "{out}");
    }
    // A fixed count is kept (fewer only where two events would duplicate each other).
    let out = json_stdout(&glimpse(&[
        "--device",
        "cpu",
        "caption-video",
        gif.to_str().unwrap(),
        "--events",
        "1",
        "--format",
        "json",
    ]));
    assert_eq!(out["events"].as_array().unwrap().len(), 1, "{out}");
    let bad = glimpse(&["caption-video", gif.to_str().unwrap(), "--events", "some"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("neither a count nor `auto`"));
}

/// `glimpse find` puts each described scene of a world video where the truth has it, and a video
/// that shows nothing gets no events.
#[test]
fn find_locates_described_scenes_and_blank_videos_have_no_events() {
    let dir = temp_dir("find");
    let gif = dir.join("scenes.gif");
    let truth = json_stdout(&glimpse(&["world", "video", "--seed", "7", "--out", gif.to_str().unwrap()]));
    let truth = truth["events"].as_array().unwrap();
    let mut args = vec!["--device", "cpu", "find", gif.to_str().unwrap(), "--top", "2", "--format", "json"];
    args.extend(truth.iter().map(|e| e["caption"].as_str().unwrap()));
    let out = json_stdout(&glimpse(&args));
    let answers = out["queries"].as_array().unwrap();
    assert_eq!(answers.len(), truth.len(), "{out}");
    for (answer, event) in answers.iter().zip(truth) {
        assert_eq!(answer["query"], event["caption"]);
        let moments = answer["moments"].as_array().unwrap();
        assert_eq!(moments.len(), 2, "{answer}");
        let span = |v: &Value| (v["start"].as_f64().unwrap(), v["end"].as_f64().unwrap());
        let ((s, e), (ts, te)) = (span(&moments[0]), span(event));
        let iou = (e.min(te) - s.max(ts)).max(0.0) / (e.max(te) - s.min(ts));
        assert!(iou >= 0.5, "{event} found at {s}-{e}");
        assert!(moments[0]["score"].as_f64() >= moments[1]["score"].as_f64(), "{answer}");
        let (s2, e2) = span(&moments[1]);
        assert!(e2 <= s || e <= s2, "the two moments overlap: {answer}");
    }
    // `--out -` and `--out /dev/stdout` are the standard output: here a file appended to (`>> log`),
    // which must keep what it held rather than be replaced.
    let log = dir.join("log.jsonl");
    std::fs::write(&log, "previous\n").unwrap();
    for out in ["-", "/dev/stdout"] {
        let appended = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .args(["--device", "cpu", "find", gif.to_str().unwrap(), "a scene", "--format", "json", "--out", out])
            .stdout(appended)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "--out {out}");
    }
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], "previous");
    for line in &lines[1..] {
        assert_eq!(serde_json::from_str::<Value>(line).unwrap()["queries"][0]["query"], "a scene");
    }
    // A link to a pipe (`/dev/stderr`, here the test's pipe) is written into as it is.
    let piped = glimpse(&[
        "--device",
        "cpu",
        "find",
        gif.to_str().unwrap(),
        "a scene",
        "--format",
        "json",
        "--out",
        "/dev/stderr",
    ]);
    assert!(
        piped.status.success() && String::from_utf8_lossy(&piped.stderr).contains("\"query\":\"a scene\""),
        "{piped:?}"
    );
    let empty = glimpse(&["--device", "cpu", "find", gif.to_str().unwrap(), " "]);
    assert!(String::from_utf8_lossy(&empty.stderr).contains("query 1 is empty"), "{empty:?}");
    // A moment is scored against the rest of the video: none as long as the video.
    let whole = glimpse(&["--device", "cpu", "find", gif.to_str().unwrap(), "a scene", "--min-seconds", "100"]);
    let said = String::from_utf8_lossy(&whole.stderr);
    assert!(
        !whole.status.success() && said.contains("the shortest moment asked for (100 s) is as long as the video"),
        "{said}"
    );
    // Nor when the frames sampled leave none outside it (a moment took the whole video, scored 0).
    let args = ["--device", "cpu", "find", gif.to_str().unwrap(), "a scene", "--fps", "0.1", "--min-seconds", "8"];
    let sparse = glimpse(&args);
    let said = String::from_utf8_lossy(&sparse.stderr);
    assert!(!sparse.status.success() && said.contains("too few for a moment of at least 8 s"), "{said}");

    let frames = dir.join("blank");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..8 {
        image::RgbImage::from_pixel(64, 48, image::Rgb([20, 20, 24])).save(frames.join(format!("{i}.png"))).unwrap();
    }
    let out = glimpse(&["--device", "cpu", "caption-video", frames.to_str().unwrap(), "--format", "json"]);
    assert_eq!(json_stdout(&out)["events"], serde_json::json!([]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every scene of the video is blank"));
    let kept =
        glimpse(&["--device", "cpu", "caption-video", frames.to_str().unwrap(), "--keep-blank", "--format", "json"]);
    assert_eq!(json_stdout(&kept)["events"].as_array().unwrap().len(), 1, "one still scene, captioned");
    // Nothing to find in a blank video, with refinement asked for too: no moment, and a word why.
    let blank = frames.to_str().unwrap();
    let found =
        glimpse(&["--device", "cpu", "find", blank, "red triangles", "--refine-steps", "2", "--format", "json"]);
    assert_eq!(json_stdout(&found)["queries"][0]["moments"], serde_json::json!([]));
    assert!(String::from_utf8_lossy(&found.stderr).contains("no moment for \"red triangles\""), "{found:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `glimpse train` writes a loadable checkpoint, and a second run continues where the first stopped.
#[test]
fn training_checkpoints_resume() {
    let dir = temp_dir("train");
    let out = dir.join("lm");
    let out_arg = out.to_str().unwrap();
    let train = |steps: &str| {
        glimpse(&[
            "--device",
            "cpu",
            "train",
            "lm",
            "--out",
            out_arg,
            "--steps",
            steps,
            "--checkpoint-every",
            "2",
            "--batch-size",
            "8",
        ])
    };
    let first = train("4");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let state = |path: &std::path::Path| -> Value {
        serde_json::from_slice(&std::fs::read(path.join("train_state.json")).unwrap()).unwrap()
    };
    assert_eq!(state(&out)["step"], 4);
    assert_eq!(state(&out)["losses"].as_array().unwrap().len(), 2);

    let second = train("6");
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("from step 4"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_eq!(state(&out)["step"], 6);
    assert_eq!(state(&out)["losses"].as_array().unwrap().len(), 3);
    let generated = json_stdout(&glimpse(&[
        "--device",
        "cpu",
        "generate",
        "--model",
        out_arg,
        "--prompt",
        "video showing",
        "--max-new-tokens",
        "3",
        "--format",
        "json",
    ]));
    assert_eq!(generated["ids"].as_array().unwrap().len(), 3);

    // A CLIP run refuses to resume an LM's folder.
    let clash = glimpse(&["--device", "cpu", "train", "clip", "--out", out_arg, "--steps", "1"]);
    assert!(!clash.status.success());
    assert!(String::from_utf8_lossy(&clash.stderr).contains("holds a `lm` run"));
    // Resumed with other settings: refused, by name.
    let args = ["--device", "cpu", "train", "lm", "--out", out_arg, "--steps", "8", "--batch-size", "16"];
    let said = String::from_utf8_lossy(&glimpse(&args).stderr).to_string();
    assert!(said.contains("holds a run started with other settings (batch_size: 8 -> 16)"), "{said}");
    // Fewer steps than done is said so, by folder and step.
    let fewer = train("3");
    assert!(String::from_utf8_lossy(&fewer.stderr).contains("is at step 6 already: --steps 3 is fewer"), "{fewer:?}");

    // Before any step: a file as --out, and a model of its own (no state) that training would
    // replace unasked.
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let args = ["--device", "cpu", "train", "lm", "--out", file.to_str().unwrap(), "--steps", "2"];
    let said = String::from_utf8_lossy(&glimpse(&args).stderr).to_string();
    assert!(said.contains("is a file; name a folder"), "{said}");
    std::fs::remove_file(out.join("train_state.json")).unwrap();
    let weights = std::fs::read(out.join("model.safetensors")).unwrap();
    let said = String::from_utf8_lossy(&train("8").stderr).to_string();
    assert!(said.contains("holds a model.safetensors but no train_state.json"), "{said}");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), weights);
}

/// A projector trained twice with one seed is the same file (initial weights follow the seed as
/// the examples do); another seed gives another.
#[test]
fn projector_training_is_reproducible_by_seed() {
    let dir = temp_dir("projector-seed");
    let train = |name: &str, seed: &str| {
        let out = dir.join(name);
        let args = ["--device", "cpu", "train", "projector", "--examples", "16", "--epochs", "1", "--seed", seed];
        let run = glimpse(&[&args[..], &["--out", out.to_str().unwrap()]].concat());
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read(out).unwrap()
    };
    let first = train("a.safetensors", "5");
    assert_eq!(first, train("b.safetensors", "5"));
    assert_ne!(first, train("c.safetensors", "6"));
    // Never written over a model it reads.
    let lm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/world-gpt2");
    let over = lm.join("model.safetensors");
    let args = ["--device", "cpu", "train", "projector", "--lm", lm.to_str().unwrap(), "--out", over.to_str().unwrap()];
    let said = String::from_utf8_lossy(&glimpse(&args).stderr).to_string();
    assert!(said.contains("would write over the input"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Hub ids: fetched once into the cache (`glimpse models`), then used offline.
#[test]
fn hub_models_are_fetched_listed_used_offline_and_removed() {
    use glimpse_tests::hub_server::{Fault, HubServer};
    let server = HubServer::start();
    server.add("test/gpt2", &fixture("gpt2-lmhead"), Fault::None);
    let cache = temp_dir("hub-cache");
    let run = |offline: bool, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .args(args)
            .env("HF_ENDPOINT", &server.endpoint)
            .env("HF_HUB_CACHE", &cache)
            .env("HF_HUB_OFFLINE", if offline { "1" } else { "0" })
            .env_remove("HF_TOKEN")
            .output()
            .unwrap()
    };
    let fetched = run(false, &["models", "fetch", "test/gpt2"]);
    assert!(fetched.status.success(), "{}", String::from_utf8_lossy(&fetched.stderr));
    let generate = [
        "--device",
        "cpu",
        "generate",
        "--model",
        "test/gpt2",
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
        "--format",
        "json",
    ];
    let online = json_stdout(&run(false, &generate));
    server.take_log();
    let offline = json_stdout(&run(true, &generate));
    assert_eq!(offline, online);
    assert!(server.take_log().is_empty(), "offline mode made requests");
    // A repository id converts as a folder does (from the cache here).
    let converted = temp_dir("hub-converted").join("gpt2-f16");
    let convert =
        run(true, &["models", "convert", "test/gpt2", "--dtype", "f16", "--out", converted.to_str().unwrap()]);
    assert!(convert.status.success(), "{}", String::from_utf8_lossy(&convert.stderr));
    let from_f16 = [&generate[..4], &[converted.to_str().unwrap()], &generate[5..]].concat();
    assert_eq!(json_stdout(&run(true, &from_f16))["ids"], online["ids"]);

    let listed = json_stdout(&run(false, &["models", "list", "--format", "json"]));
    assert_eq!(listed["models"][0]["repo"], "test/gpt2");
    assert!(run(false, &["models", "rm", "test/gpt2"]).status.success());
    let gone = run(true, &generate);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("glimpse models fetch test/gpt2"));
    let bad = run(false, &["generate", "--model", "not a repo", "--prompt", "x"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nor a hub repository id"));
    // A download floor that is no number is refused, not replaced by the default.
    let floor = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["models", "list"])
        .env("HF_HUB_CACHE", &cache)
        .env("GLIMPSE_DOWNLOAD_MIN_SPEED", "fast")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&floor.stderr);
    assert!(
        !floor.status.success() && said.contains("GLIMPSE_DOWNLOAD_MIN_SPEED=fast is not a whole number"),
        "{said}"
    );
}

/// Chapters of a 45 s video of three 15 s scenes (a folder of frames): YouTube's rules hold,
/// one chapter per scene; the 14 s sample video makes none and says why.
#[test]
fn chapters_follow_youtubes_rules_or_say_why_not() {
    let dir = temp_dir("chapters");
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for (scene, seed) in [3, 8, 13].iter().enumerate() {
        let image = dir.join(format!("scene{scene}.png"));
        let out = glimpse(&["world", "image", "--seed", &seed.to_string(), "--out", image.to_str().unwrap()]);
        assert!(out.status.success());
        for i in 0..30 {
            std::fs::copy(&image, frames.join(format!("{:03}.png", scene * 30 + i))).unwrap();
        }
    }
    let out = glimpse(&["--device", "cpu", "caption-video", frames.to_str().unwrap(), "--format", "chapters"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let starts: Vec<u64> = text
        .lines()
        .map(|line| {
            let (clock, title) = line.split_once(' ').unwrap();
            assert!(!title.is_empty() && !title.ends_with('.'), "{line}");
            let (m, s) = clock.split_once(':').unwrap();
            m.parse::<u64>().unwrap() * 60 + s.parse::<u64>().unwrap()
        })
        .collect();
    assert!(starts.len() >= 3 && starts[0] == 0, "{text}");
    assert!(starts.windows(2).all(|w| w[1] >= w[0] + 10) && *starts.last().unwrap() + 10 <= 45, "{text}");

    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shapes.gif");
    let short = glimpse(&["--device", "cpu", "caption-video", sample.to_str().unwrap(), "--format", "chapters"]);
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 3 chapters of 10 s"));
    // Long enough, but one scene: one event is no set of chapters, said of the video.
    let still = dir.join("still");
    std::fs::create_dir_all(&still).unwrap();
    // 40 s at 2 fps.
    for i in 0..80 {
        std::fs::copy(dir.join("scene0.png"), still.join(format!("{i:03}.png"))).unwrap();
    }
    let one = glimpse(&["--device", "cpu", "caption-video", still.to_str().unwrap(), "--format", "chapters"]);
    let said = String::from_utf8_lossy(&one.stderr);
    assert!(!one.status.success() && said.contains(&format!("{}: --format chapters: ", still.display())), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An `--out` that names an input (the file itself, a link to it) or a file inside an input folder
/// is refused before any work, and the input is left as it was; a new file in an input folder is
/// written. So is a world video's `--out` that would be its own truth file, or whose truth file
/// cannot be written: neither file is made.
#[cfg(unix)]
#[test]
fn outputs_never_replace_inputs() {
    let dir = std::env::temp_dir().join(format!("glimpse-cli-over-inputs-{}", std::process::id()));
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let video = dir.join("video.gif");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shapes.gif"), &video).unwrap();
    std::os::unix::fs::symlink("video.gif", dir.join("link.gif")).unwrap();
    let image = dir.join("frames/0001.png");
    std::fs::copy(fixture("images").join("rgb_45x38.png"), &image).unwrap();
    let (video_bytes, image_bytes) = (std::fs::read(&video).unwrap(), std::fs::read(&image).unwrap());
    let [video, link, image, frames] =
        [&video, &dir.join("link.gif"), &image, &frames].map(|path| path.display().to_string());
    let inside = format!("{frames}/captions.json");
    for args in [
        &["caption-video", &video, "--out", &video][..],
        &["caption-video", &video, "--out", &link],
        &["caption-video", &frames, "--out", &image],
        &["find", &video, "a red circle", "--out", &video],
        &["caption-image", &image, "--out", &image],
    ] {
        let out = glimpse(&[&["--device", "cpu"][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("would write over the input"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(&video).unwrap(), video_bytes);
    assert_eq!(std::fs::read(&image).unwrap(), image_bytes);
    // A folder no file can be made in (even by root) is said before the work, not after it.
    let out = glimpse(&["--device", "cpu", "caption-video", &video, "--out", "/proc/captions.json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cannot write in /proc"), "{stderr}");
    assert!(!stderr.contains("frames at"), "refused before the video was read: {stderr}");
    let beside = glimpse(&["--device", "cpu", "caption-video", &frames, "--max-tokens", "1", "--out", &inside]);
    assert!(
        beside.status.success() && std::path::Path::new(&inside).is_file(),
        "{}",
        String::from_utf8_lossy(&beside.stderr)
    );

    let truth_dir = dir.join("taken.json");
    std::fs::create_dir_all(&truth_dir).unwrap();
    for (out, message) in [("world.json", "must name a .gif file"), ("taken.gif", "is a folder")] {
        let out = dir.join(out).display().to_string();
        let made = glimpse(&["world", "video", "--seed", "1", "--out", &out]);
        let stderr = String::from_utf8_lossy(&made.stderr);
        assert!(!made.status.success() && stderr.contains(message), "{out}: {stderr}");
    }
    assert!(!dir.join("world.json").exists() && !dir.join("taken.gif").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
