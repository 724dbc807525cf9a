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

/// One separable pass along x (`horizontal`) or y, to `out_len` pixels on that axis. Works on
/// whole rows of raw bytes (a 1080p video frame per sample goes through here): the horizontal pass
/// sums each output pixel's taps from one row, the vertical pass adds each input row, weighted,
/// into a row of accumulators. Integer sums do not depend on their order, so the result is
/// Pillow's to the bit.
fn resample_axis(src: &RgbImage, out_len: u32, horizontal: bool, filter: Filter) -> RgbImage {
    const ROUND: i32 = 1 << (PRECISION_BITS - 1);
    let (in_width, in_height) = (src.width() as usize, src.height() as usize);
    let taps = taps(if horizontal { in_width } else { in_height }, out_len as usize, filter);
    let (width, height) = if horizontal { (out_len as usize, in_height) } else { (in_width, out_len as usize) };
    let input = src.as_raw();
    let mut out = vec![0u8; width * height * 3];
    if horizontal {
        for (row, out_row) in input.chunks_exact(in_width * 3).zip(out.chunks_exact_mut(width * 3)) {
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                let (start, weights) = (taps.first[x], &taps.weights[x]);
                let mut acc = [ROUND; 3];
                for (s, &k) in row[3 * start..3 * (start + weights.len())].chunks_exact(3).zip(weights) {
                    for c in 0..3 {
                        acc[c] += i32::from(s[c]) * k;
                    }
                }
                for c in 0..3 {
                    px[c] = to_u8(acc[c]);
                }
            }
        }
    } else {
        let row_len = in_width * 3;
        let mut acc = vec![0i32; row_len];
        for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
            acc.fill(ROUND);
            for (i, &k) in taps.weights[y].iter().enumerate() {
                let row = &input[(taps.first[y] + i) * row_len..][..row_len];
                for (a, &s) in acc.iter_mut().zip(row) {
                    *a += i32::from(s) * k;
                }
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = to_u8(a);
            }
        }
    }
    RgbImage::from_raw(width as u32, height as u32, out).expect("sized to width x height above")
}

/// Resizes to `width x height` as Pillow does. Sizes must be non-zero.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let horizontal = if width != src.width() { resample_axis(src, width, true, filter) } else { src.clone() };
    if height != src.height() { resample_axis(&horizontal, height, false, filter) } else { horizontal }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution written per output pixel and channel, straight from its definition.
    fn reference_axis(src: &RgbImage, out_len: u32, horizontal: bool, filter: Filter) -> RgbImage {
        let taps = taps(if horizontal { src.width() } else { src.height() } as usize, out_len as usize, filter);
        let (w, h) = if horizontal { (out_len, src.height()) } else { (src.width(), out_len) };
        RgbImage::from_fn(w, h, |x, y| {
            let out = if horizontal { x } else { y } as usize;
            image::Rgb(std::array::from_fn(|c| {
                let mut acc: i32 = 1 << (PRECISION_BITS - 1);
                for (i, &k) in taps.weights[out].iter().enumerate() {
                    let at = (taps.first[out] + i) as u32;
                    let (sx, sy) = if horizontal { (at, y) } else { (x, at) };
                    acc += i32::from(src.get_pixel(sx, sy)[c]) * k;
                }
                to_u8(acc)
            }))
        })
    }

    #[test]
    fn row_passes_equal_the_per_pixel_definition() {
        let mut rng = crate::rng::Rng::new(1);
        let mut noise = || (rng.next_u64() >> 56) as u8;
        for (w, h, out_w, out_h) in
            [(97, 61, 23, 17), (40, 30, 40, 90), (1, 9, 5, 2), (13, 1, 3, 7), (192, 108, 45, 24)]
        {
            let src = RgbImage::from_fn(w, h, |_, _| image::Rgb([noise(), noise(), noise()]));
            for filter in [Filter::Bicubic, Filter::Bilinear] {
                let expected = reference_axis(&reference_axis(&src, out_w, true, filter), out_h, false, filter);
                assert_eq!(resize(&src, out_w, out_h, filter), expected, "{w}x{h} -> {out_w}x{out_h} {filter:?}");
            }
        }
    }
}
