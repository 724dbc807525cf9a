//! Image resizing that reproduces Pillow's `Image.resize` on 8-bit images exactly.
//!
//! CLIP checkpoints are evaluated with transformers' PIL preprocessing, and a pixel that is off by
//! one after resizing moves an embedding by about 1e-3. So glimpse uses Pillow's documented
//! convolution-based resampling: a separable filter whose support grows with the downscaling
//! factor (antialiasing), weights normalised per output pixel and quantised to fixed point with 22
//! fractional bits, the horizontal pass first with results rounded to 8 bits, then the vertical.

use std::borrow::Cow;
use std::ops::Range;

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

/// For each output pixel of a range: the first input pixel it reads and its fixed-point weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

impl Taps {
    /// The input pixels the range reads.
    fn span(&self) -> Range<usize> {
        let end = self.first.iter().zip(&self.weights).map(|(first, w)| first + w.len()).max().unwrap_or(0);
        self.first.first().copied().unwrap_or(0)..end
    }
}

/// The taps of output pixels `outputs` of an axis resized from `in_size` to `out_size` pixels: each
/// depends on its own index only, so a range of them is exactly that part of the whole axis.
fn taps(in_size: usize, out_size: usize, outputs: Range<usize>, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let mut first = Vec::with_capacity(outputs.len());
    let mut weights = Vec::with_capacity(outputs.len());
    for out in outputs {
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

/// One separable pass along x (`horizontal`) or y through `taps`, whose input pixels are counted
/// from `offset` in `src` (the rows of a band cut out for a window). Works on whole rows of raw
/// bytes (a 1080p video frame per sample goes through here): the horizontal pass sums each output
/// pixel's taps from one row, the vertical pass adds each input row, weighted, into a row of
/// accumulators. Integer sums do not depend on their order, so the result is Pillow's to the bit.
fn resample_axis(src: &RgbImage, taps: &Taps, offset: usize, horizontal: bool) -> RgbImage {
    const ROUND: i32 = 1 << (PRECISION_BITS - 1);
    let (in_width, in_height) = (src.width() as usize, src.height() as usize);
    let out_len = taps.first.len();
    let (width, height) = if horizontal { (out_len, in_height) } else { (in_width, out_len) };
    let input = src.as_raw();
    let mut out = vec![0u8; width * height * 3];
    if horizontal {
        for (row, out_row) in input.chunks_exact(in_width * 3).zip(out.chunks_exact_mut(width * 3)) {
            for (x, px) in out_row.chunks_exact_mut(3).enumerate() {
                let (start, weights) = (taps.first[x] - offset, &taps.weights[x]);
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
                let row = &input[(taps.first[y] - offset + i) * row_len..][..row_len];
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

/// The pixels of `src` in `columns` x `rows`, which lie within it.
fn cut(src: &RgbImage, columns: Range<usize>, rows: Range<usize>) -> RgbImage {
    let row_len = src.width() as usize * 3;
    let (width, height) = (columns.len(), rows.len());
    let mut bytes = Vec::with_capacity(width * height * 3);
    for y in rows {
        bytes.extend_from_slice(&src.as_raw()[y * row_len + columns.start * 3..y * row_len + columns.end * 3]);
    }
    RgbImage::from_raw(width as u32, height as u32, bytes).expect("sized to the ranges above")
}

/// Resizes to `width x height` as Pillow does. Sizes must be non-zero.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    resize_window(src, (width as usize, height as usize), (0..width as usize, 0..height as usize), filter)
}

/// The part `columns` x `rows` of [`resize`]'s output at `width x height`, computed alone and equal
/// to it bit for bit: a centre crop needs no more (an 8x7000 frame resized to a 224 shorter side
/// would be 196000 pixels long, of which the crop keeps 224). As Pillow, an axis whose size does
/// not change is not resampled. Sizes and ranges must be non-empty, the ranges within the output.
pub fn resize_window(
    src: &RgbImage,
    (width, height): (usize, usize),
    (columns, rows): (Range<usize>, Range<usize>),
    filter: Filter,
) -> RgbImage {
    let (in_width, in_height) = (src.width() as usize, src.height() as usize);
    // The input rows the window's vertical taps read: the horizontal pass needs no others.
    let vertical = (height != in_height).then(|| taps(in_height, height, rows.clone(), filter));
    let band_rows = vertical.as_ref().map_or(rows, Taps::span);
    let band = if band_rows == (0..in_height) {
        Cow::Borrowed(src)
    } else {
        Cow::Owned(cut(src, 0..in_width, band_rows.clone()))
    };
    let horizontal = if width != in_width {
        resample_axis(&band, &taps(in_width, width, columns, filter), 0, true)
    } else if columns == (0..in_width) {
        band.into_owned()
    } else {
        cut(&band, columns, 0..band.height() as usize)
    };
    match vertical {
        Some(taps) => resample_axis(&horizontal, &taps, band_rows.start, false),
        None => horizontal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution written per output pixel and channel, straight from its definition.
    fn reference_axis(src: &RgbImage, out_len: u32, horizontal: bool, filter: Filter) -> RgbImage {
        let in_len = if horizontal { src.width() } else { src.height() } as usize;
        let taps = taps(in_len, out_len as usize, 0..out_len as usize, filter);
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

    /// A window of the output is the same pixels as the window cut from the whole output, for
    /// windows at the edges and inside, with each axis scaled up, down or kept.
    #[test]
    fn windows_equal_the_same_part_of_the_whole_resize() {
        let mut rng = crate::rng::Rng::new(2);
        let mut noise = || (rng.next_u64() >> 56) as u8;
        for (w, h, out_w, out_h) in
            [(8, 70, 24, 210), (97, 61, 23, 17), (40, 30, 40, 90), (64, 48, 33, 48), (5, 5, 5, 5)]
        {
            let src = RgbImage::from_fn(w, h, |_, _| image::Rgb([noise(), noise(), noise()]));
            for filter in [Filter::Bicubic, Filter::Bilinear] {
                let whole = resize(&src, out_w, out_h, filter);
                let (out_w, out_h) = (out_w as usize, out_h as usize);
                for (columns, rows) in
                    [(0..out_w, 0..out_h), (0..1, out_h - 1..out_h), (out_w / 3..out_w / 3 + 2, out_h / 2..out_h)]
                {
                    let expected = cut(&whole, columns.clone(), rows.clone());
                    let window = resize_window(&src, (out_w, out_h), (columns.clone(), rows.clone()), filter);
                    assert_eq!(window, expected, "{w}x{h} -> {out_w}x{out_h} {filter:?}, {columns:?} x {rows:?}");
                }
            }
        }
    }
}
