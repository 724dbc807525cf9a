//! One forward pass of GPT-2 small and CLIP ViT-B/32 at their real sizes, with random weights:
//! what real checkpoints will cost in time and memory.
//!
//!     cargo run --release -p glimpse-tests --example real_size_smoke -- [cpu|wgpu]
//!
//! Prints the time of each step and the process's peak resident memory (Linux).

use std::time::Instant;

use burn::prelude::*;
use glimpse_models::device::{self, DeviceChoice};
use glimpse_models::generation::ids_tensor;
use glimpse_models::{ClipConfig, Gpt2Config, KvCache};

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn timed<T>(what: &str, device: &Device, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    device.sync().expect("device sync");
    println!(
        "{what:<48} {:>8.3} s   peak RSS {:>7.0} MiB",
        start.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    out
}

fn main() {
    let choice = match std::env::args().nth(1).as_deref() {
        Some("wgpu") => DeviceChoice::Wgpu,
        Some("cpu") | None => DeviceChoice::Cpu,
        Some(other) => panic!("unknown device {other}; use cpu or wgpu"),
    };
    let selected = device::select(choice).expect("device");
    let device = &selected.device;
    println!("device: {}", selected.info);

    let gpt2 = Gpt2Config::gpt2_small();
    let model = timed("GPT-2 small: init random weights", device, || {
        let model = gpt2.init(device);
        // Materialise the lazy parameters so the timing below is the forward pass alone.
        let _ = model.logits(Tensor::zeros([1, 1, gpt2.n_embd], device));
        model
    });
    let prompt: Vec<u32> = (0..8).map(|i| 464 + i * 1000).collect();
    let mut cache = KvCache::new();
    let hidden = timed("GPT-2 small: forward 8 tokens", device, || {
        let h = model.forward_ids(ids_tensor(&prompt, device), &mut cache);
        model.logits(h).into_data()
    });
    assert_eq!(hidden.shape().dims::<3>(), [1, 8, 50257]);
    timed("GPT-2 small: 1 cached decode step", device, || {
        model.logits(model.forward_ids(ids_tensor(&[1000], device), &mut cache)).into_data()
    });

    let clip = ClipConfig::vit_b_32();
    let model = timed("CLIP ViT-B/32: init random weights", device, || clip.init(device));
    let pixels = Tensor::<4>::random([1, 3, 224, 224], burn::tensor::Distribution::Default, device);
    timed("CLIP ViT-B/32: image tower, 1 image 224x224", device, || model.encode_image(pixels).unwrap().into_data());
    let text: Vec<u32> = [49406, 320, 1125, 539, 320, 2368, 49407].to_vec();
    timed("CLIP ViT-B/32: text tower, 1 text of 7 tokens", device, || {
        model.encode_text(&[text], device).unwrap().into_data()
    });
}
