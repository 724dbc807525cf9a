//! CLIP image preprocessing, as transformers' `CLIPImageProcessor` (PIL backend) does it:
//! convert to RGB, resize the shorter side (bicubic), centre-crop, rescale to [0, 1], normalise.

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::Deserialize;

use crate::MediaError;
use crate::resample::{Filter, resize, resize_window};
use crate::untrusted::{decoding, settings_from_json, settings_from_value};

/// OpenAI CLIP's channel means and standard deviations, as published (and as written into
/// `preprocessor_config.json`: an `f64` prints back as this text, an `f32` would not).
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// [`CLIP_MEAN`] and [`CLIP_STD`] as the preprocessing applies them.
fn clip_normalize() -> ([f32; 3], [f32; 3]) {
    (CLIP_MEAN.map(|m| m as f32), CLIP_STD.map(|s| s as f32))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resize {
    /// Shorter side to this length, aspect ratio kept (the longer side rounds down).
    ShortestEdge(u32),
    /// Exactly `height x width`.
    Exact { height: u32, width: u32 },
}

/// The most bytes an image file may have.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// The longest side any preprocessing step may produce.
pub const MAX_SIDE: u32 = 16384;

/// How many times the model's image size a `preprocessor_config.json` may resize to before cropping.
pub const MAX_RESIZE_FACTOR: u32 = 4;

/// The largest magnitude a preprocessed pixel value may reach.
const MAX_PIXEL_VALUE: f64 = 1e4;

/// Where an image processor saved alone (and any before transformers 5) keeps its settings.
const PREPROCESSOR_FILE: &str = "preprocessor_config.json";
/// Where transformers 5 saves a processor's, under `image_processor`.
const PROCESSOR_FILE: &str = "processor_config.json";

/// The image settings of a checkpoint's `processor_config.json` and `preprocessor_config.json`
/// (either may be missing), as transformers picks them: the processor's `image_processor` where
/// it has one, else the preprocessor file. Only a processor file that is no JSON is refused: one
/// without image settings (transformers 4 wrote just the processor's class) is passed over.
pub fn image_settings_file<'a>(
    processor: Option<&'a [u8]>,
    preprocessor: Option<&'a [u8]>,
) -> Result<Option<&'a [u8]>, MediaError> {
    if let Some(processor) = processor {
        let value: serde_json::Value = serde_json::from_slice(processor).map_err(|e| {
            let message = format!("not valid JSON ({e}); it is damaged: download or save it again");
            MediaError::Preprocessor { file: PROCESSOR_FILE, message }
        })?;
        if value.get("image_processor").is_some_and(serde_json::Value::is_object) {
            return Ok(Some(processor));
        }
    }
    Ok(preprocessor)
}

/// The settings of a `preprocessor_config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    pub resize: Option<(Resize, Filter)>,
    /// `(height, width)`.
    pub center_crop: Option<(u32, u32)>,
    pub rescale_factor: Option<f64>,
    /// `(mean, std)` per channel.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// A size as preprocessor configs write it: a bare number (legacy) or a map.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeSpec {
    Number(u32),
    Map { shortest_edge: Option<u32>, height: Option<u32>, width: Option<u32> },
}

#[derive(Debug, Deserialize)]
struct PreprocessorJson {
    #[serde(default = "yes")]
    do_resize: bool,
    size: Option<SizeSpec>,
    #[serde(default = "bicubic")]
    resample: u8,
    #[serde(default = "yes")]
    do_center_crop: bool,
    crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default = "rescale")]
    rescale_factor: f64,
    #[serde(default = "yes")]
    do_normalize: bool,
    image_mean: Option<PerChannel>,
    image_std: Option<PerChannel>,
}

/// A value per channel, or one for all of them (transformers takes either).
#[derive(Debug, Deserialize)]
#[serde(try_from = "serde_json::Value")]
enum PerChannel {
    All(f32),
    Each(Vec<f32>),
}

impl TryFrom<serde_json::Value> for PerChannel {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        let number = |value: &serde_json::Value| value.as_f64().map(|v| v as f32);
        match &value {
            serde_json::Value::Array(values) => values.iter().map(number).collect::<Option<_>>().map(Self::Each),
            single => number(single).map(Self::All),
        }
        .ok_or_else(|| format!("{value} is neither a number nor a list of numbers, one a channel"))
    }
}

fn yes() -> bool {
    true
}
fn bicubic() -> u8 {
    3
}
fn rescale() -> f64 {
    1.0 / 255.0
}

impl ImagePreprocess {
    /// CLIP's settings for a model whose image tower takes `image_size` pixels square; used when a
    /// checkpoint has no `preprocessor_config.json`.
    pub fn clip_default(image_size: u32) -> Self {
        Self {
            resize: Some((Resize::ShortestEdge(image_size), Filter::Bicubic)),
            center_crop: Some((image_size, image_size)),
            rescale_factor: Some(rescale()),
            normalize: Some(clip_normalize()),
        }
    }

    /// Reads `preprocessor_config.json`, or `processor_config.json`'s `image_processor` (the file
    /// [`image_settings_file`] picks); missing fields take CLIP's defaults for `image_size`.
    pub fn from_json(json: &[u8], image_size: u32) -> Result<Self, MediaError> {
        let value: Result<serde_json::Value, _> = serde_json::from_slice(json);
        // A processor file's settings are its `image_processor` object.
        let (file, raw) = match value {
            Ok(mut value) if value.get("image_processor").is_some_and(serde_json::Value::is_object) => {
                (PROCESSOR_FILE, settings_from_value(value["image_processor"].take()))
            }
            Ok(value) => (PREPROCESSOR_FILE, settings_from_value(value)),
            // Its refusal, in the words of every settings file's.
            Err(_) => (PREPROCESSOR_FILE, settings_from_json(json)),
        };
        let bad = |message: String| MediaError::Preprocessor { file, message };
        let raw: PreprocessorJson = raw.map_err(bad)?;
        let filter = match raw.resample {
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            other => {
                return Err(bad(format!("resample = {other} is not supported (2 = bilinear, 3 = bicubic)")));
            }
        };
        let resize = match raw.size {
            None => Resize::ShortestEdge(image_size),
            Some(SizeSpec::Number(n)) | Some(SizeSpec::Map { shortest_edge: Some(n), .. }) => Resize::ShortestEdge(n),
            Some(SizeSpec::Map { height: Some(height), width: Some(width), .. }) => Resize::Exact { height, width },
            Some(_) => {
                return Err(bad("`size` needs `shortest_edge` or `height` and `width`".into()));
            }
        };
        let crop = match raw.crop_size {
            None => (image_size, image_size),
            Some(SizeSpec::Number(n)) => (n, n),
            Some(SizeSpec::Map { height: Some(h), width: Some(w), .. }) => (h, w),
            Some(_) => return Err(bad("`crop_size` needs `height` and `width`".into())),
        };
        let channels = |v: Option<PerChannel>, default: [f32; 3], name: &str| -> Result<[f32; 3], MediaError> {
            match v {
                None => Ok(default),
                Some(PerChannel::All(value)) => Ok([value; 3]),
                Some(PerChannel::Each(v)) => v.try_into().map_err(|v: Vec<f32>| {
                    bad(format!("{name} has {} values, where an RGB image needs one or 3", v.len()))
                }),
            }
        };
        let (clip_mean, clip_std) = clip_normalize();
        let mean = channels(raw.image_mean, clip_mean, "image_mean")?;
        let std = channels(raw.image_std, clip_std, "image_std")?;
        if std.iter().any(|&s| s <= 0.0 || !s.is_finite()) {
            return Err(bad(format!("image_std {std:?} must be positive")));
        }
        let resized = match resize {
            Resize::ShortestEdge(n) => vec![n],
            Resize::Exact { height, width } => vec![height, width],
        };
        let mut sizes = vec![crop.0, crop.1];
        sizes.extend(&resized);
        if sizes.iter().any(|&s| s == 0 || s > MAX_SIDE) {
            return Err(bad(format!("image sizes {sizes:?} must be in 1..={MAX_SIDE}")));
        }
        // The model takes `image_size` pixels square; any other output would be refused only after
        // every image had been preprocessed to it. Without a crop, a shortest-edge resize fits
        // square images only (others are refused per image).
        let mismatch = match (raw.do_center_crop, raw.do_resize, resize) {
            (true, _, _) => (crop != (image_size, image_size)).then(|| format!("crop_size {}x{}", crop.0, crop.1)),
            (false, true, Resize::Exact { height, width }) => {
                (height != image_size || width != image_size).then(|| format!("size {height}x{width}"))
            }
            (false, true, Resize::ShortestEdge(n)) => (n != image_size).then(|| format!("size.shortest_edge {n}")),
            (false, false, _) => None,
        };
        if let Some(setting) = mismatch {
            return Err(bad(format!(
                "{setting} does not give the {image_size}x{image_size} pixels the model takes (vision_config.image_size \
                 in config.json); the file belongs to another model"
            )));
        }
        // A resize far beyond what the model takes only costs: 16384 x 16384 before a 224 crop is
        // 1.4 GB and seconds for every image, asked for by one line of JSON.
        let most = image_size.saturating_mul(MAX_RESIZE_FACTOR);
        if raw.do_resize && resized.iter().any(|&s| s > most) {
            return Err(bad(format!(
                "size {resized:?} resizes images beyond {most} pixels, {MAX_RESIZE_FACTOR} times the model's \
                 {image_size}; the file belongs to another model"
            )));
        }
        if raw.do_rescale && !(raw.rescale_factor.is_finite() && raw.rescale_factor > 0.0) {
            return Err(bad(format!("rescale_factor = {} must be a finite number above 0", raw.rescale_factor)));
        }
        if raw.do_normalize && mean.iter().any(|m| !m.is_finite()) {
            return Err(bad(format!("image_mean {mean:?} must be finite")));
        }
        // What black and white become: a tiny std, a huge mean or rescale factor make infinities
        // (CLIP's own settings give -1.8..2.2).
        let scale = if raw.do_rescale { raw.rescale_factor } else { 1.0 };
        for (m, s) in mean.iter().zip(&std) {
            let (m, s) = if raw.do_normalize { (f64::from(*m), f64::from(*s)) } else { (0.0, 1.0) };
            let extreme = [0.0, 255.0 * scale].map(|v| ((v - m) / s).abs()).into_iter().fold(0.0, f64::max);
            if extreme.is_nan() || extreme > MAX_PIXEL_VALUE {
                return Err(bad(format!(
                    "image_mean {mean:?}, image_std {std:?} and rescale_factor {} take pixel values to {extreme:e}, \
                     beyond {MAX_PIXEL_VALUE}; the file is damaged",
                    raw.rescale_factor
                )));
            }
        }
        Ok(Self {
            resize: raw.do_resize.then_some((resize, filter)),
            center_crop: raw.do_center_crop.then_some(crop),
            rescale_factor: raw.do_rescale.then_some(raw.rescale_factor),
            normalize: raw.do_normalize.then_some((mean, std)),
        })
    }

    /// Pixel values in channel-first order, `3 x height x width`, with the output `(height, width)`.
    /// With a centre crop only the cropped part is resized (the same pixels: an 8 x 7000 strip
    /// resized to a 224 shorter side would be 196000 pixels long); without one, images whose
    /// resized form would exceed [`MAX_SIDE`] are refused.
    pub fn apply(&self, image: &RgbImage) -> Result<(Vec<f32>, (u32, u32)), MediaError> {
        let image = match (self.resize, self.center_crop) {
            (Some((size, filter)), Some((h, w))) => {
                let (rw, rh) = resized_size(image.width(), image.height(), size);
                // Positions along the resized sides are machine-sized (32 bits in wasm).
                if rw.max(rh) > u64::from(u32::MAX) {
                    return Err(MediaError::Image(format!(
                        "a {}x{} image is too narrow for its length to be resized to {rw}x{rh}; crop it to a less \
                         extreme shape first",
                        image.width(),
                        image.height()
                    )));
                }
                let (columns, rows) = (crop_window(rw, w), crop_window(rh, h));
                let window = resize_window(image, (rw as usize, rh as usize), (columns, rows), filter);
                // The window is the crop where the resized image covers it; a smaller side is
                // padded here.
                center_crop(&window, h, w)
            }
            (Some((size, filter)), None) => {
                let (w, h) = resized_size(image.width(), image.height(), size);
                if w > u64::from(MAX_SIDE) || h > u64::from(MAX_SIDE) {
                    return Err(MediaError::Image(format!(
                        "a {}x{} image would be resized to {w}x{h}, and preprocessor_config.json does not crop it; \
                         sides above {MAX_SIDE} are refused: crop the image to a less extreme shape first",
                        image.width(),
                        image.height()
                    )));
                }
                resize(image, w as u32, h as u32, filter)
            }
            (None, Some((h, w))) => center_crop(image, h, w),
            (None, None) => image.clone(),
        };
        let (w, h) = image.dimensions();
        let plane = w as usize * h as usize;
        let mut out = vec![0.0f32; 3 * plane];
        for (i, px) in image.pixels().enumerate() {
            for c in 0..3 {
                // As numpy does it in transformers: rescale in f64, store f32, normalise in f32.
                let mut v = match self.rescale_factor {
                    Some(factor) => (f64::from(px[c]) * factor) as f32,
                    None => f32::from(px[c]),
                };
                if let Some((mean, std)) = self.normalize {
                    v = (v - mean[c]) / std[c];
                }
                out[c * plane + i] = v;
            }
        }
        Ok((out, (h, w)))
    }
}

/// `(width, height)` after resizing, as transformers computes it (the longer side rounds down).
fn resized_size(width: u32, height: u32, size: Resize) -> (u64, u64) {
    match size {
        Resize::Exact { height, width } => (width.into(), height.into()),
        Resize::ShortestEdge(short) => {
            let short = u64::from(short);
            let long = |l: u32, s: u32| (short * u64::from(l) / u64::from(s)).max(1);
            if width <= height { (short, long(height, width)) } else { (long(width, height), short) }
        }
    }
}

/// The part of a side of `len` pixels that a centre crop to `crop` keeps (all of a shorter side,
/// which the crop pads), as [`center_crop`] places it.
fn crop_window(len: u64, crop: u32) -> std::ops::Range<usize> {
    let crop = u64::from(crop);
    if len >= crop {
        let start = (len - crop) / 2;
        start as usize..(start + crop) as usize
    } else {
        0..len as usize
    }
}

/// Centre crop to `h x w`; a smaller image is padded with zeros around it first (as transformers).
fn center_crop(image: &RgbImage, h: u32, w: u32) -> RgbImage {
    let (iw, ih) = (i64::from(image.width()), i64::from(image.height()));
    // Offsets of the crop window in the image (negative when the image is smaller).
    let top = if ih >= i64::from(h) { (ih - i64::from(h)) / 2 } else { -((i64::from(h) - ih + 1) / 2) };
    let left = if iw >= i64::from(w) { (iw - i64::from(w)) / 2 } else { -((i64::from(w) - iw + 1) / 2) };
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = (i64::from(x) + left, i64::from(y) + top);
        if (0..iw).contains(&sx) && (0..ih).contains(&sy) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Cells per side of the grid [`is_blank`] compares.
const BLANK_GRID: u32 = 16;

/// Largest difference (0-255, in any channel) between the averages of neighbouring cells of a
/// blank frame.
pub const BLANK_CONTRAST: f64 = 16.0;

/// Whether a frame shows nothing but a flat colour or a smooth gradient (black between shots, a
/// fade, an empty background): no two neighbouring cells of a 16 x 16 grid over the frame differ
/// in their average colour by more than [`BLANK_CONTRAST`] in any channel. Averaging over cells
/// ignores pixel noise and compression artefacts; anything drawn over a few cells stands out.
pub fn is_blank(frame: &RgbImage) -> bool {
    let (w, h) = frame.dimensions();
    let grid = BLANK_GRID.min(w).min(h) as usize;
    if grid == 0 {
        return true;
    }
    let mut sums = vec![[0.0f64; 4]; grid * grid];
    for (x, y, pixel) in frame.enumerate_pixels() {
        let cell = &mut sums[(y as usize * grid / h as usize) * grid + x as usize * grid / w as usize];
        for c in 0..3 {
            cell[c] += f64::from(pixel[c]);
        }
        cell[3] += 1.0;
    }
    let mean = |i: usize| -> [f64; 3] { std::array::from_fn(|c| sums[i][c] / sums[i][3]) };
    let differs = |a: usize, b: usize| mean(a).iter().zip(mean(b)).any(|(x, y)| (x - y).abs() > BLANK_CONTRAST);
    !(0..grid).any(|r| {
        (0..grid).any(|c| {
            (c + 1 < grid && differs(r * grid + c, r * grid + c + 1))
                || (r + 1 < grid && differs(r * grid + c, (r + 1) * grid + c))
        })
    })
}

/// Decodes PNG, JPEG, WebP or GIF (first frame) bytes, turned upright as their Exif orientation
/// says (as transformers' `load_image` does: a phone's photos are stored sideways), and converts to
/// 8-bit RGB as transformers' `convert_rgb` does: grey is replicated and transparency is
/// composited over white. A JPEG cut short is refused (its decoder fills the missing part grey).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, MediaError> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| MediaError::Image(e.to_string()))?;
    let Some(format) = reader.format() else {
        let head: Option<&[u8; 12]> = bytes.get(..12).and_then(|h| h.try_into().ok());
        let what = if bytes.is_empty() {
            "the file is empty"
        } else if head.is_some_and(crate::video::is_heif) {
            "a HEIF / AVIF picture (as phones save photos), which glimpse does not read; convert it to JPEG or PNG"
        } else if head.is_some_and(crate::video::looks_like_video) {
            "a video, not an image; caption it with caption-video"
        } else {
            "unrecognised format; glimpse reads PNG, JPEG, WebP and GIF"
        };
        return Err(MediaError::Image(what.into()));
    };
    if !READ_FORMATS.contains(&format) {
        return Err(MediaError::Image(format!(
            "the image is {}, which glimpse does not read (PNG, JPEG, WebP and GIF); convert it to PNG or JPEG",
            format_name(format)
        )));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        return Err(MediaError::Image(
            "the JPEG is cut short (its image data has no end); download or copy it again".into(),
        ));
    }
    let image = decoding("the image decoder", || {
        let limited = |e: image::ImageError| match e {
            image::ImageError::Limits(_) => MediaError::Image(format!(
                "{e}: glimpse decodes images of at most {MAX_SIDE} pixels a side and 1 GiB of pixels; scale it down \
                 first"
            )),
            image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                MediaError::Image(format!("the image is cut short ({e}); download or copy it again"))
            }
            e @ image::ImageError::Decoding(_) => MediaError::Image(format!(
                "the image is damaged, or of a kind its decoder does not read ({e}); download or copy it again, or \
                 export it as PNG or JPEG"
            )),
            e => MediaError::Image(e.to_string()),
        };
        let (mut reader, mut limits) = (reader, decoder_limits());
        reader.limits(limits.clone());
        let mut decoder = reader.into_decoder().map_err(limited)?;
        limits.reserve(decoder.total_bytes()).map_err(limited)?;
        // Unreadable Exif is no orientation, as for a viewer.
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let mut image = DynamicImage::from_decoder(decoder).map_err(limited)?;
        image.apply_orientation(orientation);
        Ok(image)
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(MediaError::Image("the image has no pixels".into()));
    }
    Ok(to_rgb(image))
}

/// The image formats glimpse decodes.
pub(crate) const READ_FORMATS: [ImageFormat; 4] =
    [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Gif];

/// A format's name as a user knows it (`BMP`, `TIFF`).
pub(crate) fn format_name(format: ImageFormat) -> String {
    if format == ImageFormat::Pnm {
        return "PNM (PBM / PGM / PPM)".into();
    }
    format.extensions_str().first().map_or_else(|| format!("{format:?}"), |e| e.to_ascii_uppercase())
}

/// Whether a JPEG holds the end of its image: its segments walked from the start (each skipped by
/// its length: an Exif thumbnail holds markers of its own; stray bytes between segments passed
/// over, as decoders do), through the scans (where 0xFF is followed by 0x00, a restart marker or
/// more 0xFF), to an end-of-image marker. Bytes after it (a phone's motion photo) are allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    const START_OF_SCAN: u8 = 0xDA;
    const END_OF_IMAGE: u8 = 0xD9;
    let mut at = 2;
    let mut in_scan = false;
    loop {
        // The next marker: 0xFF (any number of them) and a byte that is neither 0x00 (a stuffed
        // 0xFF in a scan) nor a restart marker; anything before it is scan data or stray.
        let Some(offset) = bytes.get(at..).and_then(|rest| rest.iter().position(|&b| b == 0xFF)) else { return false };
        at += offset + 1;
        let Some(&marker) = bytes.get(at) else { return false };
        match marker {
            0xFF => continue,
            0x00 | 0xD0..=0xD7 | 0x01 => {
                at += 1;
                continue;
            }
            END_OF_IMAGE => return in_scan,
            _ => {}
        }
        let Some(length) = bytes.get(at + 1..at + 3).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]]))) else {
            return false;
        };
        at += 1 + length;
        in_scan |= marker == START_OF_SCAN;
    }
}

/// What a decoder may allocate for one image or animation frame: sides up to [`MAX_SIDE`] and a
/// gigabyte in all, checked against the header before the pixels are allocated.
pub fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(1 << 30);
    limits
}

/// 8-bit RGB as transformers' `convert_rgb` makes it: grey replicated, transparency composited
/// over white. An 8-bit image's buffer is reused (an RGBA one compacted in place), so a picture
/// at the decoder's limit is not held twice.
pub fn to_rgb(image: image::DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut bytes = rgba.into_raw();
    // Pixel i's three bytes go to 3i, at or before where its four were read: front to back, no
    // byte is written before it is read.
    for i in 0..bytes.len() / 4 {
        let alpha = bytes[4 * i + 3];
        for c in 0..3 {
            bytes[3 * i + c] = over_white(bytes[4 * i + c], alpha);
        }
    }
    bytes.truncate(bytes.len() / 4 * 3);
    bytes.shrink_to_fit();
    RgbImage::from_raw(width, height, bytes).expect("three bytes a pixel")
}

/// One channel of Pillow's `alpha_composite` of a pixel over opaque white, in its integer
/// arithmetic (7 extra bits of precision, division by 255 as two shifts).
fn over_white(value: u8, alpha: u8) -> u8 {
    if alpha == 0 {
        return 255;
    }
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    let (v, a) = (u32::from(value), u32::from(alpha));
    let coef_src = a << 7;
    let coef_white = (255 - a) << 7;
    let blended = v * coef_src + 255 * coef_white;
    (shift_div_255(blended + (0x80 << 7)) >> 7) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_frames_are_blank_and_drawn_ones_are_not() {
        let mut noise = crate::rng::Rng::new(3);
        // Black, a gradient of 40 levels with +-12 of pixel noise, a 1x1 frame: blank.
        let black = RgbImage::new(320, 180);
        let gradient = RgbImage::from_fn(320, 180, |_, y| {
            image::Rgb(
                [0, 1, 2]
                    .map(|c| (150.0 + 40.0 * f64::from(y) / 180.0 + 24.0 * noise.uniform() - 12.0 + c as f64) as u8),
            )
        });
        for frame in [&black, &gradient, &RgbImage::new(1, 1)] {
            assert!(is_blank(frame));
        }
        // A 12 x 12 dark square anywhere on the gradient, or one bright line on black, is content.
        for (x0, y0) in [(0, 0), (150, 80), (308, 168)] {
            let mut drawn = gradient.clone();
            for y in y0..y0 + 12 {
                for x in x0..x0 + 12 {
                    drawn.put_pixel(x, y, image::Rgb([40, 40, 160]));
                }
            }
            assert!(!is_blank(&drawn), "square at {x0},{y0}");
        }
        let mut line = black.clone();
        (0..320).for_each(|x| line.put_pixel(x, 90, image::Rgb([255, 255, 255])));
        assert!(!is_blank(&line));
    }

    /// PNG, JPEG, WebP and GIF bytes all decode to RGB of the right size and roughly the right
    /// colour (JPEG is lossy, GIF palettised).
    #[test]
    fn common_formats_decode_to_rgb() {
        let original = RgbImage::from_fn(37, 21, |x, y| image::Rgb([(x * 6) as u8, (y * 11) as u8, 128]));
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Gif] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(original.clone()).write_to(&mut bytes, format).unwrap();
            let decoded = decode_image(bytes.get_ref()).unwrap();
            assert_eq!(decoded.dimensions(), (37, 21), "{format:?}");
            let err = decoded
                .pixels()
                .zip(original.pixels())
                .flat_map(|(a, b)| (0..3).map(move |c| a[c].abs_diff(b[c])))
                .max();
            assert!(err.unwrap() <= 40, "{format:?}: a channel differs by {err:?}");
        }
    }

    /// Files that are no image glimpse reads say what they are and what to do instead.
    #[test]
    fn files_that_are_no_image_say_what_they_are() {
        let error = |bytes: &[u8]| decode_image(bytes).unwrap_err().to_string();
        assert!(error(b"").contains("the file is empty"));
        assert!(error(b"\0\0\0\x18ftypisom\0\0\0\0").contains("a video, not an image; caption it with caption-video"));
        assert!(error(&[0x1A, 0x45, 0xDF, 0xA3, 0, 0, 0, 0, 0, 0, 0, 0]).contains("caption-video"));
        assert!(error(b"\0\0\0\x18ftypheic\0\0\0\0").contains("HEIF / AVIF picture"));
        let bmp = [&b"BM"[..], &[0u8; 60]].concat();
        assert!(error(&bmp).contains("the image is BMP, which glimpse does not read"), "{}", error(&bmp));
        assert!(error(b"hello, world").contains("unrecognised format"));
    }

    #[test]
    fn transparency_is_composited_over_white() {
        assert_eq!(over_white(0, 0), 255);
        assert_eq!(over_white(10, 255), 10);
        assert_eq!(over_white(0, 128), 127);
        // A whole image, compacted in place: every pixel where it was, each over white.
        let pixels = [[0, 0, 0, 0], [10, 20, 30, 255], [0, 0, 0, 128], [200, 100, 50, 0], [1, 2, 3, 4]];
        let rgba = image::RgbaImage::from_fn(5, 3, |x, y| image::Rgba(pixels[((x + y) % 5) as usize]));
        let rgb = to_rgb(DynamicImage::ImageRgba8(rgba.clone()));
        for (x, y, p) in rgba.enumerate_pixels() {
            assert_eq!(rgb.get_pixel(x, y).0, [0, 1, 2].map(|c| over_white(p[c], p[3])), "({x}, {y})");
        }
    }

    #[test]
    fn preprocessing_must_give_the_models_image_size() {
        let error = |json: &str| ImagePreprocess::from_json(json.as_bytes(), 224).unwrap_err().to_string();
        assert!(error(r#"{"crop_size": 16000}"#).contains("crop_size 16000x16000 does not give the 224x224 pixels"));
        let exact = r#"{"do_center_crop": false, "size": {"height": 224, "width": 300}}"#;
        assert!(error(exact).contains("size 224x300"));
        let shortest = r#"{"do_center_crop": false, "size": {"shortest_edge": 256}}"#;
        assert!(error(shortest).contains("size.shortest_edge 256"));
        assert!(error(r#"{"rescale_factor": 0}"#).contains("rescale_factor = 0 must be"));
        let huge = r#"{"size": {"height": 16384, "width": 16384}}"#;
        assert!(error(huge).contains("resizes images beyond 896 pixels"));
        // What does give 224x224 is accepted: a crop after a larger resize, an exact resize alone.
        assert!(ImagePreprocess::from_json(br#"{"size": 256, "crop_size": 224}"#, 224).is_ok());
        let exact = br#"{"do_center_crop": false, "size": {"height": 224, "width": 224}}"#;
        assert!(ImagePreprocess::from_json(exact, 224).is_ok());
    }

    /// A mean or deviation for all channels at once is each channel's, as transformers takes it;
    /// a list is one value a channel.
    #[test]
    fn one_mean_and_deviation_serve_every_channel() {
        let one = ImagePreprocess::from_json(br#"{"image_mean": 0.5, "image_std": [0.2, 0.25, 0.3]}"#, 224).unwrap();
        assert_eq!(one.normalize, Some(([0.5; 3], [0.2, 0.25, 0.3])));
        let error = |json: &str| ImagePreprocess::from_json(json.as_bytes(), 224).unwrap_err().to_string();
        let err = error(r#"{"image_std": [0.5]}"#);
        assert!(err.contains("image_std has 1 values, where an RGB image needs one or 3"), "{err}");
        let err = error(r#"{"image_mean": "grey"}"#);
        assert!(err.contains(r#"image_mean: "grey" is neither a number nor a list of numbers"#), "{err}");
    }

    fn jpeg_of(image: &RgbImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image.clone()).write_to(&mut bytes, ImageFormat::Jpeg).unwrap();
        bytes.into_inner()
    }

    /// A JPEG cut anywhere after its headers is refused, not decoded with a grey end; whole, or
    /// followed by other bytes (a motion photo's video), it decodes.
    #[test]
    fn jpegs_cut_short_are_refused() {
        let mut rng = crate::rng::Rng::new(5);
        let image = RgbImage::from_fn(64, 48, |_, _| image::Rgb([0, 1, 2].map(|_| (rng.next_u64() >> 56) as u8)));
        let whole = jpeg_of(&image);
        let decoded = decode_image(&whole).unwrap();
        assert_eq!(decoded.dimensions(), (64, 48));
        let mut followed = whole.clone();
        followed.extend_from_slice(b"\0\0\0\x18ftypmp42 and a video after the image");
        assert_eq!(decode_image(&followed).unwrap(), decoded);
        // Stray bytes between two segments before the scan, which decoders pass over.
        // The first segment (after the two bytes of the start marker) ends where its length says.
        let next = 4 + usize::from(u16::from_be_bytes([whole[4], whole[5]]));
        assert_eq!(whole[next], 0xFF);
        let stray = [&whole[..next], &[0, 0][..], &whole[next..]].concat();
        assert!(jpeg_is_complete(&stray));
        for cut in [whole.len() - 1, whole.len() - 2, whole.len() * 2 / 3, whole.len() / 2, 200, 20, 3] {
            let err = decode_image(&whole[..cut]).unwrap_err().to_string();
            assert!(err.contains("cut short") || err.contains("end"), "cut at {cut} of {}: {err}", whole.len());
        }
    }

    /// A PNG cut short or damaged says so, with what to do.
    #[test]
    fn damaged_pngs_say_what_to_do() {
        let image = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8]));
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(image).write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let err = decode_image(&png[..png.len() / 2]).unwrap_err().to_string();
        assert!(err.contains("download or copy it again"), "{err}");
        // The image data's checksum broken.
        let at = png.windows(4).position(|w| w == b"IDAT").unwrap() + 8;
        let mut damaged = png.clone();
        damaged[at] ^= 0xFF;
        let err = decode_image(&damaged).unwrap_err().to_string();
        assert!(err.contains("the image is damaged, or of a kind") || err.contains("cut short"), "{err}");
    }

    /// An Exif orientation turns the picture upright: 6 (the camera held upright, the sensor's
    /// rows stored sideways) rotates it a quarter turn clockwise.
    #[test]
    fn exif_orientation_turns_the_image_upright() {
        // Left half black, right half white, 32 x 16: after a quarter turn clockwise, the top is
        // black and the bottom white, 16 x 32.
        let image = RgbImage::from_fn(32, 16, |x, _| image::Rgb([if x < 16 { 0 } else { 255 }; 3]));
        let plain = jpeg_of(&image);
        // An APP1 segment with a big-endian TIFF header and one IFD entry: Orientation (0x0112),
        // SHORT, 1 value, 6.
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0".to_vec();
        let length = (exif.len() + 2) as u16;
        let mut rotated = plain[..2].to_vec();
        rotated.extend_from_slice(&[0xFF, 0xE1]);
        rotated.extend_from_slice(&length.to_be_bytes());
        rotated.append(&mut exif);
        rotated.extend_from_slice(&plain[2..]);
        assert_eq!(decode_image(&plain).unwrap().dimensions(), (32, 16));
        let upright = decode_image(&rotated).unwrap();
        assert_eq!(upright.dimensions(), (16, 32));
        assert!(
            upright.get_pixel(8, 4)[0] < 40 && upright.get_pixel(8, 28)[0] > 215,
            "{:?} {:?}",
            upright.get_pixel(8, 4),
            upright.get_pixel(8, 28)
        );
    }

    /// With a centre crop, a strip far longer than wide preprocesses (only the crop is resized)
    /// to the pixels of resizing it whole and cropping; without a crop it is refused.
    #[test]
    fn extreme_strips_resize_only_their_crop() {
        let mut rng = crate::rng::Rng::new(6);
        let strip = RgbImage::from_fn(8, 700, |_, _| image::Rgb([0, 1, 2].map(|_| (rng.next_u64() >> 56) as u8)));
        let preprocess = ImagePreprocess::clip_default(96);
        let (pixels, size) = preprocess.apply(&strip).unwrap();
        assert_eq!(size, (96, 96));
        let whole = center_crop(&resize(&strip, 96, 8400, Filter::Bicubic), 96, 96);
        let expected = ImagePreprocess { resize: None, ..preprocess.clone() }.apply(&whole).unwrap().0;
        assert_eq!(pixels, expected);
        let uncropped = ImagePreprocess { center_crop: None, ..preprocess };
        let err = uncropped.apply(&RgbImage::new(1, 700)).unwrap_err().to_string();
        assert!(err.contains("crop the image"), "{err}");
    }
}
