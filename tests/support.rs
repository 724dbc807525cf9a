//! Helpers for the workspace tests: fixture paths, reference outputs, the devices to test on.

pub mod fuzz_targets;
#[path = "hub_server.rs"]
pub mod hub_server;

use std::path::PathBuf;

use burn::prelude::*;
use glimpse_models::device::{self, DeviceInfo, SelectedDevice};
use glimpse_models::weights::WeightFile;

/// The whole `model.safetensors` of a checkpoint, for tests that rewrite or compare it.
pub fn weight_bytes(files: &glimpse_models::ModelFiles) -> Vec<u8> {
    match &files.weights {
        glimpse_models::Weights::Bytes(bytes) => bytes.to_vec(),
        glimpse_models::Weights::File(path) => std::fs::read(path).unwrap(),
        glimpse_models::Weights::Reader(source, _) => {
            let mut bytes = vec![0; source.size() as usize];
            source.read_exact_at(0, &mut bytes).unwrap();
            bytes
        }
    }
}

/// The GPT-2 fixtures transformers made (`fixtures/make_fixtures.py`). The last two set the
/// options that change GPT-2's computation: another activation (ReLU, SiLU), and attention scores
/// scaled otherwise (by the inverse layer index; not at all).
pub const GPT2_FIXTURES: [&str; 4] = ["gpt2-lmhead", "gpt2-base", "gpt2-relu-layer-scaled", "gpt2-silu-unscaled"];
/// The CLIP fixtures, as above.
pub const CLIP_FIXTURES: [&str; 2] = ["clip-a", "clip-b"];

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The CPU backend, and wgpu where this run covers it (`glimpse_test_device`: where there is an
/// adapter, or always under `GLIMPSE_TEST_WGPU=require`). wgpu must run on the platform's own API
/// (Vulkan with lavapipe in CI; Metal, DX12 elsewhere): a parity test that ran on OpenGL would
/// prove nothing about them, so an adapter on anything else counts as no adapter.
pub fn devices() -> Vec<SelectedDevice> {
    let native = || {
        let wgpu = device::wgpu().map_err(|e| e.to_string())?;
        match &wgpu.info {
            DeviceInfo::Wgpu { api, .. } if ["Vulkan", "Metal", "Dx12"].contains(&api.as_str()) => Ok(wgpu),
            other => Err(format!("wgpu chose {other}")),
        }
    };
    let mut devices = vec![device::cpu()];
    devices.extend(glimpse_test_device::wgpu(native));
    devices
}

/// Reference outputs written by `fixtures/make_fixtures.py`.
pub struct Reference {
    pub json: serde_json::Value,
    tensors: Vec<u8>,
}

impl Reference {
    pub fn load(model: &str) -> Self {
        let dir = fixture(model);
        let json = std::fs::read(dir.join("reference.json")).unwrap();
        Self {
            json: serde_json::from_slice(&json).unwrap(),
            tensors: std::fs::read(dir.join("reference.safetensors")).unwrap(),
        }
    }

    /// `(shape, values)` of a reference tensor.
    pub fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let file = WeightFile::parse(&self.tensors).unwrap();
        file.read_f32(name).unwrap().unwrap_or_else(|| panic!("no reference tensor {name}"))
    }

    pub fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        serde_json::from_value(self.json[key].clone()).unwrap()
    }

    pub fn strings(&self, key: &str) -> Vec<String> {
        serde_json::from_value(self.json[key].clone()).unwrap()
    }
}

pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_into_vec_as::<f32>().unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length differs");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

/// `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads one tensor of safetensors bytes as f32.
pub fn read_tensor(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    WeightFile::parse(bytes).unwrap().read_f32(name).unwrap().unwrap_or_else(|| panic!("no tensor {name}"))
}

/// Rewrites safetensors bytes (as f32) after `edit` has changed the list of tensors.
pub fn rewrite_safetensors(bytes: &[u8], edit: impl FnOnce(&mut Vec<NamedTensor>)) -> Vec<u8> {
    rewrite_safetensors_as(bytes, safetensors::Dtype::F32, edit)
}

/// Rewrites safetensors bytes storing every tensor as `dtype` (F32, F16 or BF16).
pub fn rewrite_safetensors_as(
    bytes: &[u8],
    dtype: safetensors::Dtype,
    edit: impl FnOnce(&mut Vec<NamedTensor>),
) -> Vec<u8> {
    let file = WeightFile::parse(bytes).unwrap();
    let mut tensors: Vec<NamedTensor> = file
        .names()
        .into_iter()
        .map(|name| {
            let (shape, values) = file.read_f32(&name).unwrap().unwrap();
            (name.to_string(), shape, values)
        })
        .collect();
    edit(&mut tensors);
    let encode = |v: &f32| -> Vec<u8> {
        match dtype {
            safetensors::Dtype::F32 => v.to_le_bytes().to_vec(),
            safetensors::Dtype::F16 => half::f16::from_f32(*v).to_le_bytes().to_vec(),
            safetensors::Dtype::BF16 => half::bf16::from_f32(*v).to_le_bytes().to_vec(),
            other => panic!("{other:?} not supported here"),
        }
    };
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| (name, shape, values.iter().flat_map(encode).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(name, shape, data)| {
            (name.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap())
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}
