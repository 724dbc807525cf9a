//! Saving is the inverse of loading: a model written by glimpse (as `glimpse train` does) holds
//! every tensor of the checkpoint it came from, under the same Hugging Face name, layout and value,
//! and its config.json parses back to the same model.

use std::collections::BTreeMap;

use glimpse_hub::ModelFiles;
use glimpse_models::weights::WeightFile;
use glimpse_models::{Clip, ClipConfig, Gpt2, Gpt2Config};
use glimpse_tests::{block_on, fixture, weight_bytes};

/// Every tensor as `(shape, values)` by name, with `rename` applied and `skip`ped names left out.
fn tensors(
    bytes: &[u8],
    rename: impl Fn(&str) -> String,
    skip: impl Fn(&str) -> bool,
) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let file = WeightFile::parse(bytes).unwrap();
    file.names().into_iter().filter(|n| !skip(n)).map(|n| (rename(&n), file.read_f32(&n).unwrap().unwrap())).collect()
}

#[test]
fn gpt2_saves_what_it_loaded() {
    let device = glimpse_models::device::cpu().device;
    for name in ["gpt2-lmhead", "gpt2-base"] {
        let files = ModelFiles::from_dir(fixture(name)).unwrap();
        let config = Gpt2Config::from_json(&files.config).unwrap();
        let saved = block_on(Gpt2::load(&config, &weight_bytes(&files), &device).unwrap().to_safetensors()).unwrap();
        // GPT2Model files have bare names; glimpse writes GPT2LMHeadModel's `transformer.` names.
        let canonical =
            |n: &str| if n.starts_with("transformer.") { n.to_string() } else { format!("transformer.{n}") };
        let buffer = |n: &str| n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") || n == "lm_head.weight";
        let original = tensors(&weight_bytes(&files), canonical, buffer);
        assert_eq!(tensors(&saved, str::to_string, |_| false), original, "{name}");

        let reparsed = Gpt2Config::from_json(config.to_json().as_bytes()).unwrap();
        assert_eq!(reparsed.to_json(), config.to_json(), "{name}");
        assert!(config.to_json().contains("\"model_type\": \"gpt2\""));
    }
}

#[test]
fn clip_saves_what_it_loaded() {
    let device = glimpse_models::device::cpu().device;
    for name in ["clip-a", "clip-b"] {
        let files = ModelFiles::from_dir(fixture(name)).unwrap();
        let config = ClipConfig::from_json(&files.config).unwrap();
        let saved = block_on(Clip::load(&config, &weight_bytes(&files), &device).unwrap().to_safetensors()).unwrap();
        let original = tensors(&weight_bytes(&files), str::to_string, |n| n.ends_with("position_ids"));
        assert_eq!(tensors(&saved, str::to_string, |_| false), original, "{name}");

        let reparsed = ClipConfig::from_json(config.to_json().as_bytes()).unwrap();
        assert_eq!(reparsed.to_json(), config.to_json(), "{name}");
    }
}
