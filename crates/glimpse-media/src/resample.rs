//! Image resizing that reproduces Pillow's `Image.resize` on 8-bit images exactly.
//!
//! CLIP checkpoints are evaluated with transformers' PIL preprocessing, and a pixel that is off by
//! one after resizing moves an embedding by about 1e-3. So glimpse uses Pillow's documented
//! convolution-based resampling: a separable filter whose support grows with the downscaling
//! factor (antialiasing), weights normalised per output pixel and quantised to fixed point with 22
//! fractional bits, the horizontal pass first with results rounded to 8 bits, then the vertical.

use image::RgbImage;

/// The resampling filters of Hugging Face preprocessors (`resample` 2 and 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Triangle filter, support 1.
    Bilinear,
    /// Keys cubic with a = -0.5, support 2.
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => (1.0 - x).max(0.0),
            Self::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel: the first input pixel it reads and its fixed-point weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // `as i64` truncates toward zero, as the C cast it mirrors.
        let start = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let raw: Vec<f64> = (start..end).map(|x| filter.weight((x as f64 - center + 0.5) / filter_scale)).collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w } * f64::from(1u32 << PRECISION_BITS);
                if w < 0.0 { (w - 0.5) as i32 } else { (w + 0.5) as i32 }
            })
            .collect();
        first.push(start);
        weights.push(fixed);
    }
    Taps { first, weights }
}

fn to_u8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass along x (`horizontal`) or y, to `out_len` pixels on that axis.
fn resample_axis(src: &RgbImage, out_len: u32, horizontal: bool, filter: Filter) -> RgbImage {
    let in_len = if horizontal { src.width() } else { src.height() };
    let taps = taps(in_len as usize, out_len as usize, filter);
    let (w, h) = if horizontal { (out_len, src.height()) } else { (src.width(), out_len) };
    RgbImage::from_fn(w, h, |x, y| {
        let out = if horizontal { x } else { y } as usize;
        let (start, weights) = (taps.first[out], &taps.weights[out]);
        let mut px = [0u8; 3];
        for (c, value) in px.iter_mut().enumerate() {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (i, &k) in weights.iter().enumerate() {
                let at = (start + i) as u32;
                let (sx, sy) = if horizontal { (at, y) } else { (x, at) };
                acc += i32::from(src.get_pixel(sx, sy)[c]) * k;
            }
            *value = to_u8(acc);
        }
        image::Rgb(px)
    })
}

/// Resizes to `width x height` as Pillow does. Sizes must be non-zero.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let horizontal = if width != src.width() { resample_axis(src, width, true, filter) } else { src.clone() };
    if height != src.height() { resample_axis(&horizontal, height, false, filter) } else { horizontal }
}
