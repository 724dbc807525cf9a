//! Checkpoints converted to f16 and q8 (`glimpse models convert`): what the files hold, what the
//! loaded models compute next to f32, and files whose quantisation does not add up.
//!
//! Tolerances: every embedding's cosine with the f32 model's >= 0.999 for f16 and >= 0.99 for q8;
//! f16 greedy continuations identical to transformers' f32 ones; q8 next-token logits cosine
//! >= 0.99 at every position (the greedy agreement rate is printed).

use std::borrow::Cow;
use std::collections::HashMap;

use glimpse_media::decode_image;
use glimpse_models::generation::{Decoding, GenerationConfig, generate};
use glimpse_models::tensor::ids_tensor;
use glimpse_models::weights::{Q8_SCHEME, QUANTIZATION_KEY, WeightFile};
use glimpse_models::{ClipBundle, Gpt2Bundle, KvCache, ModelError, ModelFiles, WeightFormat, Weights, convert_weights};
use glimpse_tests::{CLIP_FIXTURES, GPT2_FIXTURES, Reference, block_on, devices, fixture, values};
use safetensors::{Dtype, SafeTensors};

/// The fixture `name`'s files with their weights converted to `format`.
fn converted(name: &str, format: WeightFormat) -> ModelFiles {
    let files = ModelFiles::from_dir(fixture(name)).unwrap();
    let weights = block_on(convert_weights(&files, format, &glimpse_models::device::cpu().device)).unwrap();
    ModelFiles { weights: Weights::Bytes(Cow::Owned(weights)), ..files }
}

fn weights_of(files: &ModelFiles) -> &[u8] {
    match &files.weights {
        Weights::Bytes(bytes) => bytes,
        other => panic!("converted weights are bytes, not {other:?}"),
    }
}

/// The smallest cosine between matching rows of two `[rows, dim]` value lists.
fn min_row_cosine(a: &[f32], b: &[f32], dim: usize) -> f32 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
            dot / (norm(x) * norm(y))
        })
        .fold(1.0, f32::min)
}

const FORMATS: [(WeightFormat, f32); 2] = [(WeightFormat::F16, 0.999), (WeightFormat::Q8, 0.99)];

#[test]
fn clip_in_f16_and_q8_keeps_its_embeddings() {
    for selected in devices() {
        for name in CLIP_FIXTURES {
            let reference = Reference::load(name);
            let texts = reference.strings("texts");
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let images: Vec<image::RgbImage> = reference
                .strings("images")
                .iter()
                .map(|f| decode_image(&std::fs::read(fixture("images").join(f)).unwrap()).unwrap())
                .collect();
            let embed = |bundle: &ClipBundle| {
                let dim = bundle.config.projection_dim;
                (values(bundle.encode_texts(&texts).unwrap()), values(bundle.encode_images(&images).unwrap()), dim)
            };
            let f32_files = ModelFiles::from_dir(fixture(name)).unwrap();
            let (text, image, dim) = embed(&ClipBundle::load(&f32_files, &selected.device).unwrap());
            for (format, floor) in FORMATS {
                let bundle = ClipBundle::load(&converted(name, format), &selected.device).unwrap();
                let (text_c, image_c, _) = embed(&bundle);
                for (what, cosine) in
                    [("text", min_row_cosine(&text, &text_c, dim)), ("image", min_row_cosine(&image, &image_c, dim))]
                {
                    assert!(cosine >= floor, "{name} {format:?} on {}: {what} cosine {cosine}", selected.info);
                }
            }
        }
    }
}

#[test]
fn gpt2_in_f16_continues_as_transformers_and_q8_keeps_its_logits() {
    for selected in devices() {
        for name in GPT2_FIXTURES {
            let reference = Reference::load(name);
            let f32_lm = Gpt2Bundle::load(&ModelFiles::from_dir(fixture(name)).unwrap(), &selected.device).unwrap();
            let f16_lm = Gpt2Bundle::load(&converted(name, WeightFormat::F16), &selected.device).unwrap();
            let q8_lm = Gpt2Bundle::load(&converted(name, WeightFormat::Q8), &selected.device).unwrap();
            let (mut agreed, mut total) = (0, 0);
            for (ids, expected) in reference.ids("ids").iter().zip(reference.ids("greedy_ids")) {
                let config =
                    GenerationConfig { max_new_tokens: expected.len(), decoding: Decoding::Greedy, stop_at: None };
                let continue_with =
                    |lm: &Gpt2Bundle| block_on(generate(&lm.model, ids, &config, |_| {}, &selected.device)).unwrap();
                assert_eq!(continue_with(&f16_lm), expected, "{name} f16 on {}", selected.info);
                let q8 = continue_with(&q8_lm);
                agreed += q8.iter().zip(&expected).take_while(|(a, b)| a == b).count();
                total += expected.len();

                let logits = |lm: &Gpt2Bundle| {
                    let hidden = lm.model.forward_ids(ids_tensor(ids, &selected.device), &mut KvCache::new());
                    values(lm.model.logits(hidden))
                };
                let vocab = f32_lm.config.vocab_size;
                let cosine = min_row_cosine(&logits(&f32_lm), &logits(&q8_lm), vocab);
                assert!(cosine >= 0.99, "{name} q8 on {}: logits cosine {cosine}", selected.info);
            }
            println!(
                "{name} on {}: q8 greedy continuations agree with f32 for {agreed} of {total} tokens (up to the first difference)",
                selected.info
            );
        }
    }
}

/// Every dense weight and the token embeddings are I8 with an F16 `_scale` of the documented
/// shape; nothing else is 8-bit; the header names the scheme; the f16 file is all F16.
#[test]
fn converted_files_hold_what_the_format_says() {
    for name in GPT2_FIXTURES.into_iter().chain(CLIP_FIXTURES) {
        let f16 = converted(name, WeightFormat::F16);
        let file = SafeTensors::deserialize(weights_of(&f16)).unwrap();
        assert!(file.tensors().iter().all(|(_, view)| view.dtype() == Dtype::F16), "{name}: f16 file");

        let q8 = converted(name, WeightFormat::Q8);
        let (_, header) = SafeTensors::read_metadata(weights_of(&q8)).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap().get(QUANTIZATION_KEY).map(String::as_str), Some(Q8_SCHEME));
        let file = SafeTensors::deserialize(weights_of(&q8)).unwrap();
        let dense = |n: &str| {
            n.ends_with("proj.weight")
                || n.ends_with("c_attn.weight")
                || n.ends_with("c_fc.weight")
                || n.ends_with("fc1.weight")
                || n.ends_with("fc2.weight")
                || n.ends_with("wte.weight")
                || n.ends_with("token_embedding.weight")
                || n.ends_with("projection.weight")
        };
        let mut bytes = 0;
        for (tensor, view) in file.tensors() {
            let shape = view.shape().to_vec();
            // (CLIP's `logit_scale` is a parameter of its own, not the scale of a `logit`.)
            if let Some(weight) = tensor.strip_suffix("_scale").filter(|w| file.tensor(w).is_ok()) {
                let weight_view = file.tensor(weight).unwrap();
                assert_eq!((view.dtype(), weight_view.dtype()), (Dtype::F16, Dtype::I8), "{name}: {tensor}");
                let w = weight_view.shape();
                // The input dimension is the last one, except for GPT-2's Conv1D ([in, out]).
                let conv1d = name.starts_with("gpt2") && !weight.ends_with("wte.weight");
                let want = if conv1d { vec![w[0].div_ceil(32), w[1]] } else { vec![w[0], w[1].div_ceil(32)] };
                assert_eq!(shape, want, "{name}: {tensor}");
            } else if dense(&tensor) {
                assert_eq!(view.dtype(), Dtype::I8, "{name}: {tensor}");
                assert!(file.tensor(&format!("{tensor}_scale")).is_ok(), "{name}: {tensor} has no scale");
                bytes += view.data().len();
            } else {
                assert_eq!(view.dtype(), Dtype::F32, "{name}: {tensor}");
            }
        }
        assert!(bytes > 0, "{name}: nothing was quantised");
    }
}

/// A q8 model keeps `scale * byte` exactly: saved back as f32, every 8-bit tensor holds the values
/// its file describes, in the file's layout (so the loader's transposes and packing are right).
#[test]
fn a_q8_model_computes_with_exactly_the_stored_weights() {
    let device = glimpse_models::device::cpu().device;
    for name in GPT2_FIXTURES.into_iter().chain(CLIP_FIXTURES) {
        let q8 = converted(name, WeightFormat::Q8);
        let saved = if name.starts_with("gpt2") {
            block_on(Gpt2Bundle::load(&q8, &device).unwrap().model.to_safetensors()).unwrap()
        } else {
            block_on(ClipBundle::load(&q8, &device).unwrap().model.to_safetensors()).unwrap()
        };
        let stored = WeightFile::parse(weights_of(&q8)).unwrap();
        let resaved = WeightFile::parse(&saved).unwrap();
        let file = SafeTensors::deserialize(weights_of(&q8)).unwrap();
        for (tensor, view) in file.tensors().into_iter().filter(|(_, v)| v.dtype() == Dtype::I8) {
            let shape = view.shape().to_vec();
            let (_, scales) = stored.read_f32(&format!("{tensor}_scale")).unwrap().unwrap();
            let conv1d = name.starts_with("gpt2") && !tensor.ends_with("wte.weight");
            let expected: Vec<f32> = view
                .data()
                .iter()
                .enumerate()
                .map(|(i, &byte)| {
                    let (row, column) = (i / shape[1], i % shape[1]);
                    let scale = if conv1d {
                        scales[row / 32 * shape[1] + column]
                    } else {
                        scales[row * shape[1].div_ceil(32) + column / 32]
                    };
                    scale * byte as i8 as f32
                })
                .collect();
            let (saved_shape, got) = resaved.read_f32(&tensor).unwrap().unwrap();
            assert_eq!((saved_shape, got), (shape, expected), "{name}: {tensor}");
        }
    }
}

/// Values a format cannot hold are refused at conversion, naming the tensor, rather than written
/// as infinities (f16) or as a file the loader would refuse (q8's f16 scales).
#[test]
fn conversion_refuses_values_the_format_cannot_hold() {
    const WEIGHT: &str = "h.0.mlp.c_fc.weight";
    let files = ModelFiles::from_dir(fixture("gpt2-base")).unwrap();
    let huge = glimpse_tests::rewrite_safetensors(&glimpse_tests::weight_bytes(&files), |tensors| {
        // Within what the loader takes; beyond f16's 65504, and so is its q8 scale (1e7 / 127).
        tensors.iter_mut().find(|(n, ..)| n == WEIGHT).unwrap().2[0] = 1.0e7;
    });
    let files = ModelFiles { weights: Weights::Bytes(Cow::Owned(huge)), ..files };
    let device = glimpse_models::device::cpu().device;
    for (format, needle) in [(WeightFormat::F16, "f16"), (WeightFormat::Q8, "q8")] {
        let message = match block_on(convert_weights(&files, format, &device)) {
            Ok(_) => panic!("{format:?}: a weight of 1e7 was converted"),
            Err(error) => format!("{error}: {error:?}"),
        };
        assert!(message.contains(WEIGHT) && message.contains(needle), "{format:?}: {message}");
    }
}

/// The fixture's q8 file rebuilt after `edit` (name, dtype, shape, bytes) and with `metadata`.
fn edited_q8(
    name: &str,
    metadata: Option<HashMap<String, String>>,
    edit: impl FnOnce(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> ModelFiles {
    let q8 = converted(name, WeightFormat::Q8);
    let file = SafeTensors::deserialize(weights_of(&q8)).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, view)| (n, view.dtype(), view.shape().to_vec(), view.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dtype, shape, data)| {
            (n.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, metadata).unwrap();
    ModelFiles { weights: Weights::Bytes(Cow::Owned(bytes)), ..q8 }
}

fn q8_metadata() -> Option<HashMap<String, String>> {
    Some(HashMap::from([(QUANTIZATION_KEY.to_string(), Q8_SCHEME.to_string())]))
}

fn load_error(files: &ModelFiles) -> String {
    match Gpt2Bundle::load(files, &glimpse_models::device::cpu().device) {
        Ok(_) => panic!("a broken q8 file loaded"),
        Err(ModelError::Checkpoint { checkpoint, source }) => format!("{checkpoint}: {source}"),
        Err(other) => panic!("an error that does not name the checkpoint: {other:?}"),
    }
}

#[test]
fn q8_files_that_do_not_add_up_are_refused_with_the_tensor_named() {
    const WEIGHT: &str = "transformer.h.0.attn.c_attn.weight";
    let scale = format!("{WEIGHT}_scale");
    let scheme = |value: &str| Some(HashMap::from([(QUANTIZATION_KEY.to_string(), value.to_string())]));
    let cases: Vec<(&str, ModelFiles, Vec<&str>)> = vec![
        ("an unknown scheme", edited_q8("gpt2-lmhead", scheme("q4-block64"), |_| {}), vec!["q4-block64", Q8_SCHEME]),
        ("no scheme", edited_q8("gpt2-lmhead", None, |_| {}), vec!["transformer.wte.weight", QUANTIZATION_KEY]),
        (
            "a missing scale",
            edited_q8("gpt2-lmhead", q8_metadata(), |t| t.retain(|(n, ..)| *n != scale)),
            vec!["missing tensor", &scale],
        ),
        (
            "a scale of the wrong shape",
            edited_q8("gpt2-lmhead", q8_metadata(), |t| {
                let entry = t.iter_mut().find(|(n, ..)| *n == scale).unwrap();
                let rows = entry.2[0];
                entry.2 = vec![rows * entry.2[1]];
            }),
            vec![&scale, "shape"],
        ),
        (
            "a negative scale",
            edited_q8("gpt2-lmhead", q8_metadata(), |t| {
                let entry = t.iter_mut().find(|(n, ..)| *n == scale).unwrap();
                entry.3[..2].copy_from_slice(&half::f16::from_f32(-1.0).to_le_bytes());
            }),
            vec![&scale, "negative"],
        ),
        (
            "a scale beyond f16's range, stored as F32",
            edited_q8("gpt2-lmhead", q8_metadata(), |t| {
                let entry = t.iter_mut().find(|(n, ..)| *n == scale).unwrap();
                let count = entry.2.iter().product::<usize>();
                entry.1 = Dtype::F32;
                entry.3 = (0..count).flat_map(|_| 1.0e38f32.to_le_bytes()).collect();
            }),
            vec![&scale, "above"],
        ),
        (
            "an 8-bit LayerNorm",
            edited_q8("gpt2-lmhead", q8_metadata(), |t| {
                let entry = t.iter_mut().find(|(n, ..)| n == "transformer.h.0.ln_1.weight").unwrap();
                entry.1 = Dtype::I8;
                entry.3.truncate(entry.2[0]);
            }),
            vec!["transformer.h.0.ln_1.weight", "I8"],
        ),
    ];
    for (case, files, needles) in cases {
        let message = load_error(&files);
        for needle in needles {
            assert!(message.contains(needle), "{case}: `{needle}` is not in {message}");
        }
    }
}
