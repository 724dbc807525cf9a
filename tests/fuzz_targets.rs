//! The bodies of the fuzz targets in `fuzz/`: each target is one call to a function here, and
//! `tests/fuzz_replay.rs` runs the committed corpus and every saved crash through the same
//! functions under `cargo test`. Any bytes are valid input: an error is the right answer to bad
//! data; a panic, or memory or time out of proportion to the input, is a bug.

use std::io::Cursor;

use glimpse_media::video::{Sample, sample_animation};
use glimpse_media::{ClipTokenizer, Gpt2Tokenizer, ImagePreprocess, decode_image};
use glimpse_models::{Clip, ClipConfig, Gpt2, Gpt2Config};
use image::{ImageFormat, RgbImage};

/// Splits an input in two: its first two bytes (little-endian) are the length of the first part,
/// the rest after it is the second.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return (&[], data);
    };
    rest.split_at(usize::from(u16::from_le_bytes(*length)).min(rest.len()))
}

/// `config.json` and `model.safetensors` (see [`split`]), loaded as GPT-2 and as CLIP (the
/// config's `model_type` lets at most one of them past the config).
pub fn weights(data: &[u8]) {
    let (config, safetensors) = split(data);
    let device = glimpse_models::device::cpu().device;
    if let Ok(config) = Gpt2Config::from_json(config) {
        let _ = Gpt2::load(&config, safetensors, &device);
    }
    if let Ok(config) = ClipConfig::from_json(config) {
        let _ = Clip::load(&config, safetensors, &device);
    }
}

/// A text and a `tokenizer.json` (see [`split`]): the tokenizer is read as GPT-2's and as CLIP's,
/// and encodes a fixed text and the given one; GPT-2's decodes what it encoded.
pub fn tokenizer(data: &[u8]) {
    let (text, json) = split(data);
    let text = String::from_utf8_lossy(text);
    let texts: [&str; 2] = ["A photo of a cat, 2 dogs and an émoji 🐈.", &text];
    if let Ok(tokenizer) = Gpt2Tokenizer::from_json(json) {
        for text in texts {
            if let Ok(ids) = tokenizer.encode(text) {
                let _ = tokenizer.decode(&ids);
            }
        }
    }
    if let Ok(tokenizer) = ClipTokenizer::from_json(json, 77) {
        for text in texts {
            let _ = tokenizer.encode(text);
        }
    }
}

/// An image file, decoded and preprocessed for CLIP, and the same bytes sampled as an animated
/// GIF, WebP and PNG with each frame preprocessed (at 32 pixels, to keep runs short).
pub fn image(data: &[u8]) {
    if let Ok(image) = decode_image(data) {
        let _ = ImagePreprocess::clip_default(224).apply(&image);
    }
    let preprocess = ImagePreprocess::clip_default(32);
    for format in [ImageFormat::Gif, ImageFormat::WebP, ImageFormat::Png] {
        let _ = sample_animation(Cursor::new(data), format, 2.0, "fuzz input", &mut |sample| match sample {
            Sample::Frame(frame) => preprocess.apply(&frame).map(drop),
            Sample::Again => Ok(()),
        });
    }
}

/// A `preprocessor_config.json` for a 224-pixel model, applied to a small image when it parses.
pub fn preprocessor(data: &[u8]) {
    if let Ok(preprocess) = ImagePreprocess::from_json(data, 224) {
        let image = RgbImage::from_fn(7, 5, |x, y| image::Rgb([(x * 36) as u8, (y * 60) as u8, 128]));
        let _ = preprocess.apply(&image);
    }
}

/// For the fuzz targets: libFuzzer's panic hook aborts on every panic, also on those that
/// `glimpse_media::untrusted::decoding` turns into errors by design (a third-party decoder
/// failing on malformed data). Those are let through; any other panic still aborts.
pub fn let_contained_panics_unwind() {
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !glimpse_media::untrusted::panic_becomes_error() {
            abort(info);
        }
    }));
}
