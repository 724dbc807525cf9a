//! Bad input gets a clear error that names the problem, never a panic.

use glimpse_media::{ImagePreprocess, MediaError, decode_image};
use glimpse_models::{Clip, ClipConfig, Gpt2, Gpt2Config, ModelError, ModelFiles, TensorProblem};
use glimpse_tests::{fixture, rewrite_safetensors, weight_bytes};

fn cpu() -> burn::tensor::Device {
    glimpse_models::device::cpu().device
}

fn gpt2_files() -> ModelFiles {
    ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap()
}

fn gpt2_config() -> Gpt2Config {
    Gpt2Config::from_json(&gpt2_files().config).unwrap()
}

fn load_gpt2(config: &Gpt2Config, weights: &[u8]) -> ModelError {
    Gpt2::load(config, weights, &cpu()).expect_err("loading should fail")
}

#[test]
fn truncated_empty_or_garbage_weights_are_corrupt() {
    let weights = weight_bytes(&gpt2_files());
    for bytes in [&weights[..weights.len() / 2], &weights[..7], &[][..], &b"not a safetensors file at all"[..]] {
        let err = load_gpt2(&gpt2_config(), bytes);
        assert!(matches!(err, ModelError::CorruptWeights(_)), "{err}");
        assert!(err.to_string().contains("not a readable safetensors file"), "{err}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let weights = rewrite_safetensors(&weight_bytes(&gpt2_files()), |t| {
        t.retain(|(n, _, _)| n != "transformer.h.1.mlp.c_fc.weight")
    });
    let err = load_gpt2(&gpt2_config(), &weights);
    let ModelError::WeightMismatch { problems, unexpected } = &err else { panic!("{err}") };
    assert_eq!(
        problems,
        &[TensorProblem::Missing { name: "transformer.h.1.mlp.c_fc.weight".into(), expected: vec![36, 144] }]
    );
    assert!(unexpected.is_empty());
    assert!(err.to_string().contains("missing tensor `transformer.h.1.mlp.c_fc.weight`"), "{err}");
}

#[test]
fn unexpected_tensor_is_named() {
    let weights = rewrite_safetensors(&weight_bytes(&gpt2_files()), |t| {
        t.push(("transformer.h.7.attn.c_attn.weight".into(), vec![2, 2], vec![0.0; 4]))
    });
    let err = load_gpt2(&gpt2_config(), &weights);
    let ModelError::WeightMismatch { problems, unexpected } = &err else { panic!("{err}") };
    assert!(problems.is_empty());
    assert_eq!(unexpected, &["transformer.h.7.attn.c_attn.weight".to_string()]);
}

/// A config that contradicts the file: more layers than stored, a different MLP width.
#[test]
fn config_contradicting_the_file_is_refused() {
    let weights = weight_bytes(&gpt2_files());
    let mut deeper = gpt2_config();
    deeper.n_layer = 3;
    let err = load_gpt2(&deeper, &weights).to_string();
    assert!(err.contains("missing tensor `transformer.h.2.attn.c_attn.weight`"), "{err}");

    let mut wider = gpt2_config();
    wider.n_inner = Some(100);
    let err = load_gpt2(&wider, &weights);
    let ModelError::WeightMismatch { problems, .. } = &err else { panic!("{err}") };
    assert!(problems.contains(&TensorProblem::Shape {
        name: "transformer.h.0.mlp.c_fc.weight".into(),
        expected: vec![36, 100],
        found: vec![36, 144],
    }));
}

#[test]
fn clip_with_wrong_patch_size_names_the_tensors() {
    let files = ModelFiles::from_dir(fixture("clip-a")).unwrap();
    let mut config = ClipConfig::from_json(&files.config).unwrap();
    config.vision_config.image_size = 36; // 6x6 patches instead of 5x5
    let err = Clip::load(&config, &weight_bytes(&files), &cpu()).expect_err("must fail").to_string();
    assert!(err.contains("vision_model.embeddings.position_embedding.weight` has shape [26, 40]"), "{err}");
}

#[test]
fn invalid_configs_say_what_is_wrong() {
    let base: serde_json::Value = serde_json::from_slice(&gpt2_files().config).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut json = base.clone();
        json[key] = value;
        Gpt2Config::from_json(&serde_json::to_vec(&json).unwrap()).expect_err("must fail").to_string()
    };
    assert!(with("n_head", 5.into()).contains("not divisible"));
    assert!(with("n_embd", 1_000_000_000.into()).contains("n_embd = 1000000000 is outside"));
    assert!(with("n_layer", 0.into()).contains("n_layer = 0"));
    assert!(with("activation_function", "swish".into()).contains("unknown variant `swish`"));
    assert!(with("model_type", "llama".into()).contains("model_type is \"llama\""));
    assert!(with("reorder_and_upcast_attn", true.into()).contains("not supported"));
    let err = Gpt2Config::from_json(b"{\"n_embd\": 4").expect_err("truncated json").to_string();
    assert!(err.starts_with("config.json:"), "{err}");
}

#[test]
fn unreadable_images_are_errors() {
    let png = std::fs::read(fixture("images").join("rgb_45x38.png")).unwrap();
    for bytes in [&png[..png.len() / 2], &b"plain text"[..], &[][..]] {
        let err = decode_image(bytes).expect_err("must fail");
        assert!(matches!(err, MediaError::Image(_)), "{err}");
    }
}

#[test]
fn unsupported_preprocessor_settings_are_errors() {
    let err = ImagePreprocess::from_json(br#"{"resample": 0}"#, 224).unwrap_err().to_string();
    assert!(err.contains("resample = 0 is not supported"), "{err}");
    let err = ImagePreprocess::from_json(br#"{"image_mean": [0.5, 0.5]}"#, 224).unwrap_err().to_string();
    assert!(err.contains("image_mean has 2 values"), "{err}");
    // The legacy integer form of `size` and `crop_size` is read.
    let legacy = ImagePreprocess::from_json(br#"{"size": 224, "crop_size": 224}"#, 224).unwrap();
    assert_eq!(legacy, ImagePreprocess::clip_default(224));
}

#[test]
fn model_directories_say_what_is_missing() {
    let err = ModelFiles::from_dir(fixture("no-such-model")).unwrap_err().to_string();
    assert!(err.contains("is not a directory"), "{err}");

    let dir = std::env::temp_dir().join(format!("glimpse-bin-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["config.json", "tokenizer.json", "pytorch_model.bin"] {
        std::fs::write(dir.join(name), b"{}").unwrap();
    }
    let err = ModelFiles::from_dir(&dir).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(matches!(err, ModelError::Layout(_)));
    assert!(err.to_string().contains("glimpse reads safetensors only"), "{err}");
}

/// Lengths right at the position limit work; one more, an absurd count or an oversized candidate
/// set is an error (contrastive search feeds every chosen token, greedy search all but the last).
#[test]
fn generation_limits_are_errors_not_panics() {
    use glimpse_models::generation::{Decoding, GenerationConfig, generate};
    let device = cpu();
    let lm = glimpse_models::Gpt2Bundle::load(&gpt2_files(), &device).unwrap();
    assert_eq!(lm.model.n_positions(), 48);
    let contrastive = Decoding::Contrastive { top_k: 4, alpha: 0.6 };
    let run = |decoding, max_new_tokens| {
        let config = GenerationConfig { max_new_tokens, decoding, stop_at: None };
        glimpse_tests::block_on(generate(&lm.model, &[5], &config, |_| {}, &device))
    };
    assert_eq!(run(Decoding::Greedy, 48).unwrap().len(), 48);
    assert_eq!(run(contrastive, 47).unwrap().len(), 47);
    for (decoding, n) in [(Decoding::Greedy, 49), (contrastive, 48), (Decoding::Greedy, usize::MAX)] {
        let err = run(decoding, n).unwrap_err().to_string();
        assert!(err.contains("n_positions"), "{decoding:?} {n}: {err}");
    }
    let err = run(Decoding::Contrastive { top_k: 10_000, alpha: 0.6 }, 3).unwrap_err().to_string();
    assert!(err.contains("top-k = 10000 must be in 1..="), "{err}");
}

#[test]
fn images_that_would_resize_to_absurd_sizes_are_refused() {
    let strip = image::RgbImage::new(1, 60_000);
    let err = ImagePreprocess::clip_default(224).apply(&strip).unwrap_err().to_string();
    assert!(err.contains("sides above 16384 are refused"), "{err}");
}

#[test]
fn images_of_different_sizes_without_a_crop_are_an_error() {
    let mut clip = glimpse_models::ClipBundle::load(&ModelFiles::from_dir(fixture("clip-b")).unwrap(), &cpu()).unwrap();
    clip.preprocess.center_crop = None;
    let images = [image::RgbImage::new(40, 32), image::RgbImage::new(32, 50)];
    let err = clip.encode_images(&images).unwrap_err().to_string();
    assert!(err.contains("different sizes"), "{err}");
}
