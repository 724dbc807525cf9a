//! Saving is the inverse of loading: a model written by glimpse (as `glimpse train` does) holds
//! every tensor of the checkpoint it came from, under the same Hugging Face name, layout and value,
//! and its config.json parses back to the same model.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use glimpse_models::weights::{ReadAt, WeightFile};
use glimpse_models::{Clip, ClipBundle, ClipConfig, Gpt2, Gpt2Config, ModelFiles, Weights};
use glimpse_tests::{CLIP_FIXTURES, GPT2_FIXTURES, block_on, fixture, weight_bytes};

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
    for name in GPT2_FIXTURES {
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
    for name in CLIP_FIXTURES {
        let files = ModelFiles::from_dir(fixture(name)).unwrap();
        let config = ClipConfig::from_json(&files.config).unwrap();
        let saved = block_on(Clip::load(&config, &weight_bytes(&files), &device).unwrap().to_safetensors()).unwrap();
        let original = tensors(&weight_bytes(&files), str::to_string, |n| n.ends_with("position_ids"));
        assert_eq!(tensors(&saved, str::to_string, |_| false), original, "{name}");

        let reparsed = ClipConfig::from_json(config.to_json().as_bytes()).unwrap();
        assert_eq!(reparsed.to_json(), config.to_json(), "{name}");
    }
}

/// A weight file in memory that records every read made of it, as `(offset, length)`.
struct RecordedReads {
    bytes: Vec<u8>,
    reads: Mutex<Vec<(u64, usize)>>,
}

impl ReadAt for RecordedReads {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.reads.lock().unwrap().push((offset, buf.len()));
        let start = offset as usize;
        buf.copy_from_slice(self.bytes.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }
}

/// The browser's path: weights read from a source outside the process's model memory (a JavaScript
/// buffer there) give the same model as bytes, read tensor by tensor, never as a whole.
#[test]
fn weights_from_a_reader_load_tensor_by_tensor() {
    let device = glimpse_models::device::cpu().device;
    let files = ModelFiles::from_dir(fixture("clip-a")).unwrap();
    let bytes = weight_bytes(&files);
    let source = Arc::new(RecordedReads { bytes: bytes.clone(), reads: Mutex::default() });
    let from_reader = ModelFiles { weights: Weights::Reader(source.clone(), "clip-a".into()), ..files };
    let bundle = ClipBundle::load(&from_reader, &device).unwrap();

    let saved = block_on(bundle.model.to_safetensors()).unwrap();
    let position_ids = |n: &str| n.ends_with("position_ids");
    assert_eq!(tensors(&saved, str::to_string, |_| false), tensors(&bytes, str::to_string, position_ids));

    let file = WeightFile::parse(&bytes).unwrap();
    let largest_tensor = file.names().iter().map(|n| 4 * file.shape(n).unwrap().iter().product::<usize>()).max();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let reads = std::mem::take(&mut *source.reads.lock().unwrap());
    let largest_read = reads.iter().map(|&(_, n)| n).max().unwrap();
    assert!(largest_read <= largest_tensor.unwrap().max(header), "a read of {largest_read} bytes");
    let read: usize = reads.iter().map(|&(_, n)| n).sum();
    assert!(read <= bytes.len(), "{read} bytes read of a {}-byte file: some twice", bytes.len());
    assert!(reads.len() > file.names().len(), "{} reads for {} tensors", reads.len(), file.names().len());
}
