//! Parity with transformers on the committed fixtures, on the CPU backend and on wgpu (Vulkan).
//! Tolerance: max abs error 1e-4 on logits and embeddings; identical token ids.

use burn::prelude::*;
use glimpse_media::decode_image;
use glimpse_models::generation::{Decoding, GenerationConfig, generate};
use glimpse_models::tensor::ids_tensor;
use glimpse_models::{ClipBundle, Gpt2, Gpt2Bundle, KvCache, ModelFiles, l2_normalize};
use glimpse_tests::{
    CLIP_FIXTURES, GPT2_FIXTURES, Reference, block_on, devices, fixture, max_abs_diff, read_tensor,
    rewrite_safetensors, rewrite_safetensors_as, values, weight_bytes,
};

const TOL: f32 = 1e-4;

fn gpt2(name: &str, device: &Device) -> Gpt2Bundle {
    Gpt2Bundle::load(&ModelFiles::from_dir(fixture(name)).unwrap(), device).unwrap()
}

#[test]
fn gpt2_tokenizer_matches_transformers() {
    for name in GPT2_FIXTURES {
        let lm = gpt2(name, &glimpse_models::device::cpu().device);
        let reference = Reference::load(name);
        for (prompt, ids) in reference.strings("prompts").iter().zip(reference.ids("ids")) {
            assert_eq!(lm.tokenizer.encode(prompt).unwrap(), ids, "{name}: {prompt:?}");
            assert_eq!(&lm.tokenizer.decode(&ids).unwrap(), prompt, "{name}: decode");
        }
    }
}

/// Streamed text: the pieces add up to the whole decode, and a character split across byte-level
/// tokens is held back until it is whole (never given out as U+FFFD).
#[test]
fn streamed_text_adds_up_and_waits_for_whole_characters() {
    let lm = gpt2("gpt2-base", &glimpse_models::device::cpu().device);
    let text = "naïve café, 東京 ✓ done";
    let ids = lm.tokenizer.encode(text).unwrap();
    let mut stream = lm.tokenizer.stream();
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(stream.push(id).unwrap());
    }
    assert_eq!(stream.ids(), ids.as_slice());
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert!(pieces.iter().any(String::is_empty), "some character spans several tokens: {pieces:?}");
    assert_eq!(pieces.concat() + &stream.rest().unwrap(), text);
    assert_eq!(stream.rest().unwrap(), "");
}

#[test]
fn gpt2_logits_and_hidden_states_match_transformers() {
    for selected in devices() {
        for name in GPT2_FIXTURES {
            let lm = gpt2(name, &selected.device);
            let reference = Reference::load(name);
            for (i, ids) in reference.ids("ids").iter().enumerate() {
                let hidden = lm.model.forward_ids(ids_tensor(ids, &selected.device), &mut KvCache::new());
                let logits = lm.model.logits(hidden.clone());
                let (shape, expected) = reference.tensor(&format!("logits.{i}"));
                assert_eq!(logits.dims()[1..], shape[..]);
                let err = max_abs_diff(&values(logits), &expected);
                assert!(err <= TOL, "{name} prompt {i} on {}: logits differ by {err}", selected.info);
                let err = max_abs_diff(&values(hidden), &reference.tensor(&format!("hidden.{i}")).1);
                assert!(err <= TOL, "{name} prompt {i} on {}: hidden states differ by {err}", selected.info);
            }
        }
    }
}

/// Continuations of every reference prompt equal transformers' ids stored under `key`.
fn assert_continuations_match(key: &str, decoding: Decoding, stop_at_eos: bool) {
    for selected in devices() {
        for name in GPT2_FIXTURES {
            let lm = gpt2(name, &selected.device);
            let reference = Reference::load(name);
            for (ids, expected) in reference.ids("ids").iter().zip(reference.ids(key)) {
                let stop_at = if stop_at_eos { lm.config.eos_token_id } else { None };
                let config = GenerationConfig { max_new_tokens: expected.len(), decoding, stop_at };
                let got = block_on(generate(&lm.model, ids, &config, |_| {}, &selected.device)).unwrap();
                assert_eq!(got, expected, "{name} {key} on {}", selected.info);
            }
        }
    }
}

#[test]
fn gpt2_greedy_continuation_matches_transformers() {
    assert_continuations_match("greedy_ids", Decoding::Greedy, false);
}

#[test]
fn gpt2_beam_search_matches_transformers() {
    assert_continuations_match("beam3_ids", Decoding::Beam { beams: 3 }, true);
}

/// Where hypotheses end early (the end token is one the model often gives), the rules for ending
/// them decide the result: transformers' ids for 2, 3 and 4 beams, with three end tokens a model.
#[test]
fn gpt2_beam_search_ends_hypotheses_as_transformers_does() {
    let device = glimpse_models::device::cpu().device;
    let mut ended_early = 0;
    for name in GPT2_FIXTURES {
        let lm = gpt2(name, &device);
        let reference = Reference::load(name);
        let cases: Vec<serde_json::Value> = serde_json::from_value(reference.json["beam_eos"].clone()).unwrap();
        for case in cases {
            let eos = case["eos_token_id"].as_u64().unwrap() as u32;
            for beams in [2, 3, 4] {
                let expected: Vec<Vec<u32>> = serde_json::from_value(case[beams.to_string()].clone()).unwrap();
                for (ids, expected) in reference.ids("ids").iter().zip(expected) {
                    let config =
                        GenerationConfig { max_new_tokens: 8, decoding: Decoding::Beam { beams }, stop_at: Some(eos) };
                    let got = block_on(generate(&lm.model, ids, &config, |_| {}, &device)).unwrap();
                    assert_eq!(got, expected, "{name}, end token {eos}, {beams} beams");
                    ended_early += usize::from(got.len() < 8);
                }
            }
        }
    }
    // The cases test what they are for: many end before the limit.
    assert!(ended_early >= 20, "{ended_early}");
}

/// Logits of every position from one full forward pass, and from a prompt followed by one token at
/// a time through the cache, agree.
#[test]
fn cached_decoding_equals_full_forward() {
    for (selected, name) in devices().into_iter().flat_map(|d| GPT2_FIXTURES.map(|name| (d.clone(), name))) {
        let lm = gpt2(name, &selected.device);
        let ids: Vec<u32> = Reference::load(name).ids("ids")[2].clone();
        let full = values(lm.model.forward(ids_tensor(&ids, &selected.device)));
        let mut cache = KvCache::new();
        let split = 5;
        let mut stepwise =
            values(lm.model.logits(lm.model.forward_ids(ids_tensor(&ids[..split], &selected.device), &mut cache)));
        for &id in &ids[split..] {
            let hidden = lm.model.forward_ids(ids_tensor(&[id], &selected.device), &mut cache);
            stepwise.extend(values(lm.model.logits(hidden)));
        }
        assert_eq!(cache.len(), ids.len());
        let err = max_abs_diff(&full, &stepwise);
        assert!(err <= TOL, "{name} on {}: cached decoding differs by {err}", selected.info);
    }
}

/// Positions read several at a time after a cache (a guided step's context after its prefix: the
/// cache concatenated, the causal mask offset by the cache), then one at a time (the concatenated
/// cache grown into a buffer with room), agree with one full forward pass.
#[test]
fn chunks_after_a_cache_equal_full_forward() {
    for (selected, name) in devices().into_iter().flat_map(|d| GPT2_FIXTURES.map(|name| (d.clone(), name))) {
        let lm = gpt2(name, &selected.device);
        let ids: Vec<u32> = Reference::load(name).ids("ids")[2].clone();
        let full = values(lm.model.forward(ids_tensor(&ids, &selected.device)));
        assert!(ids.len() > 7, "the fixture's third prompt is too short for this test");
        let chunks = [&ids[..2], &ids[2..5], &ids[5..6], &ids[6..7]];
        let mut cache = KvCache::new();
        let mut chunked = Vec::new();
        for chunk in chunks.into_iter().chain(ids[7..].chunks(3)) {
            let hidden = lm.model.forward_ids(ids_tensor(chunk, &selected.device), &mut cache);
            chunked.extend(values(lm.model.logits(hidden)));
        }
        assert_eq!(cache.len(), ids.len());
        let err = max_abs_diff(&full, &chunked);
        assert!(err <= TOL, "{name} on {}: chunked reading differs by {err}", selected.info);
    }
}

/// Contrastive search with alpha = 0 (no degeneration penalty) or k = 1 is greedy search.
#[test]
fn contrastive_search_reduces_to_greedy() {
    let device = glimpse_models::device::cpu().device;
    let lm = gpt2("gpt2-lmhead", &device);
    let reference = Reference::load("gpt2-lmhead");
    let ids = &reference.ids("ids")[1];
    let expected = &reference.ids("greedy_ids")[1];
    for (top_k, alpha) in [(4, 0.0), (1, 0.6)] {
        let config = GenerationConfig {
            max_new_tokens: expected.len(),
            decoding: Decoding::Contrastive { top_k, alpha },
            stop_at: None,
        };
        let got = block_on(generate(&lm.model, ids, &config, |_| {}, &device)).unwrap();
        assert_eq!(&got, expected, "k={top_k} alpha={alpha}");
    }
}

/// With a strong penalty, contrastive search avoids the repetition greedy search falls into.
#[test]
fn contrastive_search_penalises_repetition() {
    let device = glimpse_models::device::cpu().device;
    let lm = gpt2("gpt2-lmhead", &device);
    let ids = &Reference::load("gpt2-lmhead").ids("ids")[0];
    let run = |decoding| {
        let config = GenerationConfig { max_new_tokens: 30, decoding, stop_at: None };
        block_on(generate(&lm.model, ids, &config, |_| {}, &device)).unwrap()
    };
    let distinct = |ids: &[u32]| ids.iter().collect::<std::collections::BTreeSet<_>>().len();
    let greedy = run(Decoding::Greedy);
    let contrastive = run(Decoding::Contrastive { top_k: 8, alpha: 0.9 });
    assert!(
        distinct(&contrastive) > distinct(&greedy),
        "contrastive {} distinct tokens, greedy {}",
        distinct(&contrastive),
        distinct(&greedy)
    );
}

fn clip(name: &str, device: &Device) -> ClipBundle {
    ClipBundle::load(&ModelFiles::from_dir(fixture(name)).unwrap(), device).unwrap()
}

fn fixture_images(reference: &Reference) -> Vec<image::RgbImage> {
    reference
        .strings("images")
        .iter()
        .map(|f| decode_image(&std::fs::read(fixture("images").join(f)).unwrap()).unwrap())
        .collect()
}

#[test]
fn clip_tokenizer_matches_transformers_with_truncation() {
    for name in CLIP_FIXTURES {
        let bundle = clip(name, &glimpse_models::device::cpu().device);
        let reference = Reference::load(name);
        let texts = reference.strings("texts");
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = bundle.tokenize(&texts).unwrap();
        assert_eq!(ids, reference.ids("ids"), "{name}");
        // The long text is cut to the context length and still ends with the end token.
        let last = ids.last().unwrap();
        assert_eq!(last.len(), bundle.config.text_config.max_position_embeddings);
        assert_eq!(last.last(), ids[0].last());
    }
}

/// Decoding, RGB conversion, Pillow-exact bicubic resize, centre crop and normalisation together
/// reproduce transformers' pixel values.
#[test]
fn clip_pixels_match_transformers() {
    for name in CLIP_FIXTURES {
        let bundle = clip(name, &glimpse_models::device::cpu().device);
        let reference = Reference::load(name);
        let pixels = bundle.pixels(&fixture_images(&reference)).unwrap();
        let (shape, expected) = reference.tensor("pixel_values");
        assert_eq!(pixels.dims()[..], shape[..]);
        let err = max_abs_diff(&values(pixels), &expected);
        assert!(err <= 1e-6, "{name}: pixel values differ by {err}");
    }
}

/// transformers 5 saves a processor's image settings in processor_config.json, under
/// `image_processor`, and no preprocessor_config.json; it reads them there first. The clip-a
/// fixture saved so gives the same pixels, and a preprocessor_config.json beside it is passed over.
#[test]
fn clip_image_settings_saved_by_transformers_5_are_read_first() {
    let dir = std::env::temp_dir().join(format!("glimpse-processor-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("clip-a").join(file), dir.join(file)).unwrap();
    }
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("clip-a").join("preprocessor_config.json")).unwrap()).unwrap();
    let processor = serde_json::json!({"image_processor": settings, "processor_class": "CLIPProcessor"});
    std::fs::write(dir.join("processor_config.json"), processor.to_string()).unwrap();
    let reference = Reference::load("clip-a");
    let (_, expected) = reference.tensor("pixel_values");
    let device = glimpse_models::device::cpu().device;
    let pixels_of = |dir: &std::path::Path| {
        let bundle = ClipBundle::load(&ModelFiles::from_dir(dir).unwrap(), &device).unwrap();
        values(bundle.pixels(&fixture_images(&reference)).unwrap())
    };
    assert!(max_abs_diff(&pixels_of(&dir), &expected) <= 1e-6);
    // Other settings in preprocessor_config.json: the processor's still count.
    std::fs::write(dir.join("preprocessor_config.json"), r#"{"image_mean": [0, 0, 0], "image_std": [1, 1, 1]}"#)
        .unwrap();
    assert!(max_abs_diff(&pixels_of(&dir), &expected) <= 1e-6);
    // A processor_config.json with no image settings (transformers 4 wrote only the class) gives
    // way to preprocessor_config.json.
    std::fs::write(dir.join("processor_config.json"), r#"{"processor_class": "CLIPProcessor"}"#).unwrap();
    assert!(max_abs_diff(&pixels_of(&dir), &expected) > 0.1);
    // A damaged one is refused by its name, and so are its settings where they do not fit.
    std::fs::write(dir.join("processor_config.json"), "{\"image_processor\": {").unwrap();
    let error = |dir: &std::path::Path| match ClipBundle::load(&ModelFiles::from_dir(dir).unwrap(), &device) {
        Ok(_) => panic!("loaded"),
        Err(e) => std::error::Error::source(&e).expect("the checkpoint's error").to_string(),
    };
    let err = error(&dir);
    assert!(err.contains("processor_config.json: not valid JSON"), "{err}");
    std::fs::write(dir.join("processor_config.json"), r#"{"image_processor": {"resample": 0}}"#).unwrap();
    let err = error(&dir);
    assert!(err.contains("processor_config.json: resample = 0 is not supported"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clip_embeddings_and_logits_match_transformers() {
    for selected in devices() {
        for name in CLIP_FIXTURES {
            let bundle = clip(name, &selected.device);
            let reference = Reference::load(name);
            let texts = reference.strings("texts");
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let text = bundle.encode_texts(&texts).unwrap();
            let image = bundle.encode_images(&fixture_images(&reference)).unwrap();
            let logits = bundle.model.logits_per_image(image.clone(), text.clone());
            for (what, got) in [
                ("text_embeds", values(l2_normalize(text))),
                ("image_embeds", values(l2_normalize(image))),
                ("logits_per_image", values(logits)),
            ] {
                let err = max_abs_diff(&got, &reference.tensor(what).1);
                assert!(err <= TOL, "{name} on {}: {what} differ by {err}", selected.info);
            }
        }
    }
}

/// Texts that begin alike, in runs as a guided step's candidates come (the caption so far and one
/// more word each), encode on the CPU backend with each run's beginning encoded once: the
/// embeddings equal each text's encoded alone, with the end token found by id (clip-b) and as the
/// largest id (clip-a).
#[test]
fn texts_sharing_beginnings_encode_as_each_alone() {
    let device = Device::flex();
    for name in CLIP_FIXTURES {
        let bundle = clip(name, &device);
        let texts: Vec<String> = ["a photo of a blue", "there are 3 purple"]
            .iter()
            .flat_map(|start| {
                ["circle", "square on the left", "red", "triangles"].map(|word| format!("{start} {word}"))
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let ids = bundle.tokenize(&texts).unwrap();
        assert!(bundle.model.text_shares_beginnings(&ids, &device), "{name}: {ids:?} were encoded whole");
        let together = values(bundle.encode_texts(&texts).unwrap());
        let alone: Vec<f32> = texts.iter().flat_map(|text| values(bundle.encode_texts(&[text]).unwrap())).collect();
        let err = max_abs_diff(&together, &alone);
        assert!(err <= TOL, "{name}: shared beginnings change the embeddings by {err}");
        // One text alone, or texts that share only the start token, are encoded whole.
        assert!(!bundle.model.text_shares_beginnings(&ids[..1], &device));
        assert!(!bundle.model.text_shares_beginnings(&bundle.tokenize(&["red", "a blue square"]).unwrap(), &device));
    }
}

/// The three key forms of GPT-2 files give the same model: bare `h.0` (fixture gpt2-base),
/// `transformer.h.0` (gpt2-lmhead), and `transformer.h.0` plus an explicit `lm_head.weight`.
/// An untied checkpoint (`tie_word_embeddings: false`) uses its own head; a tied one whose stored
/// head differs from `wte` means two models (transformers 5 takes the head, 4 the embedding) and
/// is refused.
#[test]
fn gpt2_lm_head_forms() {
    let device = glimpse_models::device::cpu().device;
    let dir = fixture("gpt2-lmhead");
    let files = ModelFiles::from_dir(&dir).unwrap();
    let config = glimpse_models::Gpt2Config::from_json(&files.config).unwrap();
    let ids = ids_tensor(&Reference::load("gpt2-lmhead").ids("ids")[0], &device);
    let tied = values(Gpt2::load(&config, &weight_bytes(&files), &device).unwrap().forward(ids.clone()));

    let wte = read_tensor(&weight_bytes(&files), "transformer.wte.weight");
    let doubled: Vec<f32> = wte.1.iter().map(|v| v * 2.0).collect();
    let with_head = add_tensor(&weight_bytes(&files), "lm_head.weight", &wte.0, &wte.1);
    let explicit = values(Gpt2::load(&config, &with_head, &device).unwrap().forward(ids.clone()));
    assert!(max_abs_diff(&tied, &explicit) == 0.0, "explicit tied head changed the logits");

    let untied_head = add_tensor(&weight_bytes(&files), "lm_head.weight", &wte.0, &doubled);
    let Err(err) = Gpt2::load(&config, &untied_head, &device) else { panic!("a tied config with another head loaded") };
    let err = err.to_string();
    assert!(err.contains("tie_word_embeddings is true") && err.contains("values differ"), "{err}");
    let mut untied_config = config.clone();
    untied_config.tie_word_embeddings = false;
    let untied = values(Gpt2::load(&untied_config, &untied_head, &device).unwrap().forward(ids));
    let twice: Vec<f32> = tied.iter().map(|v| v * 2.0).collect();
    assert!(max_abs_diff(&untied, &twice) <= TOL, "untied head not used");
}

/// A copy of a safetensors file with one more f32 tensor.
fn add_tensor(bytes: &[u8], name: &str, shape: &[usize], values: &[f32]) -> Vec<u8> {
    rewrite_safetensors(bytes, |tensors| tensors.push((name.to_string(), shape.to_vec(), values.to_vec())))
}

/// Half-precision checkpoints (F16, BF16) load as f32 and stay close to the f32 model.
#[test]
fn half_precision_weights_load() {
    let device = glimpse_models::device::cpu().device;
    let files = ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap();
    let config = glimpse_models::Gpt2Config::from_json(&files.config).unwrap();
    let ids = ids_tensor(&Reference::load("gpt2-lmhead").ids("ids")[1], &device);
    let full = values(Gpt2::load(&config, &weight_bytes(&files), &device).unwrap().forward(ids.clone()));
    for (dtype, tol) in [(safetensors::Dtype::F16, 0.05), (safetensors::Dtype::BF16, 0.3)] {
        let half = rewrite_safetensors_as(&weight_bytes(&files), dtype, |_| {});
        let logits = values(Gpt2::load(&config, &half, &device).unwrap().forward(ids.clone()));
        let err = max_abs_diff(&full, &logits);
        assert!(err > 0.0 && err <= tol, "{dtype:?}: logits differ by {err}");
    }
}
