//! The bad-input catalogue: each case builds a malformed or hostile input on the fly, runs the
//! `glimpse` binary on it under a cap on its address space, and checks that it fails the way a
//! user needs: a non-zero exit, one message on stderr naming the input, no panic, no allocation
//! abort, and no output file left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Address space each run may use. The CPU backend, the embedded default, mimalloc's arenas and
/// the thread pool fit with room to spare; a decoder that believes a header's 65535x65535 canvas
/// (17 GB) does not.
const ADDRESS_SPACE_KIB: u64 = 4 << 20;

/// A scratch folder for one case, removed when the case ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(case: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glimpse-catalogue-{case}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Every file in the folder, for checking that a failed run wrote nothing.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `glimpse --device cpu ARGS` with its address space capped at [`ADDRESS_SPACE_KIB`].
fn glimpse_limited(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" --device cpu \"$@\""))
        .arg(env!("CARGO_BIN_EXE_glimpse"))
        .args(args)
        .output()
        .expect("sh runs")
}

/// Runs a case and checks that it was refused properly: exit status 1 (0 is success, 101 a panic,
/// signals an abort), every `names` on stderr, and nothing written into `scratch` beyond `before`.
#[track_caller]
fn assert_refused(case: &str, scratch: &Scratch, args: &[&str], names: &[&str]) -> String {
    let before = scratch.listing();
    let out = glimpse_limited(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{case}: expected exit 1, got {:?}; stderr:\n{stderr}", out.status);
    for bad in ["panicked", "memory allocation of", "RUST_BACKTRACE"] {
        assert!(!stderr.contains(bad), "{case}: stderr mentions `{bad}`:\n{stderr}");
    }
    assert!(stderr.contains("error:"), "{case}: no error line:\n{stderr}");
    for name in names {
        assert!(stderr.contains(name), "{case}: stderr does not name `{name}`:\n{stderr}");
    }
    assert_eq!(scratch.listing(), before, "{case}: the failed run left files behind");
    stderr
}

/// A GIF of one `width x height` frame whose logical screen claims `screen` pixels square.
fn gif_with_screen(screen: u16, width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(screen.to_le_bytes());
    gif.extend(screen.to_le_bytes());
    gif.extend([0x80, 0, 0]); // a global colour table of 2 entries
    gif.extend([0, 0, 0, 255, 255, 255]);
    // Netscape looping extension: an animation, as an animated GIF declares itself.
    gif.extend(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00");
    gif.extend([0x21, 0xf9, 4, 0, 10, 0, 0, 0]); // graphic control: 100 ms
    gif.extend([0x2c, 0, 0, 0, 0]);
    gif.extend(width.to_le_bytes());
    gif.extend(height.to_le_bytes());
    gif.extend([0, 2, 2, 0x4c, 0x01, 0, 0x3b]); // a tiny LZW body (one pixel), then the trailer
    gif
}

/// An animated WebP (VP8X with the animation flag) whose canvas claims `side` pixels square and
/// whose only frame is empty.
fn webp_with_canvas(side: u32) -> Vec<u8> {
    let mut vp8x = vec![0x02, 0, 0, 0]; // animation flag
    vp8x.extend(&(side - 1).to_le_bytes()[..3]);
    vp8x.extend(&(side - 1).to_le_bytes()[..3]);
    let anim = vec![0, 0, 0, 0, 0, 0]; // background colour, loop count
    let mut body = b"WEBP".to_vec();
    for (tag, data) in [(b"VP8X", vp8x), (b"ANIM", anim)] {
        body.extend(tag);
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(&data);
    }
    let mut webp = b"RIFF".to_vec();
    webp.extend((body.len() as u32).to_le_bytes());
    webp.extend(body);
    webp
}

#[test]
fn animations_that_claim_huge_canvases() {
    let scratch = Scratch::new("canvas");
    let gif = scratch.write("screen.gif", &gif_with_screen(65535, 1, 1));
    let webp = scratch.write("canvas.webp", &webp_with_canvas(65_535));
    for video in [&gif, &webp] {
        let video = video.to_str().unwrap();
        assert_refused("huge canvas", &scratch, &["caption-video", video], &[video]);
    }
}

#[test]
fn files_that_are_not_regular_files() {
    let scratch = Scratch::new("special");
    let fifo = scratch.path("pipe.mp4");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let fifo = fifo.to_str().unwrap();
    assert_refused("fifo as video", &scratch, &["caption-video", fifo], &[fifo, "not a regular file"]);
    assert_refused("fifo as image", &scratch, &["caption-image", fifo], &[fifo, "not a regular file"]);
    assert_refused("device as image", &scratch, &["embed", "--image", "/dev/zero"], &["/dev/zero"]);
}

#[test]
fn truncated_and_garbage_media() {
    let scratch = Scratch::new("garbage");
    let gif = gif_with_screen(8, 8, 8);
    let cut = scratch.write("cut.gif", &gif[..gif.len() / 2]);
    let text = scratch.write("notes.gif", b"GIF89a but then nothing of the sort");
    let empty = scratch.write("empty.webp", b"");
    for video in [&cut, &text, &empty] {
        let video = video.to_str().unwrap();
        assert_refused("garbage video", &scratch, &["caption-video", video], &[video]);
    }
    let frames = scratch.path("frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("000.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let frames_arg = frames.to_str().unwrap();
    assert_refused("bad frame in a folder", &scratch, &["caption-video", frames_arg], &["000.png"]);

    // A JPEG cut short decodes without complaint (the rest comes out grey) unless its end is
    // looked for: as an image and as a frame.
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x ^ y) * 7) as u8]))
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    let cut = scratch.write("cut.jpg", &jpeg[..jpeg.len() * 2 / 3]);
    let cut = cut.to_str().unwrap();
    assert_refused("cut JPEG", &scratch, &["caption-image", cut], &[cut, "cut short"]);
    let frames = scratch.path("jpeg-frames");
    std::fs::create_dir(&frames).unwrap();
    std::fs::write(frames.join("000.jpg"), &jpeg).unwrap();
    std::fs::write(frames.join("001.jpg"), &jpeg[..jpeg.len() - 2]).unwrap();
    assert_refused("cut JPEG frame", &scratch, &["caption-video", frames.to_str().unwrap()], &["001.jpg", "cut short"]);
}

/// Failed runs leave no output file: `--out` is written only once the result is complete.
#[test]
fn failed_runs_write_no_output() {
    let scratch = Scratch::new("no-output");
    let video = scratch.write("bad.gif", b"GIF89a");
    let out = scratch.path("result.json");
    let (video, out_arg) = (video.to_str().unwrap(), out.to_str().unwrap());
    assert_refused("bad video with --out", &scratch, &["caption-video", video, "--out", out_arg], &[video]);
    assert!(!out.exists());
}

/// Paths that must exist for the harness to mean anything.
#[test]
fn the_harness_accepts_a_good_run() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shapes.gif");
    let out =
        glimpse_limited(&["caption-video", examples.to_str().unwrap(), "--max-tokens", "2", "--steps-per-token", "1"]);
    assert!(out.status.success(), "a good run fails under the cap:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// A copy of the fixture model `fixture` as `scratch/name`, with `edit` applied to its files.
fn model_copy(scratch: &Scratch, fixture: &str, name: &str, edit: impl FnOnce(&Path)) -> String {
    let dir = scratch.path(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(glimpse_tests::fixture(fixture)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    edit(&dir);
    dir.to_str().unwrap().to_string()
}

/// Rewrites the JSON file `path` through `edit`.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

fn fixture_arg(name: &str) -> String {
    glimpse_tests::fixture(name).to_str().unwrap().to_string()
}

fn image_arg() -> String {
    glimpse_tests::fixture("images").join("rgb_45x38.png").to_str().unwrap().to_string()
}

/// Special token ids beyond `vocab_size` made Burn's gather panic in the captioning commands.
#[test]
fn gpt2_special_tokens_outside_the_vocabulary() {
    let scratch = Scratch::new("gpt2-ids");
    let (clip, image) = (fixture_arg("clip-a"), image_arg());
    for field in ["eos_token_id", "bos_token_id", "pad_token_id"] {
        let lm = model_copy(&scratch, "gpt2-lmhead", field, |dir| {
            edit_json(&dir.join("config.json"), |c| c[field] = 421.into());
        });
        let names = [lm.as_str(), field, "outside the vocabulary"];
        assert_refused(field, &scratch, &["caption-image", &image, "--clip", &clip, "--lm", &lm], &names);
        assert_refused(field, &scratch, &["generate", "--model", &lm, "--prompt", "a"], &names);
    }
}

#[test]
fn tokenizers_that_do_not_fit_the_model() {
    let scratch = Scratch::new("tokenizer-fit");
    let lm = model_copy(&scratch, "gpt2-lmhead", "lm", |dir| {
        edit_json(&dir.join("tokenizer.json"), |t| {
            let mut extra = t["added_tokens"][0].clone();
            extra["id"] = 500.into();
            extra["content"] = "<|extra|>".into();
            t["added_tokens"].as_array_mut().unwrap().push(extra);
        });
    });
    // The crate numbers an added token after the vocabulary, whatever id the file gives it.
    let names = [lm.as_str(), "tokenizer.json", "token id 421"];
    assert_refused("gpt2 tokenizer too large", &scratch, &["generate", "--model", &lm, "--prompt", "a"], &names);

    let small_vocab = model_copy(&scratch, "clip-a", "clip-vocab", |dir| {
        edit_json(&dir.join("config.json"), |c| c["text_config"]["vocab_size"] = 300.into());
    });
    let names = [small_vocab.as_str(), "tokenizer.json", "token id 401"];
    assert_refused("clip tokenizer too large", &scratch, &["embed", "--model", &small_vocab, "--text", "a"], &names);

    // The post-processor adds a start and an end token: a context of 2 holds no text.
    let short = model_copy(&scratch, "clip-a", "clip-context", |dir| {
        edit_json(&dir.join("config.json"), |c| c["text_config"]["max_position_embeddings"] = 2.into());
    });
    let names = [short.as_str(), "adds 2 special tokens"];
    assert_refused("clip context too short", &scratch, &["embed", "--model", &short, "--text", "a"], &names);
}

/// An empty `Precompiled` charsmap panics inside the tokenizers crate while loading, and one with
/// an empty trie on the first encode: both are errors at load, and nothing says "panicked".
#[test]
fn tokenizers_whose_normalizer_panics() {
    let scratch = Scratch::new("precompiled");
    for (name, charsmap, message) in
        [("empty", "", "precompiled_charsmap is unreadable"), ("empty-trie", "AAAAAA==", "tokenizers library failed")]
    {
        let lm = model_copy(&scratch, "gpt2-lmhead", name, |dir| {
            edit_json(&dir.join("tokenizer.json"), |t| {
                t["normalizer"] = serde_json::json!({ "type": "Precompiled", "precompiled_charsmap": charsmap });
            });
        });
        let names = [lm.as_str(), "tokenizer.json", message];
        assert_refused(name, &scratch, &["generate", "--model", &lm, "--prompt", "a"], &names);
    }
}

/// A crop the model cannot take was refused only after every image had been preprocessed to it
/// (a 16000x16000 crop is 3 GB of pixels).
#[test]
fn preprocessor_configs_that_do_not_fit_the_model() {
    let scratch = Scratch::new("preprocessor");
    let image = image_arg();
    let cases: [(&str, serde_json::Value, &str); 4] = [
        ("crop", serde_json::json!({ "crop_size": { "height": 16000, "width": 16000 } }), "crop_size 16000x16000"),
        (
            "exact",
            serde_json::json!({ "do_center_crop": false, "size": { "height": 16000, "width": 30 } }),
            "size 16000x30",
        ),
        ("rescale", serde_json::json!({ "rescale_factor": -1.0 }), "rescale_factor = -1"),
        ("zero-rescale", serde_json::json!({ "rescale_factor": 0 }), "rescale_factor = 0"),
    ];
    for (name, changes, message) in cases {
        let clip = model_copy(&scratch, "clip-a", name, |dir| {
            edit_json(&dir.join("preprocessor_config.json"), |p| {
                for (key, value) in changes.as_object().unwrap() {
                    p[key] = value.clone();
                }
            });
        });
        let names = [clip.as_str(), "preprocessor_config.json", message];
        assert_refused(name, &scratch, &["embed", "--model", &clip, "--image", &image], &names);
    }
    // Resizing without a crop fits square images only: a 45 x 38 one is refused by name, with
    // what to change.
    let uncropped = model_copy(&scratch, "clip-a", "uncropped", |dir| {
        edit_json(&dir.join("preprocessor_config.json"), |p| {
            p["do_center_crop"] = false.into();
            p["size"] = serde_json::json!({ "shortest_edge": 30 });
        });
    });
    let names = [image.as_str(), "do_center_crop is false", "crop the image square"];
    assert_refused("uncropped", &scratch, &["embed", "--model", &uncropped, "--image", &image], &names);
    // A file of JSON that is no object is refused by what it holds, not by a type inside glimpse.
    for file in ["preprocessor_config.json", "tokenizer.json", "config.json"] {
        let clip = model_copy(&scratch, "clip-a", &format!("array-{file}"), |dir| {
            std::fs::write(dir.join(file), "[]").unwrap()
        });
        let stderr =
            assert_refused(file, &scratch, &["embed", "--model", &clip, "--text", "x"], &[file, "holds an array"]);
        assert!(!stderr.contains("struct"), "{stderr}");
    }
}

/// The embedded projector joins the world's models; with other models its matmul panicked.
#[test]
fn projectors_that_do_not_fit_the_models() {
    let scratch = Scratch::new("projector");
    let (clip, lm) = (fixture_arg("clip-a"), fixture_arg("gpt2-lmhead"));
    let models = ["--clip", clip.as_str(), "--lm", lm.as_str()];
    let eval = ["eval", "--frames", "0", "--videos", "0", "--images", "1"];
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/world-projector.safetensors");
    let file = file.to_str().unwrap();
    let names = ["the embedded projector", "projection_dim is 12", "n_embd 36"];
    assert_refused("embedded projector", &scratch, &[&eval[..], &models].concat(), &names);
    let with_file = [&eval[..], &models, &["--projector", file]].concat();
    assert_refused("projector file", &scratch, &with_file, &[file, "projection_dim is 12"]);
}

/// Numbers out of range are refused before any model is loaded, naming the flag.
#[test]
fn numbers_out_of_range() {
    let scratch = Scratch::new("numbers");
    let video = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shapes.gif");
    let video = video.to_str().unwrap();
    let image = image_arg();
    let huge = usize::MAX.to_string();
    let cases: Vec<(&str, &str)> = vec![
        ("--mask-lr", "nan"),
        ("--mask-lr", "-1"),
        ("--tiou-weight", "inf"),
        ("--contrast-weight", "-0.5"),
        ("--min-width", "0.7"),
        ("--scene-cut", "nan"),
        ("--warmup-steps", &huge),
        ("--events", "0"),
        ("--events", "1000"),
        ("--soft-prompt", &huge),
        ("--max-tokens", "0"),
        ("--max-tokens", &huge),
        ("--top-k", "0"),
        ("--top-k", "100000"),
        ("--steps-per-token", "0"),
        ("--steps-per-token", &huge),
    ];
    let video_only =
        ["--mask-lr", "--tiou-weight", "--contrast-weight", "--min-width", "--scene-cut", "--warmup-steps"];
    for (flag, value) in cases {
        // `--flag=value`: clap would take a bare `-1` for a flag.
        let arg = format!("{flag}={value}");
        assert_refused(&arg, &scratch, &["caption-video", video, &arg], &[flag]);
        if !video_only.contains(&flag) && flag != "--events" {
            assert_refused(&arg, &scratch, &["caption-image", &image, &arg], &[flag]);
        }
    }
    assert_refused("eval seeds", &scratch, &["eval", "--seed", &u64::MAX.to_string(), "--videos", "2"], &["--seed"]);
    let alpha = ["generate", "--prompt", "video showing", "--decoding", "contrastive", "--alpha=nan"];
    assert_refused("--alpha nan", &scratch, &alpha, &["--alpha"]);
    let tokens = ["generate", "--prompt", "video showing", "--max-new-tokens", &huge];
    assert_refused("--max-new-tokens", &scratch, &tokens, &["n_positions"]);
}

/// `glimpse ... | head -c1`: a reader that goes away ends the run quietly, with status 0.
#[test]
fn closed_stdout_ends_quietly() {
    let runs: [&[&str]; 3] = [
        &["generate", "--prompt", "video showing", "--max-new-tokens", "5"],
        &["generate", "--prompt", "video showing", "--max-new-tokens", "5", "--format", "json"],
        &["embed", "--text", "a red circle"],
    ];
    for args in runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .args(["--device", "cpu"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reading end is closed before anything is written: every write meets a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {:?}; stderr:\n{stderr}", out.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{args:?}: stderr:\n{stderr}");
    }
}

/// A `train_state.json` asking for 10^12 steps never ended; one whose weights were replaced after
/// it was written resumed from the wrong step.
#[test]
fn training_states_that_cannot_be_resumed() {
    let scratch = Scratch::new("train-state");
    let run = scratch.path("run");
    std::fs::create_dir(&run).unwrap();
    let state = |steps: u64, step: u64, digest: &str| {
        serde_json::json!({
            "kind": "lm", "step": step, "steps": steps, "seed": 0, "losses": [], "weights_digest": digest
        })
    };
    let cases = [
        ("huge steps", state(1_000_000_000_000, 0, ""), "steps = 1000000000000"),
        ("step beyond steps", state(10, 20, ""), "step = 20 is beyond steps = 10"),
        (
            "other weights",
            state(10, 2, "fnv1a64:0000000000000000:0"),
            "is not the file train_state.json was saved with",
        ),
    ];
    std::fs::write(run.join("model.safetensors"), b"weights of another checkpoint").unwrap();
    let run_arg = run.to_str().unwrap();
    for (case, json, message) in cases {
        std::fs::write(run.join("train_state.json"), json.to_string()).unwrap();
        let before = std::fs::read_dir(&run).unwrap().count();
        assert_refused(case, &scratch, &["train", "lm", "--out", run_arg], &[run_arg, message]);
        assert_eq!(std::fs::read_dir(&run).unwrap().count(), before, "{case}: wrote into the run");
    }
}
