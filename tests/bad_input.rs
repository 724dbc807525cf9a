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

    // The token table is named as missing too, rather than the file read as a model without the
    // `transformer.` prefix (every other tensor then unexpected).
    let weights =
        rewrite_safetensors(&weight_bytes(&gpt2_files()), |t| t.retain(|(n, _, _)| n != "transformer.wte.weight"));
    let err = load_gpt2(&gpt2_config(), &weights);
    let ModelError::WeightMismatch { problems, unexpected } = &err else { panic!("{err}") };
    assert!(unexpected.is_empty() && problems.len() == 1, "{err}");
    assert!(matches!(&problems[0], TensorProblem::Missing { name, .. } if name == "transformer.wte.weight"), "{err}");
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
    assert!(with("activation_function", "tanh".into()).contains("unknown variant `tanh`"));
    assert!(with("model_type", "llama".into()).contains("model_type is \"llama\""));
    assert!(with("add_cross_attention", true.into()).contains("not supported"));
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
    assert!(matches!(err, ModelError::Layout(_)));
    assert!(err.to_string().contains("glimpse reads safetensors only"), "{err}");
    // Sharded weights, as save_pretrained writes a large model: said so, with how to join them.
    std::fs::write(dir.join("model.safetensors.index.json"), b"{}").unwrap();
    std::fs::write(dir.join("model-00001-of-00002.safetensors"), b"").unwrap();
    let err = ModelFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("the weights are sharded") && err.contains("max_shard_size"), "{err}");

    // Weights that are there but no file are said to be so.
    std::fs::create_dir(dir.join("model.safetensors")).unwrap();
    let err = ModelFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("model.safetensors is not a regular file"), "{err}");
    std::fs::remove_dir(dir.join("model.safetensors")).unwrap();

    // A slow tokenizer's files without tokenizer.json: said so, with how to write it.
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("vocab.json"), b"{}").unwrap();
    let err = ModelFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("has no tokenizer.json: only the slow tokenizer's vocab.json"), "{err}");
    assert!(err.contains("AutoTokenizer.from_pretrained(dir).save_pretrained(dir)"), "{err}");
    std::fs::remove_file(dir.join("vocab.json")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{}").unwrap();

    // JSON files past their kind's bound are refused unread: parsing takes many times their size.
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let padded = |bytes: usize| format!("{{\"pad\": \"{}\"}}", " ".repeat(bytes));
    std::fs::write(dir.join("config.json"), padded(1 << 20)).unwrap();
    let err = ModelFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("config.json: larger than 1 MiB"), "{err}");
    std::fs::write(dir.join("config.json"), b"{}").unwrap();
    std::fs::write(dir.join("tokenizer.json"), padded(16 << 20)).unwrap();
    let err = ModelFiles::from_dir(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json: larger than 16 MiB"), "{err}");
    std::fs::write(dir.join("tokenizer.json"), padded(15 << 20)).unwrap();
    assert!(ModelFiles::from_dir(&dir).is_ok(), "a large tokenizer within the bound is read");
    std::fs::remove_dir_all(&dir).unwrap();
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

/// A 1 x 60000 strip resized to a 224 shorter side would be 13 million pixels long: with a crop
/// only the crop is resized; without one it is refused.
#[test]
fn images_that_would_resize_to_absurd_sizes_are_cropped_first_or_refused() {
    let strip = image::RgbImage::new(1, 60_000);
    let (_, size) = ImagePreprocess::clip_default(224).apply(&strip).unwrap();
    assert_eq!(size, (224, 224));
    let uncropped = ImagePreprocess { center_crop: None, ..ImagePreprocess::clip_default(224) };
    let err = uncropped.apply(&strip).unwrap_err().to_string();
    assert!(err.contains("sides above 16384 are refused"), "{err}");
}

#[test]
fn images_that_are_not_square_without_a_crop_are_an_error() {
    let mut clip = glimpse_models::ClipBundle::load(&ModelFiles::from_dir(fixture("clip-b")).unwrap(), &cpu()).unwrap();
    clip.preprocess.center_crop = None;
    let images = [image::RgbImage::new(40, 32), image::RgbImage::new(32, 50)];
    let err = clip.encode_images(&images).unwrap_err().to_string();
    assert!(err.contains("do_center_crop is false"), "{err}");
}

/// A NaN or infinity in any weight would make every output NaN, printed as a caption or a score,
/// and so can a finite value far beyond any trained weight (3e38 overflows the first sum it
/// enters): refused at load, naming the tensor and the element, for f32 and f16 files and for the
/// sharded token table alike.
#[test]
fn weights_that_are_not_finite_or_far_too_large_are_refused() {
    let bytes = weight_bytes(&gpt2_files());
    for (name, index, dtype, value) in [
        ("transformer.h.0.attn.c_attn.weight", 7, safetensors::Dtype::F32, f32::NAN),
        ("transformer.ln_f.weight", 0, safetensors::Dtype::F32, f32::NAN),
        ("transformer.h.1.mlp.c_proj.weight", 3, safetensors::Dtype::F32, 3e38),
        ("transformer.wte.weight", 100, safetensors::Dtype::F16, f32::INFINITY),
    ] {
        let weights = glimpse_tests::rewrite_safetensors_as(&bytes, dtype, |t| {
            let tensor = t.iter_mut().find(|(n, _, _)| n == name).unwrap();
            tensor.2[index] = value;
        });
        let err = load_gpt2(&gpt2_config(), &weights);
        let ModelError::WeightMismatch { problems, unexpected } = &err else { panic!("{err}") };
        assert!(unexpected.is_empty() && problems.len() == 1, "{err}");
        assert!(
            matches!(&problems[0], TensorProblem::OutOfRange { name: n, index: i, .. } if n == name && *i == index),
            "{err}"
        );
        assert!(err.to_string().contains("damaged: re-download or re-export"), "{err}");
    }
    // A CLIP projection, stored `[out, in]` and read transposed: the element is named as stored.
    let files = ModelFiles::from_dir(fixture("clip-a")).unwrap();
    let config = ClipConfig::from_json(&files.config).unwrap();
    let weights = rewrite_safetensors(&weight_bytes(&files), |t| {
        t.iter_mut().find(|(n, _, _)| n == "visual_projection.weight").unwrap().2[5] = f32::NAN;
    });
    let err = Clip::load(&config, &weights, &cpu()).expect_err("must fail");
    let ModelError::WeightMismatch { problems, .. } = &err else { panic!("{err}") };
    assert!(
        matches!(&problems[..], [TensorProblem::OutOfRange { name, index: 5, .. }] if name == "visual_projection.weight"),
        "{err}"
    );
}

/// Settings that parse but cannot work: grey images, a LayerNorm epsilon that is not a small positive
/// number, an end token outside the vocabulary, an image tower whose one image would not fit in
/// memory; each refused at load with the field named.
#[test]
fn configs_that_cannot_work_are_refused() {
    let files = ModelFiles::from_dir(fixture("clip-a")).unwrap();
    let base: serde_json::Value = serde_json::from_slice(&files.config).unwrap();
    let with = |tower: &str, key: &str, value: serde_json::Value| {
        let mut json = base.clone();
        json[tower][key] = value;
        ClipConfig::from_json(&serde_json::to_vec(&json).unwrap()).map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(with("vision_config", "num_channels", 1.into()).unwrap_err().contains("num_channels = 1"));
    assert!(
        with("vision_config", "layer_norm_eps", (-1.0).into()).unwrap_err().contains("vision_config.layer_norm_eps")
    );
    assert!(with("text_config", "layer_norm_eps", 0.0.into()).unwrap_err().contains("text_config.layer_norm_eps"));
    assert!(with("text_config", "eos_token_id", 9999.into()).unwrap_err().contains("eos_token_id = 9999"));
    // The legacy end token (pool at the largest id) stays valid.
    assert!(with("text_config", "eos_token_id", 2.into()).is_ok());
    // A value of another type, named by its field's path.
    let err = with("text_config", "hidden_size", 24.5.into()).unwrap_err();
    assert!(err.contains("text_config.hidden_size: invalid type: floating point `24.5`"), "{err}");
    // 8192 pixels square: 805 MB of pixels and 16385 tokens an image, refused before any frame.
    let mut huge = base.clone();
    huge["vision_config"]["image_size"] = 8192.into();
    huge["vision_config"]["patch_size"] = 64.into();
    let err = ClipConfig::from_json(&serde_json::to_vec(&huge).unwrap()).unwrap_err().to_string();
    assert!(err.contains("GiB per image"), "{err}");

    let mut gpt2: serde_json::Value = serde_json::from_slice(&gpt2_files().config).unwrap();
    gpt2["layer_norm_epsilon"] = (-1.0).into();
    let err = Gpt2Config::from_json(&serde_json::to_vec(&gpt2).unwrap()).unwrap_err().to_string();
    assert!(err.contains("layer_norm_epsilon = -1"), "{err}");
}

/// Frames are encoded in batches that fit a memory budget: 16 for ViT-B/32, fewer as the tower
/// grows, never none.
#[test]
fn image_batches_shrink_with_the_tower() {
    let b32 = ClipConfig::vit_b_32().vision_config;
    assert_eq!(b32.images_per_batch(16), 16);
    let mut large = b32.clone();
    (large.image_size, large.patch_size, large.hidden_size, large.intermediate_size, large.num_attention_heads) =
        (336, 14, 1024, 4096, 16);
    let batch = large.images_per_batch(16);
    assert!((2..16).contains(&batch), "{batch}");
    let mut largest = b32;
    (largest.image_size, largest.patch_size) = (2048, 32);
    assert_eq!(largest.images_per_batch(16), 1);
}

/// Normalisation settings that take pixel values to infinity (a std of 1e-45, a mean of 3e38, a
/// rescale factor of 1e300) are refused, naming the fields.
#[test]
fn preprocessor_values_that_overflow_are_refused() {
    for json in [
        &br#"{"image_std": [1e-45, 1e-45, 1e-45]}"#[..],
        br#"{"image_mean": [3e38, 3e38, 3e38]}"#,
        br#"{"rescale_factor": 1e300}"#,
        br#"{"do_normalize": false, "rescale_factor": 1e10}"#,
    ] {
        let err = ImagePreprocess::from_json(json, 224).unwrap_err().to_string();
        assert!(err.contains("take pixel values to") && err.contains("image_std"), "{err}");
    }
    assert!(ImagePreprocess::from_json(br#"{"image_std": [0.01, 0.01, 0.01]}"#, 224).is_ok());
}

/// A tokenizer from another model fits a vocabulary as large (CLIP's 49408 ids fit GPT-2's
/// 50257) but lacks its special tokens: refused by the id config.json names.
#[test]
fn a_tokenizer_from_another_model_is_refused() {
    let mut files = gpt2_files();
    files.tokenizer = std::fs::read(fixture("clip-a").join("tokenizer.json")).unwrap();
    let Err(ModelError::Checkpoint { source, .. }) = glimpse_models::Gpt2Bundle::load(&files, &cpu()) else {
        panic!("a CLIP tokenizer was taken for GPT-2's")
    };
    let err = source.to_string();
    assert!(err.contains("no token 420, which config.json's eos_token_id names"), "{err}");
    assert!(glimpse_models::Gpt2Bundle::load(&gpt2_files(), &cpu()).is_ok());
}
