//! Times the test-time optimisation: one CLIP-guided step and a whole dense-captioning run.
//!
//!     cargo run --release -p glimpse-tests --example align_timing -- DEVICE SIZE SECONDS TOKENS
//!
//! DEVICE is `cpu` or `wgpu`; SIZE is `fixture` (the tiny parity models) or `real` (GPT-2 small and
//! CLIP ViT-B/32 shapes with random weights; the fixture tokenizers stand in for the real ones,
//! which changes nothing about the cost); SECONDS is the video length at 2 fps; TOKENS the caption
//! length. Prints one line per measurement.

use std::time::Instant;

use glimpse_align::guided::{self, GuidanceConfig, Targets};
use glimpse_align::zerota::{ZeroTaConfig, dense_caption, embed_frames};
use glimpse_hub::{ClipBundle, Gpt2Bundle, ModelFiles};
use glimpse_media::decode_image;
use glimpse_models::device::{self, DeviceChoice};
use glimpse_models::{ClipConfig, Gpt2Config, l2_normalize};
use glimpse_tests::{block_on, fixture};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_string());
    let choice = if arg(0, "cpu") == "wgpu" { DeviceChoice::Wgpu } else { DeviceChoice::Cpu };
    let real = arg(1, "fixture") == "real";
    let seconds: f64 = arg(2, "60").parse().expect("SECONDS");
    let tokens: usize = arg(3, "12").parse().expect("TOKENS");
    let selected = device::select(choice).expect("device");
    let device = selected.device.clone();

    let mut clip = ClipBundle::load(&ModelFiles::from_dir(fixture("clip-a")).unwrap(), &device).unwrap();
    let mut lm = Gpt2Bundle::load(&ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap(), &device).unwrap();
    if real {
        clip.config = ClipConfig::vit_b_32();
        clip.model = clip.config.init(&device);
        clip.preprocess = glimpse_media::ImagePreprocess::clip_default(224);
        lm.config = Gpt2Config::gpt2_small();
        lm.model = lm.config.init(&device);
    }
    println!(
        "device: {}; models: {}",
        selected.info,
        if real { "GPT-2 small + CLIP ViT-B/32 (random)" } else { "fixtures" }
    );

    let image = decode_image(&std::fs::read(fixture("images").join("rgb_45x38.png")).unwrap()).unwrap();
    let other = decode_image(&std::fs::read(fixture("images").join("gray_64x64.png")).unwrap()).unwrap();
    let target = l2_normalize(clip.encode_images(std::slice::from_ref(&image)).unwrap());

    // One guided step: warm up (shader compilation, lazy weights) with a first token, then time.
    let config =
        GuidanceConfig { max_tokens: 3, steps_per_token: 3, stop_at_sentence_end: false, ..GuidanceConfig::default() };
    let mut marks = Vec::new();
    block_on(guided::caption(&clip, &lm, Targets::Fixed(target), &config, |_| marks.push(Instant::now()))).unwrap();
    let later: Vec<f64> = marks.windows(2).skip(3).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    let per_step = later.iter().sum::<f64>() / later.len() as f64;
    println!("guided step (1 caption, top-16, incl. candidate scoring): {:.3} s", per_step);

    // A whole video: two alternating scenes, 2 fps.
    let n = (seconds * 2.0) as usize;
    let frames: Vec<_> = (0..n).map(|i| if i < n / 2 { image.clone() } else { other.clone() }).collect();
    let start = Instant::now();
    let embedded = embed_frames(&clip, &frames).unwrap();
    device.sync().unwrap();
    let embed_s = start.elapsed().as_secs_f64();
    let config = ZeroTaConfig {
        guidance: GuidanceConfig { max_tokens: tokens, ..ZeroTaConfig::default().guidance },
        ..ZeroTaConfig::default()
    };
    let start = Instant::now();
    let events = block_on(dense_caption(&clip, &lm, embedded, seconds, &config, |_| {})).unwrap();
    let caption_s = start.elapsed().as_secs_f64();
    println!(
        "video {seconds} s at 2 fps ({n} frames), K=3, {tokens} tokens x 3 steps: frames {embed_s:.1} s + events {caption_s:.1} s = {:.1} s ({} events)",
        embed_s + caption_s,
        events.len()
    );
}
