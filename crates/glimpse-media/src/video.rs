//! Video frames, sampled at a fixed rate and streamed: each sampled frame is handed over as soon
//! as it is decoded, so a video is never held in memory at full resolution. Sources: an animated
//! GIF, WebP or PNG (decoded frame by frame), a folder of numbered frames (read one at a time), or any
//! other video file through a system `ffmpeg` (raw frames piped on its stdout).
//!
//! Frame `i` is the picture shown at `(i + 0.5) / fps` and stands for `[i / fps, (i + 1) / fps)`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use image::codecs::gif::GifDecoder;
use image::codecs::png::PngDecoder;
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, RgbImage, RgbaImage};

use crate::MediaError;
use crate::image::{MAX_IMAGE_FILE_BYTES, decode_image, decoder_limits, to_rgb};
use crate::untrusted::{decoding, open_regular_file, read_regular_file};

/// The most frames a video may yield after sampling (one hour at 2.8 fps).
pub const MAX_FRAMES: usize = 10_000;

/// The most pixels one decoded frame may have (8K is 33 million); larger frames are refused
/// before anything is allocated for them.
pub const MAX_FRAME_PIXELS: u64 = 1 << 26;

/// The most pixels an animation's frames may add up to, each drawn onto the whole canvas: about a
/// minute of decoding here (8,000 frames of 1920x1080 are 16.6 billion). A GIF of 100,000
/// one-pixel frames on a canvas of 8000x8000 would otherwise take hours.
pub const MAX_COMPOSITED_PIXELS: u64 = 1 << 34;

/// The highest sampling rate, in frames per second.
pub const MAX_FPS: f64 = 60.0;

/// The sampling rate when none is given: events of a few seconds get several frames each, and an
/// hour stays under [`MAX_FRAMES`].
pub const DEFAULT_FPS: f64 = 2.0;

/// The lowest sampling rate: a frame every 100 s. Below it the samples stand for absurd lengths
/// (frames given at 1e-9 fps made a video of a century).
pub const MIN_FPS: f64 = 0.01;

/// Refuses a video whose stated `length` (seconds) sampled at `fps` would give more than
/// [`MAX_FRAMES`], before any of it is decoded, with the rate that fits.
fn check_frame_count(path: &Path, length: Option<f64>, fps: f64) -> Result<(), MediaError> {
    let Some(length) = length.filter(|length| (length * fps).round() > MAX_FRAMES as f64) else { return Ok(()) };
    let fitting = fitting_fps(length);
    let advice = if fitting >= MIN_FPS {
        format!("sample at --fps {fitting} or lower, or caption a shorter part")
    } else {
        "it is too long for any rate; caption it in parts".to_string()
    };
    Err(MediaError::Video(format!(
        "{}: its {length:.0} s at {fps} fps are {} frames, more than the {MAX_FRAMES} glimpse reads; {advice}",
        path.display(),
        (length * fps).round()
    )))
}

/// The highest rate, to a hundredth and down, at which `length` seconds give at most
/// [`MAX_FRAMES`] frames.
fn fitting_fps(length: f64) -> f64 {
    (MAX_FRAMES as f64 / length * 100.0).floor() / 100.0
}

/// Refuses sampling rates outside `[MIN_FPS, MAX_FPS]` frames per second.
pub fn check_fps(fps: f64) -> Result<(), MediaError> {
    if (MIN_FPS..=MAX_FPS).contains(&fps) {
        Ok(())
    } else {
        Err(MediaError::Video(format!("fps = {fps} must be in [{MIN_FPS}, {MAX_FPS}]")))
    }
}

/// The seconds `samples` frames sampled at `fps` stand for: `samples / fps`, or the video's own
/// `length` where that is shorter (one sample of a 3 s video at 0.001 fps stands for 3 s, not
/// 1000). A length the samples contradict (shorter than the first `samples - 1` sampling steps: a
/// container's header may say anything) is ignored.
pub fn sampled_duration(samples: usize, fps: f64, length: Option<f64>) -> f64 {
    let span = samples as f64 / fps;
    match length {
        Some(length) if length.is_finite() && length < span && length > (samples as f64 - 1.0) / fps => length,
        _ => span,
    }
}

/// What reading a video gave besides its frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The seconds the samples stand for.
    pub seconds: f64,
    /// What went wrong in reading that did not stop it (a decoder's errors on a damaged stretch,
    /// whose samples may show the picture before it), for the user to hear.
    pub damage: Option<String>,
}

/// A sample of a video, as [`VideoSource::for_each_frame`] hands it on.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Frame(RgbImage),
    /// The picture of the sample before again: a frame lasting several samples (an animation's
    /// long delay), neither copied nor to be read again. Never the first sample.
    Again,
}

/// A video that has been found readable, before any frame is decoded: opening checks the path
/// (a regular file or a folder, a known format, ffmpeg present when needed) so that a bad input
/// is refused before models are loaded.
#[derive(Debug, Clone)]
pub struct VideoSource {
    kind: SourceKind,
    fps: f64,
}

#[derive(Debug, Clone)]
enum SourceKind {
    Animation {
        path: PathBuf,
        format: ImageFormat,
    },
    Frames {
        paths: Vec<PathBuf>,
    },
    /// `head`: the file's first 12 bytes, for ffmpeg's errors (what its `moov` error means).
    Ffmpeg {
        path: PathBuf,
        head: Option<[u8; 12]>,
        probe: Probe,
    },
}

impl VideoSource {
    /// A folder of frames (name order, numbers by value), an animated GIF / WebP / PNG, or
    /// (through `ffmpeg`) anything else, to be sampled at `fps`.
    pub fn open(path: &Path, fps: f64) -> Result<Self, MediaError> {
        Self::open_with(path, fps, false)
    }

    /// [`VideoSource::open`] at `fps` or, for a video file too long for [`MAX_FRAMES`] at that
    /// rate, at the highest rate that fits ([`VideoSource::fps`] says which): what an archive
    /// captioned at one rate needs for its longest videos. Refused only below [`MIN_FPS`].
    pub fn open_fitting(path: &Path, fps: f64) -> Result<Self, MediaError> {
        Self::open_with(path, fps, true)
    }

    fn open_with(path: &Path, mut fps: f64, fit: bool) -> Result<Self, MediaError> {
        check_fps(fps)?;
        if path.as_os_str() == "-" {
            return Err(MediaError::Video("videos are not read from standard input; save it to a file first".into()));
        }
        let named = |message: String| MediaError::Video(format!("{}: {message}", path.display()));
        let metadata = std::fs::metadata(path).map_err(|e| named(e.to_string()))?;
        let kind = if metadata.is_dir() {
            SourceKind::Frames { paths: frame_paths(path)? }
        } else {
            let mut file = open_regular_file(path)?;
            let mut head = Vec::with_capacity(32);
            (&mut file).take(32).read_to_end(&mut head).map_err(|e| named(e.to_string()))?;
            // From the start again: a PNG's chunks say whether it is animated.
            let mut animated_png = || {
                file.rewind().map_err(|e| named(e.to_string()))?;
                let frames = apng_frame_count(&mut BufReader::new(&file)).map_err(|e| named(e.to_string()))?;
                Ok::<_, MediaError>(frames.is_some())
            };
            match image::guess_format(&head) {
                Ok(format @ (ImageFormat::Gif | ImageFormat::WebP)) => {
                    SourceKind::Animation { path: path.to_path_buf(), format }
                }
                Ok(ImageFormat::Png) if animated_png()? => {
                    SourceKind::Animation { path: path.to_path_buf(), format: ImageFormat::Png }
                }
                Ok(format) => {
                    let advice = match crate::image::READ_FORMATS.contains(&format) {
                        true => "caption it with caption-image".to_string(),
                        false => format!(
                            "{}, which caption-image reads once converted to PNG or JPEG",
                            crate::image::format_name(format)
                        ),
                    };
                    return Err(MediaError::Video(format!(
                        "{} is a still image ({advice}); give an animated GIF / WebP / PNG, a folder of frames or a \
                         video file",
                        path.display()
                    )));
                }
                Err(_) if head.is_empty() => return Err(named("the file is empty".into())),
                Err(_) => {
                    check_ffmpeg(path)?;
                    let mut probe = Probe::of(path);
                    if probe.has_video == Some(false) {
                        return Err(no_video_stream(path));
                    }
                    let claimed = probe.video_length.or(probe.length);
                    if check_frame_count(path, claimed, fps).is_err() {
                        // A header may claim any length (a recording never finished, a damaged
                        // or doctored file): the claim is believed once the file ends there.
                        if let Some(end) = claimed.and_then(|claimed| probe.last_picture_end(path, claimed)) {
                            probe.video_length = Some(end);
                        }
                        let length = probe.video_length.or(probe.length);
                        if fit && let Some(length) = length {
                            fps = fps.min(fitting_fps(length)).max(MIN_FPS);
                        }
                        check_frame_count(path, length, fps)?;
                    }
                    SourceKind::Ffmpeg {
                        path: path.to_path_buf(),
                        head: head.get(..12).and_then(|h| h.try_into().ok()),
                        probe,
                    }
                }
            }
        };
        Ok(Self { kind, fps })
    }

    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Decodes the frames one by one and hands each sample to `on_frame`, in order; returns the
    /// seconds they stand for ([`sampled_duration`]: the samples over the sampling rate, or the
    /// video's own length where that is shorter; a folder of frames has no length of its own)
    /// and any damage met on the way. Nothing decoded is kept here: what `on_frame` keeps is all
    /// that stays.
    pub fn for_each_frame<E: From<MediaError>>(
        &self,
        mut on_frame: impl FnMut(Sample) -> Result<(), E>,
    ) -> Result<Reading, E> {
        match &self.kind {
            SourceKind::Animation { path, format } => {
                let named = |e: std::io::Error| MediaError::Video(format!("{}: {e}", path.display()));
                let file = BufReader::new(File::open(path).map_err(named)?);
                let seconds = sample_animation(file, *format, self.fps, &path.display().to_string(), &mut on_frame)?;
                Ok(Reading { seconds, damage: None })
            }
            SourceKind::Frames { paths } => {
                for path in paths {
                    on_frame(Sample::Frame(read_frame(path)?))?;
                }
                Ok(Reading { seconds: paths.len() as f64 / self.fps, damage: None })
            }
            SourceKind::Ffmpeg { path, head, probe } => {
                let (samples, damage) = read_with_ffmpeg(path, head.as_ref(), self.fps, probe, &mut on_frame)?;
                Ok(Reading { seconds: sampled_duration(samples, self.fps, probe.length), damage })
            }
        }
    }
}

/// Samples an animated GIF, WebP or PNG at `fps` on its own clock (each frame's delay), handing each
/// sampled frame to `on_frame` as soon as the frame that follows it is known; returns the seconds
/// the samples stand for (at most the animation's length). The decoder's errors name the
/// animation as `name`; those of `on_frame` pass through as they are.
pub fn sample_animation<R: BufRead + Seek, E: From<MediaError>>(
    reader: R,
    format: ImageFormat,
    fps: f64,
    name: &str,
    on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
) -> Result<f64, E> {
    let ours = |e: MediaError| E::from(MediaError::Video(format!("{name}: {e}")));
    check_fps(fps).map_err(ours)?;
    let mut sampler = Sampler { fps, emitted: 0, shown: None, name };
    let mut start = 0.0;
    let mut push = |frame: RgbImage, ms: f64| -> Result<(), E> {
        sampler.next_frame(start, frame, on_frame)?;
        start += ms / 1000.0;
        Ok(())
    };
    match format {
        ImageFormat::Gif | ImageFormat::Png => {
            let mut reader = reader;
            let (what, frames) = if format == ImageFormat::Gif {
                ("GIF", gif_frame_count(&mut reader))
            } else {
                ("PNG", apng_frame_count(&mut reader).map(Option::unwrap_or_default))
            };
            let unreadable = |e: std::io::Error| MediaError::Video(format!("cannot read the {what}: {e}"));
            let frames = frames.map_err(|e| ours(unreadable(e)))?;
            reader.seek(std::io::SeekFrom::Start(0)).map_err(|e| ours(unreadable(e)))?;
            let bad = |e: image::ImageError| MediaError::Video(format!("cannot decode the {what}: {e}"));
            let decoder_name = format!("the {what} decoder");
            // Before any frame is decoded: the canvas, the pixels all frames draw, the decoder's limits.
            let checked = |decoder: &mut dyn ImageDecoder| {
                check_canvas(decoder.dimensions())?;
                check_compositing(frames, decoder.dimensions())?;
                decoder.set_limits(decoder_limits()).map_err(bad)
            };
            let mut animation = if format == ImageFormat::Gif {
                let mut decoder = decoding(&decoder_name, || GifDecoder::new(reader).map_err(bad)).map_err(ours)?;
                checked(&mut decoder).map_err(ours)?;
                decoder.into_frames()
            } else {
                let mut decoder = decoding(&decoder_name, || PngDecoder::new(reader).map_err(bad)).map_err(ours)?;
                checked(&mut decoder).map_err(ours)?;
                decoding(&decoder_name, || decoder.apng().map_err(bad)).map_err(ours)?.into_frames()
            };
            // A frame whose data does not decode is its file's damage: the frames after it are
            // lost. Other refusals (the decoder's limits) keep their own words.
            let damaged = |index: usize, e: image::ImageError| match e {
                image::ImageError::Decoding(_) | image::ImageError::IoError(_) => MediaError::Video(format!(
                    "frame {} of the {what} is damaged or cut short ({e}); download, copy or export it again",
                    index + 1
                )),
                e => bad(e),
            };
            for index in 0.. {
                let next = decoding(&decoder_name, || animation.next().transpose().map_err(|e| damaged(index, e)));
                let Some(frame) = next.map_err(ours)? else { break };
                let ms = delay_ms(frame.delay().numer_denom_ms());
                push(to_rgb(DynamicImage::ImageRgba8(frame.into_buffer())), ms)?;
            }
        }
        ImageFormat::WebP => {
            let mut reader = reader;
            let damaged = |why: String| {
                ours(MediaError::Video(format!("the WebP is damaged or cut short ({why}); download or copy it again")))
            };
            webp_chunks_fit(&mut reader).map_err(damaged)?;
            let bad = |e: image_webp::DecodingError| MediaError::Video(format!("cannot decode the WebP: {e}"));
            let mut decoder =
                decoding("the WebP decoder", || image_webp::WebPDecoder::new(reader).map_err(bad)).map_err(ours)?;
            if !decoder.is_animated() {
                let still = "a still WebP image, not an animation; caption it with caption-image";
                return Err(ours(MediaError::Video(still.into())));
            }
            let (width, height) = decoder.dimensions();
            check_canvas((width, height)).map_err(ours)?;
            check_compositing(decoder.num_frames().into(), (width, height)).map_err(ours)?;
            let channels = if decoder.has_alpha() { 4 } else { 3 };
            // One buffer for every frame: the decoder composites each frame onto the canvas.
            let mut canvas = vec![0u8; width as usize * height as usize * channels];
            loop {
                let delay = decoding("the WebP decoder", || match decoder.read_frame(&mut canvas) {
                    Ok(ms) => Ok(Some(ms)),
                    Err(image_webp::DecodingError::NoMoreFrames) => Ok(None),
                    Err(e) => Err(bad(e)),
                })
                .map_err(ours)?;
                let Some(ms) = delay else { break };
                let image = if channels == 4 {
                    to_rgb(DynamicImage::ImageRgba8(RgbaImage::from_raw(width, height, canvas.clone()).unwrap()))
                } else {
                    RgbImage::from_raw(width, height, canvas.clone()).unwrap()
                };
                push(image, delay_ms((ms, 1)))?;
            }
        }
        other => return Err(ours(MediaError::Video(format!("{other:?} is not an animated GIF, WebP or PNG")))),
    }
    let total = start;
    let samples = sampler.finish(total, on_frame)?;
    Ok(sampled_duration(samples, fps, Some(total)))
}

/// Checks that every chunk of a WebP file lies within the file and its RIFF header's size,
/// reading the chunk headers alone (a small chunk's body is read past, a large one's sought past:
/// a seek empties the reader's buffer). The decoder stops at a chunk it cannot place and shows
/// the frames before it as if they were all; damage in the middle of an animation looks like that.
fn webp_chunks_fit<R: Read + Seek>(reader: &mut R) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let file_len = reader.seek(std::io::SeekFrom::End(0)).map_err(io)?;
    reader.seek(std::io::SeekFrom::Start(4)).map_err(io)?;
    let mut word = [0u8; 4];
    reader.read_exact(&mut word).map_err(io)?;
    let riff_end = 8 + u64::from(u32::from_le_bytes(word));
    if riff_end > file_len {
        return Err(format!("its header announces {riff_end} bytes, the file has {file_len}"));
    }
    reader.read_exact(&mut word).map_err(io)?;
    let mut at = 12;
    while at < riff_end {
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).map_err(|_| format!("a chunk header at byte {at} is cut off"))?;
        let len = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        // Chunks are padded to an even length.
        let body = len + (len & 1);
        let end = at + 8 + body;
        if end > riff_end {
            return Err(format!(
                "a chunk at byte {at} runs {} bytes past the end its header announces",
                end - riff_end
            ));
        }
        // Within a buffered reader's buffer, without dropping it.
        reader.seek_relative(body as i64).map_err(io)?;
        at = end;
    }
    reader.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
    Ok(())
}

/// Refuses an animation whose `frames` would take more than [`MAX_COMPOSITED_PIXELS`] to draw,
/// before any is: each is drawn onto the whole canvas, however small it is itself (an 8 KB GIF of
/// a hundred thousand one-pixel frames on an 8000 x 8000 canvas is 6.4 trillion pixels).
fn check_compositing(frames: u64, (width, height): (u32, u32)) -> Result<(), MediaError> {
    let pixels = frames.saturating_mul(u64::from(width) * u64::from(height));
    if pixels <= MAX_COMPOSITED_PIXELS {
        return Ok(());
    }
    Err(MediaError::Video(format!(
        "its {frames} frames on a canvas of {width}x{height} add up to more than {MAX_COMPOSITED_PIXELS} pixels to \
         draw (minutes of work); convert it to a video file of a smaller size or fewer frames"
    )))
}

/// The frames of a GIF, counted from its blocks without decoding any (each image descriptor is a
/// frame). A file that ends or goes wrong midway gives the frames before: the decoder reports it.
fn gif_frame_count(reader: &mut impl BufRead) -> std::io::Result<u64> {
    fn skip(reader: &mut impl BufRead, bytes: u64) -> std::io::Result<()> {
        std::io::copy(&mut reader.by_ref().take(bytes), &mut std::io::sink()).map(|_| ())
    }
    fn byte(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
        let mut one = [0u8];
        Ok((reader.read(&mut one)? == 1).then_some(one[0]))
    }
    // Data sub-blocks: a length byte and that many bytes, until a length of 0.
    fn skip_sub_blocks(reader: &mut impl BufRead) -> std::io::Result<()> {
        while let Some(length @ 1..) = byte(reader)? {
            skip(reader, length.into())?;
        }
        Ok(())
    }
    // A colour table of 2^(n + 1) entries follows where the flags' top bit says.
    let table = |flags: u8| if flags & 0x80 != 0 { 3u64 << ((flags & 7) + 1) } else { 0 };
    // "GIF89a" and the logical screen descriptor, whose fifth byte holds the flags.
    let mut header = [0u8; 13];
    if reader.read_exact(&mut header).is_err() {
        return Ok(0);
    }
    skip(reader, table(header[10]))?;
    let mut frames = 0;
    loop {
        match byte(reader)? {
            // An extension: its label, then sub-blocks.
            Some(0x21) => {
                skip(reader, 1)?;
                skip_sub_blocks(reader)?;
            }
            // An image: its descriptor (flags last), its colour table, LZW's code size, its data.
            Some(0x2C) => {
                frames += 1;
                let mut descriptor = [0u8; 9];
                if reader.read_exact(&mut descriptor).is_err() {
                    return Ok(frames);
                }
                skip(reader, table(descriptor[8]) + 1)?;
                skip_sub_blocks(reader)?;
            }
            _ => return Ok(frames),
        }
    }
}

/// The frames an animated PNG's `acTL` chunk announces, read from its chunks before the first
/// image data; `None` for a still PNG (no `acTL` there). A file that ends first is still: the
/// decoder reports what is wrong with it.
fn apng_frame_count(reader: &mut impl Read) -> std::io::Result<Option<u64>> {
    let mut signature = [0u8; 8];
    if reader.read_exact(&mut signature).is_err() {
        return Ok(None);
    }
    loop {
        // Each chunk: its length, its type, its data and a CRC.
        let mut header = [0u8; 8];
        if reader.read_exact(&mut header).is_err() {
            return Ok(None);
        }
        let length = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        match &header[4..] {
            b"acTL" => {
                let mut frames = [0u8; 4];
                return Ok(reader.read_exact(&mut frames).is_ok().then(|| u64::from(u32::from_be_bytes(frames))));
            }
            b"IDAT" | b"IEND" => return Ok(None),
            _ => {
                let skipped = std::io::copy(&mut reader.by_ref().take(length + 4), &mut std::io::sink())?;
                if skipped < length + 4 {
                    return Ok(None);
                }
            }
        }
    }
}

/// Milliseconds a frame is shown. Browsers show a frame whose delay is 10 ms or less for 100 ms
/// (and ffmpeg's GIF reader does, for its delays below 2 hundredths): many GIFs say 0 or 1.
fn delay_ms((numer, denom): (u32, u32)) -> f64 {
    let ms = if denom == 0 { 0.0 } else { f64::from(numer) / f64::from(denom) };
    if ms <= 10.0 { 100.0 } else { ms }
}

fn check_canvas(size: (u32, u32)) -> Result<(), MediaError> {
    check_frame_size(size).map_err(|size| MediaError::Video(format!("the animation declares a canvas of {size}")))
}

/// Refuses an empty frame or one above [`MAX_FRAME_PIXELS`], before anything is allocated for it;
/// the error is what to say of the size.
fn check_frame_size((width, height): (u32, u32)) -> Result<(), String> {
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(format!("{width}x{height}, which holds no pixels"));
    }
    if pixels > MAX_FRAME_PIXELS {
        return Err(format!("{width}x{height}, beyond the {MAX_FRAME_PIXELS} pixels per frame glimpse reads"));
    }
    Ok(())
}

/// Turns frames shown from their start times into samples at `(i + 0.5) / fps`: sample `i` shows
/// the last frame that started at or before its time.
struct Sampler<'a> {
    fps: f64,
    /// The animation, for messages.
    name: &'a str,
    emitted: usize,
    /// The frame on screen, waiting for the start of the next one to know which samples it covers.
    shown: Option<RgbImage>,
}

impl Sampler<'_> {
    fn time(&self, sample: usize) -> f64 {
        (sample as f64 + 0.5) / self.fps
    }

    /// A new frame starts at `start`: the samples before it show the previous frame.
    fn next_frame<E: From<MediaError>>(
        &mut self,
        start: f64,
        frame: RgbImage,
        on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(previous) = self.shown.take() {
            self.emit_until(previous, |sampler| sampler.time(sampler.emitted) < start, on_frame)?;
        }
        self.shown = Some(frame);
        Ok(())
    }

    /// Hands on `frame` for as long as `more` says, the first sample as the frame and the others
    /// as [`Sample::Again`] (nothing if no sample falls in its time).
    fn emit_until<E: From<MediaError>>(
        &mut self,
        frame: RgbImage,
        more: impl Fn(&Self) -> bool,
        on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut sample = Sample::Frame(frame);
        while more(self) {
            self.emit(std::mem::replace(&mut sample, Sample::Again), on_frame)?;
        }
        Ok(())
    }

    /// The animation ends at `total` seconds: `round(total * fps)` samples in all (at least one).
    fn finish<E: From<MediaError>>(
        mut self,
        total: f64,
        on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
    ) -> Result<usize, E> {
        let Some(last) = self.shown.take() else {
            return Err(self.refused("the animation has no frames".into()));
        };
        let samples = ((total * self.fps).round() as usize).max(1);
        self.emit_until(last, |sampler| sampler.emitted < samples, on_frame)?;
        Ok(self.emitted)
    }

    fn emit<E: From<MediaError>>(
        &mut self,
        frame: Sample,
        on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.emitted == MAX_FRAMES {
            return Err(
                self.refused(format!("more than {MAX_FRAMES} frames at {} fps; sample at a lower --fps", self.fps))
            );
        }
        self.emitted += 1;
        on_frame(frame)
    }

    fn refused<E: From<MediaError>>(&self, message: String) -> E {
        MediaError::Video(format!("{}: {message}", self.name)).into()
    }
}

/// The image files of a frame folder in name order, numbers by value ([`natural_order`]); their
/// contents are read later, one at a time. Hidden files are no frames: macOS leaves `._frame1.png`
/// (its AppleDouble metadata) beside each file copied to a foreign disk.
fn frame_paths(dir: &Path) -> Result<Vec<PathBuf>, MediaError> {
    let bad = |e: std::io::Error| MediaError::Video(format!("{}: {e}", dir.display()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(bad)? {
        let path = entry.map_err(bad)?.path();
        let hidden = path.file_name().is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if !hidden && matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "webp" | "gif") {
            if paths.len() == MAX_FRAMES {
                return Err(MediaError::Video(format!(
                    "{} holds more than {MAX_FRAMES} frames, the most glimpse reads; keep every second (or n-th) \
                     frame, or caption the folder in parts",
                    dir.display()
                )));
            }
            paths.push(path);
        }
    }
    // Names that read alike once made UTF-8 keep an order of their own bytes.
    paths.sort_by(|a, b| natural_order(&a.to_string_lossy(), &b.to_string_lossy()).then_with(|| a.cmp(b)));
    if paths.is_empty() {
        return Err(MediaError::Video(format!("{} holds no PNG, JPEG, WebP or GIF frames", dir.display())));
    }
    Ok(paths)
}

/// Names in the order their numbers count: `frame2` before `frame10` (ffmpeg's `frame%d.png`
/// numbers without zeros). Character by character, but where both names have digits, the whole
/// runs of digits are compared by their values; names equal so are in text order.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    let digits = |rest: &str| rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (mut x, mut y) = (a, b);
    loop {
        let (run_x, run_y) = (digits(x), digits(y));
        let order = if run_x > 0 && run_y > 0 {
            let (value_x, value_y) = (x[..run_x].trim_start_matches('0'), y[..run_y].trim_start_matches('0'));
            let order = value_x.len().cmp(&value_y.len()).then(value_x.cmp(value_y));
            (x, y) = (&x[run_x..], &y[run_y..]);
            order
        } else {
            match (x.chars().next(), y.chars().next()) {
                (None, None) => return a.cmp(b),
                (c, d) => {
                    (x, y) = (&x[c.map_or(0, char::len_utf8)..], &y[d.map_or(0, char::len_utf8)..]);
                    c.cmp(&d)
                }
            }
        };
        if order.is_ne() {
            return order;
        }
    }
}

fn read_frame(path: &Path) -> Result<RgbImage, MediaError> {
    let bytes = read_regular_file(path, MAX_IMAGE_FILE_BYTES)?;
    decode_image(&bytes).map_err(|e| MediaError::Video(format!("{}: {e}", path.display())))
}

fn ffmpeg_missing(path: &Path) -> MediaError {
    MediaError::Video(format!(
        "{} is not a GIF, WebP or PNG animation, and reading other video files needs ffmpeg, which is not installed \
         (e.g. `apt install ffmpeg`); or pass a folder of frames",
        path.display()
    ))
}

fn check_ffmpeg(path: &Path) -> Result<(), MediaError> {
    match Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ffmpeg_missing(path)),
        Err(e) => Err(MediaError::Video(format!("cannot run ffmpeg: {e}"))),
    }
}

/// The container formats ffmpeg may open (its demuxers' names), a video's file alone: without the
/// list, a playlist named `.mp4` (HLS, concat) would have ffmpeg read other files of the machine.
/// (A name an ffmpeg version does not know is harmless: the list is matched as text.)
/// Sound-only formats are among them, so that such a file is told to have no pictures rather than
/// to be no video file at all.
const FFMPEG_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,live_flv,mpegts,mpeg,ogg,asf,mxf,nut,\
                              yuv4mpegpipe,h264,hevc,vvc,av1,vc1,m4v,mpegvideo,mjpeg,mpjpeg,dv,rm,ivf,obu,\
                              mp3,wav,flac,aac,aiff,w64,wv";

/// `path` as ffmpeg's input: a file whatever the name (ffmpeg would read `concat:a.mp4` or
/// `http:...` as a protocol), opened only as one of [`FFMPEG_FORMATS`].
fn ffmpeg_input(command: &mut Command, path: &Path) {
    let mut input = std::ffi::OsString::from("file:");
    input.push(path);
    command.args(["-format_whitelist", FFMPEG_FORMATS, "-i"]).arg(input);
}

/// What `ffprobe` (ffmpeg's companion) says of a video before it is read; all unknown where it
/// cannot run or fails.
#[derive(Debug, Default, Clone)]
struct Probe {
    /// The length in seconds its container states; used only to end the last sample there.
    length: Option<f64>,
    /// The length in seconds of its video stream, where the file states one: the container's is
    /// its longest stream's, and sound may run on for hours after the pictures.
    video_length: Option<f64>,
    /// Its first video stream that is not a cover picture, the one read (`None`: unknown, or
    /// listed but empty, as a transport stream's programme may list one: then ffmpeg picks), and
    /// whether there is one.
    stream: Option<usize>,
    has_video: Option<bool>,
    /// The colour description of that stream where it has one, as ffmpeg names them: transfer
    /// function (`smpte2084`, ...), primaries, matrix and range.
    transfer: Option<String>,
    primaries: Option<String>,
    matrix: Option<String>,
    range: Option<String>,
    /// Whether that stream's pictures are interlaced (its field order is not `progressive`).
    interlaced: bool,
    /// Whether its pictures are RGB rather than luma and chroma (lossless and screen-capture
    /// codecs store them so).
    rgb: bool,
    /// Whether its pictures have an alpha channel, and the decoder that reads it where ffmpeg's
    /// own does not: WebM's VP8 and VP9 keep alpha in a side stream (`alpha_mode`), which only
    /// libvpx's decoders read.
    alpha: bool,
    alpha_decoder: Option<&'static str>,
    /// Where the file's time starts, in seconds (a transport stream's clock may read hours).
    start: Option<f64>,
    /// Whether its video was found only by reading further ([`deep_probe`]), as ffmpeg must too.
    deep: bool,
}

/// How far ffmpeg reads into a file before its streams are described, when told to look further:
/// a transport stream may list its video long before its first picture (a capture that starts
/// with sound), and within the default 5 s ffmpeg learns nothing of it and reads no video at all.
const DEEP_PROBE_SECONDS: u32 = 120;
const DEEP_PROBE_MIB: u32 = 256;

/// ffmpeg's options for [`DEEP_PROBE_SECONDS`] and [`DEEP_PROBE_MIB`] (its durations are in
/// microseconds).
fn deep_probe() -> [String; 4] {
    let (seconds, bytes) = (format!("{DEEP_PROBE_SECONDS}M"), format!("{DEEP_PROBE_MIB}Mi"));
    ["-analyzeduration".into(), seconds, "-probesize".into(), bytes]
}

impl Probe {
    /// What ffprobe says of `path`; read further ([`deep_probe`]) where it lists a video stream
    /// whose pictures it has not yet seen.
    fn of(path: &Path) -> Self {
        let probe = Self::with_options(path, &[]);
        if probe.has_video == Some(true) && probe.stream.is_none() {
            let deep = Self::with_options(path, &deep_probe());
            if deep.stream.is_some() {
                return Self { deep: true, ..deep };
            }
        }
        probe
    }

    fn with_options(path: &Path, options: &[String]) -> Self {
        let mut command = Command::new("ffprobe");
        command.args(options);
        // `V`: video streams that are not attached pictures (a song's cover).
        command.args([
            "-v",
            "error",
            "-select_streams",
            "V:0",
            "-show_entries",
            "format=duration,start_time:stream=index,width,codec_name,pix_fmt,color_transfer,color_primaries,color_space,\
             color_range,field_order,duration:stream_tags=alpha_mode,DURATION",
        ]);
        command.args(["-of", "default=noprint_wrappers=1"]);
        ffmpeg_input(&mut command, path);
        let Ok(output) = command.stdin(Stdio::null()).stderr(Stdio::null()).output() else { return Self::default() };
        if !output.status.success() {
            return Self::default();
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let field =
            |name: &str| text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix('=')).map(str::trim);
        let named = |name: &str| field(name).filter(|v| !v.is_empty() && *v != "unknown").map(str::to_string);
        let has_pictures = field("width").and_then(|w| w.parse::<u32>().ok()).is_some_and(|w| w > 0);
        // The stream's length (MP4's, or Matroska's DURATION tag) comes before the container's.
        let seconds = |value: &str| value.parse::<f64>().ok().filter(|l| l.is_finite() && *l > 0.0);
        let lengths: Vec<&str> =
            text.lines().filter_map(|line| line.strip_prefix("duration=")).map(str::trim).collect();
        Self {
            length: lengths.last().and_then(|length| seconds(length)),
            video_length: (lengths.len() == 2)
                .then(|| seconds(lengths[0]))
                .flatten()
                .or_else(|| field("TAG:DURATION").and_then(clock_seconds)),
            stream: field("index").and_then(|index| index.parse().ok()).filter(|_| has_pictures),
            has_video: Some(field("index").is_some()),
            transfer: named("color_transfer"),
            primaries: named("color_primaries"),
            matrix: named("color_space"),
            range: named("color_range"),
            interlaced: matches!(field("field_order"), Some("tt" | "bb" | "tb" | "bt")),
            rgb: field("pix_fmt").is_some_and(is_rgb) || field("color_space") == Some("gbr"),
            alpha: field("pix_fmt").is_some_and(has_alpha) || field("TAG:alpha_mode") == Some("1"),
            alpha_decoder: match (field("TAG:alpha_mode"), field("codec_name")) {
                (Some("1"), Some("vp8")) => Some("libvpx"),
                (Some("1"), Some("vp9")) => Some("libvpx-vp9"),
                _ => None,
            }
            .filter(|decoder| has_decoder(decoder)),
            start: field("start_time").and_then(|start| start.parse::<f64>().ok()).filter(|start| start.is_finite()),
            deep: false,
        }
    }

    /// Where the pictures of the stream read end, in seconds from the file's start, as its packets
    /// near `claimed` (the length its header states) say: ffprobe seeks there (to the key frame
    /// before it, within a file that ends sooner) and reads on to the end. `None` where it finds
    /// none.
    fn last_picture_end(&self, path: &Path, claimed: f64) -> Option<f64> {
        let mut command = Command::new("ffprobe");
        command.args(["-v", "error"]);
        if self.deep {
            command.args(deep_probe());
        }
        let stream = self.stream.map_or("V:0".to_string(), |index| index.to_string());
        let seek = (self.start.unwrap_or(0.0) + claimed - 60.0).max(0.0);
        command.args(["-select_streams", &stream, "-read_intervals", &format!("{seek}%")]);
        command.args(["-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0"]);
        ffmpeg_input(&mut command, path);
        let output = command.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let start = self.start.unwrap_or(0.0);
        let ends = text.lines().filter_map(|line| {
            let mut fields = line.split(',').map(|field| field.trim().parse::<f64>().ok());
            Some(fields.next()?? + fields.next().flatten().unwrap_or(0.0) - start)
        });
        ends.filter(|end| end.is_finite()).reduce(f64::max)
    }

    /// Whether its pictures are HDR (PQ, as HDR10 and Dolby Vision's base layer, or HLG, as most
    /// phones record HDR): their values are light levels far above a screen's white, and read as
    /// they are they come out grey and washed out.
    fn is_hdr(&self) -> bool {
        matches!(self.transfer.as_deref(), Some("smpte2084" | "arib-std-b67"))
    }
}

/// Whether ffmpeg's pixel format `name` has an alpha channel (`rgba`, `yuva420p`, `gbrap12le`,
/// `ya8`, ...; a palette may have transparent entries).
fn has_alpha(name: &str) -> bool {
    ["yuva", "gbrap", "ya", "ayuv", "vuya", "pal8"].iter().any(|prefix| name.starts_with(prefix))
        || ["rgba", "bgra", "argb", "abgr"].iter().any(|part| name.contains(part))
}

/// Seconds of a clock `H:MM:SS.fraction`, as Matroska's DURATION tag holds a track's length.
fn clock_seconds(clock: &str) -> Option<f64> {
    let mut parts = clock.split(':').map(|part| part.parse::<f64>().ok());
    let (hours, minutes, seconds) = (parts.next()??, parts.next()??, parts.next()??);
    let total = hours * 3600.0 + minutes * 60.0 + seconds;
    (parts.next().is_none() && total.is_finite() && total > 0.0).then_some(total)
}

/// Whether ffmpeg's pixel format `name` is RGB (`gbrp10le`, `bgr24`, `rgba64le`, `x2rgb10le`, ...).
fn is_rgb(name: &str) -> bool {
    name.starts_with("gbr") || name.contains("rgb") || name.contains("bgr")
}

/// Whether this ffmpeg has the decoder `name` (its list asked once).
fn has_decoder(name: &str) -> bool {
    static LISTED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let listed = LISTED.get_or_init(|| {
        let listed = Command::new("ffmpeg").args(["-hide_banner", "-decoders"]).stdin(Stdio::null()).output();
        listed.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default()
    });
    listed.lines().any(|line| line.split_whitespace().nth(1) == Some(name))
}

/// ffmpeg's filters from decoded pictures to the frames sampled at `fps` (`eof`: the `fps`
/// filter's `eof_action`): interlaced pictures deinterlaced (before sampling, which would take
/// their neighbours away), non-square pixels made square as players show them (widened, or
/// heightened where narrower), frames beyond [`MAX_FRAME_PIXELS`] scaled down to it (CLIP sees a
/// few hundred pixels a side of them anyway), transparent pictures laid over white (as still
/// images and animations are), and HDR pictures tone-mapped to SDR BT.709: with BT.2408's reference
/// white (203 cd/m²) as SDR's white and Möbius's curve, which leaves levels up to it nearly as they
/// are and compresses only brighter highlights, SMPTE bars made HDR10 come back a mean 11/255 from
/// the SDR ones (55 read as they are, 22 and 37 with Hable's curve from 100 and 203 cd/m²). A
/// browser tone-maps for its screen in its own way (Chromium's bars are darker).
fn ffmpeg_filters(fps: f64, eof: &str, probe: &Probe) -> String {
    // The pixels the frame shows once square, and the scale that brings them within the limit.
    let shrink = format!("min(1,sqrt({MAX_FRAME_PIXELS}/(iw*ih*max(sar,1/sar))))");
    // yadif refuses frames under 3 pixels a side, so it runs only where the stream says interlaced
    // (and then only on the pictures flagged so).
    let deinterlace = if probe.interlaced { "yadif=deint=interlaced," } else { "" };
    let mut filters = format!(
        "{deinterlace}fps={fps}:start_time=0:eof_action={eof},\
         scale='max(1,trunc(if(gte(sar,1),iw*sar,iw)*{shrink}))':'max(1,trunc(if(gte(sar,1),ih,ih/sar)*{shrink}))',\
         setsar=1"
    );
    if probe.alpha {
        // Over white, as the still images and animations are: c·a + (1 - a), that is
        // 1 - (1 - c)·a, negating around alpha's premultiplication (negate leaves alpha as it is).
        filters.push_str(",format=rgba,negate,premultiply=inplace=1,negate");
    }
    if probe.is_hdr() {
        // zscale needs the pictures' primaries, matrix and range, which a file may leave out: HDR's
        // BT.2020 and limited range where it does (setparams keeps those given). RGB pictures
        // (stored so, or laid over white above) have no matrix and full range, whatever the stream
        // says of its pictures; zscale finds no conversion for them handed over as luma and chroma.
        let rgb = probe.rgb || probe.alpha;
        let assumed = |given: &Option<String>, name: &str, value: &str| {
            if given.is_some() { String::new() } else { format!(":{name}={value}") }
        };
        let described = if rgb {
            [assumed(&probe.primaries, "color_primaries", "bt2020"), ":colorspace=gbr:range=pc".to_string()].concat()
        } else {
            [
                assumed(&probe.primaries, "color_primaries", "bt2020"),
                assumed(&probe.matrix, "colorspace", "bt2020nc"),
                assumed(&probe.range, "range", "tv"),
            ]
            .concat()
        };
        if let Some(described) = described.strip_prefix(':') {
            filters.push_str(&format!(",setparams={described}"));
        }
        // zscale refuses subsampled pictures of an odd size (a square-pixel one may be).
        let unsubsampled = if rgb { "gbrp16le" } else { "yuv444p16le" };
        filters.push_str(&format!(
            ",format={unsubsampled},zscale=t=linear:npl=203,format=gbrpf32le,zscale=p=bt709,\
             tonemap=tonemap=mobius:desat=0,zscale=t=bt709:m=bt709:r=pc,format=gbrp"
        ));
    }
    filters
}

/// An ffmpeg process that is killed (and reaped) if reading stops early.
struct Ffmpeg {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The most of ffmpeg's stderr kept for an error message.
const STDERR_KEPT: usize = 4096;

/// Any video `ffmpeg` reads, sampled at `fps` by its `fps` filter and piped as PPM frames (each
/// with its own size, so no probe is needed); at most [`MAX_FRAMES`]. `head`: the file's first 12
/// bytes. The samples, and what ffmpeg said of a read it finished (only errors are asked of it,
/// so anything it says is damage: a stretch it could not decode).
fn read_with_ffmpeg<E: From<MediaError>>(
    path: &Path,
    head: Option<&[u8; 12]>,
    fps: f64,
    probe: &Probe,
    on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
) -> Result<(usize, Option<String>), E> {
    // Sampled from the file's start (ffmpeg counts time from it): a stream whose first pictures
    // cannot be decoded (a broadcast capture cut mid-GOP) starts later, and its first decoded
    // picture stands for the time before it rather than every sample moving early.
    let (mut frames, mut stderr) = run_ffmpeg(path, head, fps, probe, &ffmpeg_filters(fps, "round", probe), on_frame)?;
    if frames == 0 {
        // A video shorter than one sample: the filter drops its frame unless told to pass it (which
        // would also round every other video's end up, one frame more).
        (frames, stderr) = run_ffmpeg(path, head, fps, probe, &ffmpeg_filters(fps, "pass", probe), on_frame)?;
    }
    if frames == 0 {
        let why = if stderr.is_empty() { "ffmpeg found no picture in it".to_string() } else { last_lines(&stderr, 2) };
        return Err(MediaError::Video(format!(
            "{} gave no picture ({why}): it is empty or damaged (a recording stopped before its first picture); copy \
             or export it again",
            path.display()
        ))
        .into());
    }
    // ffmpeg reads a file cut short up to the cut and exits as if it had read it all; only its
    // demuxer's message tells (Matroska: "File ended prematurely"; MP4: "partial file").
    let lower = stderr.to_ascii_lowercase();
    if ["ended prematurely", "partial file", "error during demuxing"].iter().any(|cut| lower.contains(cut)) {
        return Err(MediaError::Video(format!(
            "{} is cut short ({stderr}); download or copy it again",
            path.display()
        ))
        .into());
    }
    let damage = (!stderr.is_empty()).then(|| {
        format!(
            "ffmpeg met errors decoding it, so the pictures of a damaged stretch may be missing or repeat the one \
             before ({}); the result may be wrong there",
            last_lines(&stderr, 3)
        )
    });
    Ok((frames, damage))
}

/// The last `n` lines of `text`, joined by ` / `.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// One ffmpeg run through `filter`, each frame to `on_frame`; the frames and what ffmpeg printed,
/// or an error where it failed.
fn run_ffmpeg<E: From<MediaError>>(
    path: &Path,
    head: Option<&[u8; 12]>,
    fps: f64,
    probe: &Probe,
    filter: &str,
    on_frame: &mut impl FnMut(Sample) -> Result<(), E>,
) -> Result<(usize, String), E> {
    let mut command = Command::new("ffmpeg");
    command.args(["-nostdin", "-loglevel", "error"]);
    if let Some(decoder) = probe.alpha_decoder {
        command.args(["-c:v", decoder]);
    }
    if probe.deep {
        command.args(deep_probe());
    }
    ffmpeg_input(&mut command, path);
    // The stream the probe described (ffmpeg's own pick is the largest, which may be another).
    if let Some(stream) = probe.stream {
        command.args(["-map", &format!("0:{stream}")]);
    }
    let spawned = command
        .args(["-vf", filter, "-frames:v", &(MAX_FRAMES + 1).to_string()])
        .args(["-f", "image2pipe", "-c:v", "ppm", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ffmpeg_missing(path).into()),
        Err(e) => return Err(MediaError::Video(format!("cannot run ffmpeg: {e}")).into()),
        Ok(child) => child,
    };
    let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut stderr_pipe = child.stderr.take().expect("piped");
    // Drained on its own thread so that a chatty ffmpeg never blocks on a full pipe.
    let stderr = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = stderr_pipe.read(&mut chunk) {
            kept.extend_from_slice(&chunk[..n]);
            if kept.len() > STDERR_KEPT {
                kept.drain(..kept.len() - STDERR_KEPT);
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    let mut process = Ffmpeg { child, stderr: Some(stderr) };
    let mut frames = 0;
    loop {
        let frame = match read_ppm(&mut stdout) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => return Err(MediaError::Video(format!("{}: reading ffmpeg's frames: {e}", path.display())).into()),
        };
        if frames == MAX_FRAMES {
            return Err(MediaError::Video(format!(
                "{}: more than {MAX_FRAMES} frames at {fps} fps; sample at a lower --fps",
                path.display()
            ))
            .into());
        }
        frames += 1;
        on_frame(Sample::Frame(frame))?;
    }
    let status = process.child.wait().map_err(|e| MediaError::Video(format!("ffmpeg: {e}")))?;
    let stderr = process.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        if stderr.contains("not on whitelist") {
            return Err(MediaError::Video(format!(
                "{} is not a video file glimpse reads (a playlist, a stream description or another format: \
                 {stderr}); give the video itself (MP4, MOV, WebM, MKV, AVI, ...)",
                path.display()
            ))
            .into());
        }
        if stderr.contains("does not contain any stream") {
            if probe.has_video == Some(true) {
                return Err(MediaError::Video(format!(
                    "{} lists a video stream, but ffmpeg found none of its pictures in the first \
                     {DEEP_PROBE_SECONDS} s ({DEEP_PROBE_MIB} MiB) it reads to describe a file: it is damaged, or \
                     its pictures start later than that; cut off the start with ffmpeg -ss, or export it again",
                    path.display()
                ))
                .into());
            }
            return Err(no_video_stream(path).into());
        }
        if stderr.contains("moov atom not found") {
            if head.is_some_and(is_heif) {
                return Err(MediaError::Video(format!(
                    "{} is a HEIF / AVIF picture (as phones save photos), not a video: convert it to JPEG or PNG to \
                     caption it with caption-image",
                    path.display()
                ))
                .into());
            }
            if head.is_some_and(starts_as_mp4) {
                return Err(MediaError::Video(format!(
                    "{} is cut short or was never finished: its index (the MP4 / MOV `moov`, which a camera writes \
                     last) is missing. Copy or download it again; a recording that was interrupted needs a repair \
                     tool first",
                    path.display()
                ))
                .into());
            }
        }
        if stderr.contains("Invalid data found when processing input") && !head.is_some_and(looks_like_video) {
            return Err(MediaError::Video(format!(
                "{} is no video ffmpeg can read ({}): it is damaged, or of a format ffmpeg does not know; check that \
                 the file is the video itself (not a web page or a damaged copy), or convert it to MP4 or WebM",
                path.display(),
                last_lines(&stderr, 1)
            ))
            .into());
        }
        if stderr.contains("No such filter: 'zscale'") {
            return Err(MediaError::Video(format!(
                "{} is HDR, and tone-mapping it needs ffmpeg's zscale filter, which this ffmpeg lacks (built \
                 without libzimg): install an ffmpeg that has it (Debian's, Homebrew's and the static builds do)",
                path.display()
            ))
            .into());
        }
        let why = if stderr.is_empty() { format!("it exited with {status}") } else { last_lines(&stderr, 2) };
        return Err(MediaError::Video(format!(
            "ffmpeg cannot read {} ({why}): the file is damaged, or of a kind this ffmpeg does not read; copy or \
             export it again, or convert it to MP4 or WebM",
            path.display()
        ))
        .into());
    }
    Ok((frames, stderr))
}

/// Whether a file that begins with `head` (an ISO file's first box's size, type and, for `ftyp`,
/// major brand) begins as an MP4 / MOV does, with one of the boxes that
/// come before the index (a file ffmpeg opened as MP4 for its name alone does not).
fn starts_as_mp4(head: &[u8; 12]) -> bool {
    [b"ftyp", b"mdat", b"wide", b"free", b"skip", b"pnot"].iter().any(|kind| head[4..8] == kind[..])
}

/// Whether a file that begins with `head` is a video container glimpse knows by its start: MP4 /
/// MOV (but a HEIF picture), Matroska / WebM, AVI, Ogg.
pub(crate) fn looks_like_video(head: &[u8; 12]) -> bool {
    (starts_as_mp4(head) && !is_heif(head))
        || head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
        || (head.starts_with(b"RIFF") && &head[8..12] == b"AVI ")
        || head.starts_with(b"OggS")
}

/// Whether a file that begins with `head` is a HEIF or AVIF picture: an ISO file whose major brand
/// says so (it has no `moov`, so ffmpeg takes it for an MP4 cut short).
pub(crate) fn is_heif(head: &[u8; 12]) -> bool {
    &head[4..8] == b"ftyp"
        && [b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"]
            .iter()
            .any(|brand| head[8..] == brand[..])
}

fn no_video_stream(path: &Path) -> MediaError {
    MediaError::Video(format!(
        "{} has no video stream (only sound, data or a cover picture); give a file with moving pictures",
        path.display()
    ))
}

/// One binary PPM (`P6`, 8-bit) frame, or `None` at the end of the stream.
fn read_ppm(reader: &mut impl BufRead) -> Result<Option<RgbImage>, String> {
    if reader.fill_buf().map_err(|e| e.to_string())?.is_empty() {
        return Ok(None);
    }
    let mut fields = Vec::with_capacity(4);
    while fields.len() < 4 {
        fields.push(ppm_token(reader)?);
    }
    if fields[0] != "P6" {
        return Err(format!("expected a P6 frame, found {:?}", fields[0]));
    }
    let number = |s: &str| s.parse::<u32>().map_err(|_| format!("bad PPM header field {s:?}"));
    let (width, height, max) = (number(&fields[1])?, number(&fields[2])?, number(&fields[3])?);
    if max != 255 {
        return Err(format!("expected 8-bit frames, found maximum value {max}"));
    }
    check_frame_size((width, height)).map_err(|size| format!("a frame of {size}"))?;
    let mut data = vec![0u8; 3 * width as usize * height as usize];
    reader.read_exact(&mut data).map_err(|e| format!("a frame ends early: {e}"))?;
    Ok(Some(RgbImage::from_raw(width, height, data).expect("the buffer has the frame's size")))
}

/// One whitespace-separated header token, and the single whitespace byte after it.
fn ppm_token(reader: &mut impl BufRead) -> Result<String, String> {
    let mut token = String::new();
    let mut byte = [0u8; 1];
    loop {
        reader.read_exact(&mut byte).map_err(|e| format!("a frame header ends early: {e}"))?;
        match byte[0] {
            b if b.is_ascii_whitespace() && token.is_empty() => continue,
            b if b.is_ascii_whitespace() => return Ok(token),
            b if token.len() < 16 => token.push(b as char),
            _ => return Err("a frame header field is too long".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, Rgba};
    use std::io::Cursor;

    /// A GIF of `colours.len()` frames of `ms` milliseconds each.
    fn gif(colours: &[[u8; 3]], ms: u32) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut encoder = GifEncoder::new(&mut out);
            for c in colours {
                let image = RgbaImage::from_pixel(8, 6, Rgba([c[0], c[1], c[2], 255]));
                encoder.encode_frame(Frame::from_parts(image, 0, 0, Delay::from_numer_denom_ms(ms, 1))).unwrap();
            }
        }
        out
    }

    /// Each sample's picture, an [`Sample::Again`] as the picture before.
    fn pictures(frames: &mut Vec<RgbImage>) -> impl FnMut(Sample) -> Result<(), MediaError> + '_ {
        |sample| {
            let picture = match sample {
                Sample::Frame(frame) => frame,
                Sample::Again => frames.last().expect("the first sample is a picture").clone(),
            };
            frames.push(picture);
            Ok(())
        }
    }

    fn collect(bytes: &[u8], fps: f64) -> Result<Vec<RgbImage>, MediaError> {
        let mut frames = Vec::new();
        let format = image::guess_format(bytes).map_err(|e| MediaError::Video(e.to_string()))?;
        sample_animation(Cursor::new(bytes), format, fps, "test", &mut pictures(&mut frames))?;
        Ok(frames)
    }

    /// The samples stand for the animation's length at most: one sample of a 3 s GIF at 0.01 fps
    /// is 3 s of video, not 100.
    #[test]
    fn a_rate_below_the_animation_gives_its_own_length() {
        let bytes = gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 1000);
        let mut samples = 0;
        let mut count = |_| {
            samples += 1;
            Ok::<(), MediaError>(())
        };
        let seconds = sample_animation(Cursor::new(&bytes), ImageFormat::Gif, 0.01, "test", &mut count).unwrap();
        assert_eq!((samples, seconds), (1, 3.0));
        let seconds =
            sample_animation(Cursor::new(&bytes), ImageFormat::Gif, 2.0, "test", &mut |_| Ok::<(), MediaError>(()));
        assert_eq!(seconds.unwrap(), 3.0);
    }

    #[test]
    fn frame_files_are_in_the_order_their_numbers_count() {
        let mut names = ["f10.png", "f2.png", "f1.png", "f002.png", "g1.png", "f1a.png", "f.png", "f100.png"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["f.png", "f1.png", "f1a.png", "f002.png", "f2.png", "f10.png", "f100.png", "g1.png"]);
        let mut padded = ["frame_0010.jpg", "frame_0009.jpg", "frame_0100.jpg"];
        padded.sort_by(|a, b| natural_order(a, b));
        assert_eq!(padded, ["frame_0009.jpg", "frame_0010.jpg", "frame_0100.jpg"]);
    }

    #[test]
    fn hidden_files_in_a_frame_folder_are_no_frames() {
        let dir = std::env::temp_dir().join(format!("glimpse-hidden-frames-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let frame = |colour: [u8; 3]| {
            let mut png = Vec::new();
            let image = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 4, image::Rgb(colour)));
            image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
            png
        };
        std::fs::write(dir.join("frame1.png"), frame([255, 0, 0])).unwrap();
        std::fs::write(dir.join("frame2.png"), frame([0, 255, 0])).unwrap();
        // macOS's metadata beside a copied file, and a hidden picture.
        std::fs::write(dir.join("._frame1.png"), b"\0\x05\x16\x07\0\x02\0\0Mac OS X        ").unwrap();
        std::fs::write(dir.join(".hidden.png"), frame([0, 0, 255])).unwrap();
        let mut frames = Vec::new();
        VideoSource::open(&dir, 1.0).unwrap().for_each_frame(pictures(&mut frames)).unwrap();
        let colours: Vec<_> = frames.iter().map(|frame| frame.get_pixel(0, 0).0).collect();
        assert_eq!(colours, [[255, 0, 0], [0, 255, 0]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An animated WebP damaged in the middle (a chunk's length garbled) or cut short is refused:
    /// its decoder would stop at the damage and show the frames before it as the whole animation.
    #[test]
    fn damaged_webp_animations_are_refused() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/image");
        let bytes = std::fs::read(corpus.join("animation.webp")).unwrap();
        let whole = collect(&bytes, 4.0).unwrap().len();
        assert!(whole > 1);
        // The last frame's chunk: found by walking the chunks from the first after the RIFF header.
        let mut at = 12;
        let mut last_frame = None;
        while at + 8 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if &bytes[at..at + 4] == b"ANMF" {
                last_frame = Some(at);
            }
            at += 8 + len + (len & 1);
        }
        let mut garbled = bytes.clone();
        garbled[last_frame.unwrap() + 4..][..4].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let cut = &bytes[..bytes.len() - 10];
        for (what, damaged) in [("garbled", &garbled[..]), ("cut", cut)] {
            let err = collect(damaged, 4.0).unwrap_err().to_string();
            assert!(err.contains("the WebP is damaged or cut short"), "{what}: {err}");
        }
    }

    /// A GIF frame whose image data does not decode is refused by its number, with what to do.
    #[test]
    fn a_damaged_gif_frame_is_named() {
        let mut bytes = gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 100);
        // The second frame: its graphic control extension (8 bytes), its descriptor (10 bytes),
        // its local colour table, its code size, then its first sub-block.
        let controls: Vec<usize> =
            bytes.windows(2).enumerate().filter(|(_, w)| w == &[0x21, 0xF9]).map(|(i, _)| i).collect();
        let descriptor = controls[1] + 8;
        assert_eq!(bytes[descriptor], 0x2C);
        let packed = bytes[descriptor + 9];
        let table = if packed & 0x80 == 0 { 0 } else { 3 << ((packed & 7) + 1) };
        let block = descriptor + 10 + table + 1;
        let length = usize::from(bytes[block]);
        bytes[block + 1..block + 1 + length].fill(0xFF);
        let err = collect(&bytes, 10.0).unwrap_err().to_string();
        assert!(
            err.contains("frame 2 of the GIF is damaged or cut short") && err.contains("download, copy or export"),
            "{err}"
        );
    }

    /// A frame lasting several samples is handed on once, then as `Again`: a one-frame GIF shown
    /// for minutes on a large canvas is decoded and read once, not once a sample.
    #[test]
    fn a_frame_lasting_several_samples_is_handed_on_once() {
        let mut kinds = Vec::new();
        let mut kind = |sample: Sample| {
            kinds.push(if matches!(sample, Sample::Again) { "again" } else { "frame" });
            Ok::<(), MediaError>(())
        };
        let bytes = gif(&[[255, 0, 0], [0, 255, 0]], 1500);
        sample_animation(Cursor::new(&bytes), ImageFormat::Gif, 2.0, "test", &mut kind).unwrap();
        assert_eq!(kinds, ["frame", "again", "again", "frame", "again", "again"]);
    }

    #[test]
    fn animations_are_sampled_on_their_own_clock() {
        // Three frames of 1 s each, sampled at 2 fps: six samples, two per frame.
        let frames = collect(&gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 1000), 2.0).unwrap();
        assert_eq!(frames.len(), 6);
        let reds: Vec<u8> = frames.iter().map(|f| f.get_pixel(0, 0)[0]).collect();
        let greens: Vec<u8> = frames.iter().map(|f| f.get_pixel(0, 0)[1]).collect();
        assert_eq!(reds.iter().filter(|&&r| r > 200).count(), 2);
        assert!(greens[2] > 200 && greens[3] > 200 && greens[4] < 50);
        // Frames shorter than the sampling step are skipped; the last one is held to the end.
        let frames = collect(&gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 300), 2.0).unwrap();
        let shown: Vec<[u8; 3]> = frames.iter().map(|f| f.get_pixel(0, 0).0).collect();
        // 0.9 s at 2 fps: round(1.8) = 2 samples, at 0.25 s (red) and 0.75 s (blue).
        assert_eq!(shown.len(), 2);
        assert!(shown[0][0] > 200 && shown[1][2] > 200, "{shown:?}");
    }

    /// A delay of 10 ms or less lasts 100 ms, as in browsers and ffmpeg: a GIF of 1-hundredth
    /// delays is not ten times shorter than it plays.
    #[test]
    fn the_shortest_delays_last_a_tenth_of_a_second() {
        let colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];
        for ms in [0, 10] {
            let seconds = sample_animation(Cursor::new(gif(&colours, ms)), ImageFormat::Gif, 50.0, "test", &mut |_| {
                Ok::<(), MediaError>(())
            });
            assert!((seconds.unwrap() - 0.3).abs() < 1e-9, "{ms} ms");
        }
        let seconds = sample_animation(Cursor::new(gif(&colours, 20)), ImageFormat::Gif, 50.0, "test", &mut |_| {
            Ok::<(), MediaError>(())
        });
        assert!((seconds.unwrap() - 0.06).abs() < 1e-9);
    }

    /// An animated PNG (the fuzz corpus's: three moving 16 x 12 frames at 4 fps, made by
    /// ffmpeg) is a video; a still PNG is refused as a still image.
    #[test]
    fn animated_pngs_are_videos_and_still_ones_are_not() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/image");
        let animated = corpus.join("animation.png");
        let bytes = std::fs::read(&animated).unwrap();
        assert_eq!(apng_frame_count(&mut Cursor::new(&bytes)).unwrap(), Some(3));
        let mut frames = Vec::new();
        let seconds = VideoSource::open(&animated, 4.0).unwrap().for_each_frame(pictures(&mut frames)).unwrap().seconds;
        assert_eq!((frames.len(), seconds), (3, 0.75));
        assert_eq!(frames[0].dimensions(), (16, 12));
        assert_ne!(frames[0], frames[2], "the frames move");
        let still = corpus.join("gray_64x64.png");
        assert_eq!(apng_frame_count(&mut Cursor::new(std::fs::read(&still).unwrap())).unwrap(), None);
        let err = VideoSource::open(&still, 2.0).unwrap_err().to_string();
        assert!(err.contains("still image"), "{err}");
        // Cut before its first image data, or inside its signature: still, for the decoder to judge.
        for cut in [4, 20, 40] {
            assert_eq!(apng_frame_count(&mut Cursor::new(&bytes[..cut])).unwrap(), None, "{cut}");
        }
    }

    #[test]
    fn bad_videos_are_errors() {
        assert!(collect(b"GIF89a broken", 2.0).is_err());
        assert!(collect(&gif(&[[1, 2, 3]], 100), 0.0).unwrap_err().to_string().contains("fps"));
        let err = VideoSource::open(Path::new("/no/such/video.mp4"), 2.0).unwrap_err().to_string();
        assert!(err.contains("/no/such/video.mp4"), "{err}");
    }

    #[test]
    fn ppm_streams_are_parsed_frame_by_frame() {
        let mut stream = b"P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06".to_vec();
        stream.extend(b"P6 1 1 255\n\x07\x08\x09");
        let mut reader = Cursor::new(stream);
        assert_eq!(read_ppm(&mut reader).unwrap().unwrap().into_raw(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(read_ppm(&mut reader).unwrap().unwrap().into_raw(), [7, 8, 9]);
        assert!(read_ppm(&mut reader).unwrap().is_none());
        for bad in [&b"P5\n1 1\n255\n\x00"[..], b"P6\n70000 70000\n255\n", b"P6\n2 2\n255\n\x00", b"P6\n1"] {
            assert!(read_ppm(&mut Cursor::new(bad)).is_err(), "{bad:?}");
        }
    }

    /// A file that is no GIF, WebP or PNG goes to ffmpeg: without ffmpeg the error says to
    /// install it; with ffmpeg, that it cannot read this file. Either way, no panic and no frames.
    #[test]
    fn other_files_go_through_ffmpeg() {
        let path = std::env::temp_dir().join(format!("glimpse-not-a-video-{}.mp4", std::process::id()));
        std::fs::write(&path, b"definitely not a video").unwrap();
        let result =
            VideoSource::open(&path, 2.0).and_then(|source| source.for_each_frame(|_| Ok::<(), MediaError>(())));
        std::fs::remove_file(&path).unwrap();
        let err = result.unwrap_err().to_string();
        assert!(err.contains("ffmpeg"), "{err}");
    }

    /// A new folder for `test`'s videos, where ffmpeg is installed to make them
    /// ([`glimpse_test_device::ffmpeg`]'s rule); `None` where the test is skipped.
    fn video_folder(test: &str) -> Option<PathBuf> {
        if !glimpse_test_device::ffmpeg(test) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("glimpse-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Some(dir)
    }

    /// ffmpeg's lavfi `source`, through `options`, into `dir/name`.
    fn made(dir: &Path, name: &str, source: &str, options: &[&str]) -> PathBuf {
        let path = dir.join(name);
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source])
            .args(options)
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not make {name}");
        path
    }

    fn frames_of(path: &Path, fps: f64) -> Result<Vec<RgbImage>, MediaError> {
        let mut frames = Vec::new();
        VideoSource::open(path, fps)?.for_each_frame(pictures(&mut frames))?;
        Ok(frames)
    }

    fn mean_difference(a: &RgbImage, b: &RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| f64::from(x.abs_diff(y))).sum::<f64>()
            / a.as_raw().len() as f64
    }

    /// How far each row strays from the mean of its neighbours, in grey levels: an interlaced
    /// picture read as it is stripes every moving edge.
    fn combing(frame: &RgbImage) -> f64 {
        let (width, height) = frame.dimensions();
        let grey = |x, y| f64::from(frame.get_pixel(x, y).0.iter().map(|&c| u16::from(c)).sum::<u16>()) / 3.0;
        let mut total = 0.0;
        for y in 1..height - 1 {
            for x in 0..width {
                total += (grey(x, y) - (grey(x, y - 1) + grey(x, y + 1)) / 2.0).abs();
            }
        }
        total / f64::from(width * (height - 2))
    }

    /// A video whose stated length at the rate asked gives more than MAX_FRAMES is refused when
    /// opened, before a frame is decoded (a film took minutes of embedding to fail), with the
    /// rate that fits.
    #[test]
    fn too_many_frames_are_refused_before_decoding() {
        let Some(dir) = video_folder("too_many_frames_are_refused_before_decoding") else { return };
        // 6000 s at one picture a second: 12000 frames at 2 fps.
        let long = made(&dir, "long.mkv", "color=c=red:size=16x16:rate=1:duration=6000", &["-c:v", "ffv1"]);
        let err = VideoSource::open(&long, 2.0).unwrap_err().to_string();
        assert!(err.contains("its 6000 s at 2 fps are 12000 frames") && err.contains("--fps 1.66 or lower"), "{err}");
        assert!(VideoSource::open(&long, 1.66).is_ok());
        // Opened to fit, it is sampled at that rate; a short video keeps the rate asked.
        assert_eq!(VideoSource::open_fitting(&long, 2.0).unwrap().fps(), 1.66);
        // 10 s of pictures in 6000 s of sound (Matroska: the track's length is a tag): the
        // pictures count.
        let sound = ["-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono", "-t", "6000", "-c:v", "ffv1", "-c:a", "flac"];
        let scored = made(&dir, "scored.mkv", "color=c=red:size=16x16:rate=1:duration=10", &sound);
        let frames = frames_of(&scored, 2.0).unwrap();
        assert_eq!(frames.len(), 20);
        assert_eq!(VideoSource::open_fitting(&scored, 2.0).unwrap().fps(), 2.0);
        // 3 s whose Matroska DURATION tag says 99 h: the file ends at 3 s, so the claim is not
        // believed.
        let short = made(&dir, "short.mkv", "color=c=red:size=16x16:rate=1:duration=3", &["-c:v", "ffv1"]);
        let mut bytes = std::fs::read(&short).unwrap();
        let at = bytes.windows(10).position(|w| w == b"00:00:03.0").expect("ffmpeg writes the track's length");
        bytes[at..at + 10].copy_from_slice(b"99:00:03.0");
        let claiming = dir.join("claiming.mkv");
        std::fs::write(&claiming, bytes).unwrap();
        assert_eq!(Probe::of(&claiming).video_length, Some(356_403.0));
        assert_eq!(frames_of(&claiming, 2.0).unwrap().len(), 6);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A transport stream whose pictures start 10 s after its sound: ffmpeg's first 5 s show none
    /// of its video, which it reads only when told to look further.
    #[test]
    fn a_video_that_starts_late_in_a_transport_stream_is_read() {
        let Some(dir) = video_folder("a_video_that_starts_late_in_a_transport_stream_is_read") else { return };
        let late = [
            &["-itsoffset", "10", "-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=4"][..],
            &["-map", "1:v", "-map", "0:a", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpegts"],
        ]
        .concat();
        let path = made(&dir, "late.ts", "sine=duration=16", &late);
        assert!(Probe::with_options(&path, &[]).stream.is_none(), "ffprobe's defaults see no picture");
        let probe = Probe::of(&path);
        assert!(probe.deep && probe.stream.is_some());
        // Its 4 s of pictures at 2 fps (in a transport stream ffmpeg samples the video from its
        // first picture on, where an MP4's empty edit makes it stand for the time before).
        let frames = frames_of(&path, 2.0).unwrap();
        assert_eq!(frames.len(), 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Pictures arrive as a player shows them: non-square pixels made square (wider, or taller),
    /// interlaced ones deinterlaced, HDR ones tone-mapped near their SDR original, frames above
    /// the size limit scaled down to it.
    #[test]
    fn pictures_arrive_as_players_show_them() {
        let Some(dir) = video_folder("pictures_arrive_as_players_show_them") else { return };
        let pattern = "testsrc2=size=320x240:rate=10:duration=1";
        // 320 x 240 shown at 16:9 (pixels 4:3 wide) and at 1:1 (pixels 3:4 wide).
        let wide = made(&dir, "wide.mkv", pattern, &["-c:v", "mpeg4", "-aspect", "16:9"]);
        assert_eq!(frames_of(&wide, 2.0).unwrap()[0].dimensions(), (426, 240));
        let narrow = made(&dir, "narrow.mkv", pattern, &["-c:v", "mpeg4", "-aspect", "1:1"]);
        assert_eq!(frames_of(&narrow, 2.0).unwrap()[0].dimensions(), (320, 320));

        // A scrolling pattern at 50 fields a second, interlaced, against the same at 25 frames.
        let moving = "testsrc2=size=320x240:rate=50:duration=2,scroll=h=0.02";
        let fields = ["-c:v", "mpeg2video", "-q:v", "2"];
        let interlaced = made(
            &dir,
            "interlaced.ts",
            &format!("{moving},interlace"),
            &[&fields[..], &["-flags", "+ilme+ildct", "-top", "1"]].concat(),
        );
        let progressive = made(&dir, "progressive.ts", &format!("{moving},fps=25"), &fields);
        let (read, reference) = (frames_of(&interlaced, 2.0).unwrap(), frames_of(&progressive, 2.0).unwrap());
        // Read as they are, the interlaced frames comb at about 17; deinterlaced, near 1.
        assert!(
            combing(&read[2]) < 2.0 * combing(&reference[2]),
            "{} against {}",
            combing(&read[2]),
            combing(&reference[2])
        );

        // SMPTE bars made HDR10 (PQ, BT.2020, reference white at 203 cd/m²) as a camera would store
        // them, losslessly, against the bars themselves; both with pixels 3:2 wide, so that the
        // square-pixel picture is 483 wide, an odd size for subsampled colours.
        let bars = "smptebars=size=322x242:rate=10:duration=1";
        let to_pq = "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:m=bt2020nc:p=bt2020:r=tv:npl=203,format=yuv420p10le";
        let pq = ["-color_trc", "smpte2084", "-color_primaries", "bt2020", "-colorspace", "bt2020nc"];
        let hdr =
            made(&dir, "hdr.mkv", bars, &[&["-vf", &format!("setsar=3/2,{to_pq}"), "-c:v", "ffv1"][..], &pq].concat());
        let sdr = made(&dir, "sdr.mkv", bars, &["-vf", "setsar=3/2", "-c:v", "ffv1"]);
        let (hdr, sdr) = (&frames_of(&hdr, 2.0).unwrap()[0], &frames_of(&sdr, 2.0).unwrap()[0]);
        assert_eq!(hdr.dimensions(), (483, 242));
        let gap = mean_difference(hdr, sdr);
        // Read as they are, the HDR bars are 55 off on average (washed out); tone-mapped, 11.
        assert!(gap < 20.0, "HDR bars {gap} off their SDR original");
        // Tagged with its transfer function alone (zscale cannot convert without the rest): HDR's
        // BT.2020 and limited range are assumed.
        let untagged = "setparams=color_primaries=unknown:colorspace=unknown:range=unknown";
        let bare = made(
            &dir,
            "bare.mkv",
            bars,
            &["-vf", &format!("setsar=3/2,{to_pq},{untagged}"), "-c:v", "ffv1", "-color_trc", "smpte2084"],
        );
        let gap = mean_difference(&frames_of(&bare, 2.0).unwrap()[0], sdr);
        assert!(gap < 20.0, "HDR bars tagged with their transfer alone {gap} off their SDR original");
        // Stored as RGB (as lossless codecs may), and with an (opaque) alpha channel, which is laid
        // over white as RGB: zscale is handed RGB.
        let to_pq_rgb = "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:p=bt2020:npl=203,format=gbrp10le";
        let rgb_tags = ["-c:v", "ffv1", "-colorspace", "rgb"];
        let rgb = made(
            &dir,
            "rgb.mkv",
            bars,
            &[&["-vf", &format!("setsar=3/2,{to_pq_rgb}")][..], &rgb_tags, &pq[..4]].concat(),
        );
        let to_pq_alpha = to_pq.replace("yuv420p10le", "yuva444p10le,lutyuv=a=maxval");
        let alpha = made(
            &dir,
            "alpha.mkv",
            bars,
            &[&["-vf", &format!("setsar=3/2,{to_pq_alpha}"), "-c:v", "ffv1"][..], &pq].concat(),
        );
        for hdr in [rgb, alpha] {
            let gap = mean_difference(&frames_of(&hdr, 2.0).unwrap()[0], sdr);
            assert!(gap < 20.0, "{}: HDR bars {gap} off their SDR original", hdr.display());
        }

        // Two video streams: the first is read, as a browser plays it (ffmpeg alone takes the largest).
        let small = made(&dir, "small.mkv", "testsrc2=size=160x120:rate=10:duration=1", &["-c:v", "mpeg4"]);
        let two = dir.join("two-streams.mkv");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
            .arg(&small)
            .arg("-i")
            .arg(&wide)
            .args(["-map", "0:v", "-map", "1:v", "-c", "copy"])
            .arg(&two)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not make two-streams.mkv");
        assert_eq!(frames_of(&two, 2.0).unwrap()[0].dimensions(), (160, 120));

        // Half-transparent red, as PNG in MOV and as VP9 and VP8 with WebM's alpha: over white, as an
        // animation's transparency is, never over whatever colour the transparent pixels hold.
        let see_through = "color=c=red@0.5:size=32x32:rate=10:duration=1,format=rgba";
        let png = made(&dir, "alpha.mov", see_through, &["-c:v", "png"]);
        let vp9 = made(&dir, "alpha.webm", see_through, &["-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p"]);
        let vp8 = made(
            &dir,
            "alpha-vp8.webm",
            see_through,
            &["-c:v", "libvpx", "-auto-alt-ref", "0", "-pix_fmt", "yuva420p"],
        );
        for video in [png, vp9, vp8] {
            let [r, g, b] = frames_of(&video, 2.0).unwrap()[0].get_pixel(16, 16).0;
            assert!(r > 240 && (110..150).contains(&g) && (110..150).contains(&b), "{}: {r} {g} {b}", video.display());
        }

        // 9000 x 8000 is 72 million pixels, above the 67 million a frame may have.
        let huge =
            made(&dir, "huge.mkv", "color=c=red:size=9000x8000:rate=1:duration=1", &["-c:v", "mjpeg", "-q:v", "31"]);
        let (width, height) = frames_of(&huge, 1.0).unwrap()[0].dimensions();
        assert!(
            u64::from(width) * u64::from(height) <= MAX_FRAME_PIXELS && width > 8000 && height > 7000,
            "{width}x{height}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Sound alone, and sound with a cover picture, have no video stream; an MP4 whose index
    /// (written last) is missing is said to be cut short, and a HEIF photo to be a picture.
    #[test]
    fn files_without_moving_pictures_or_their_index_say_so() {
        let Some(dir) = video_folder("files_without_moving_pictures_or_their_index_say_so") else { return };
        let sound = made(&dir, "sound.wav", "sine=duration=1", &[]);
        let cover = dir.join("cover.png");
        image::RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 30])).save(&cover).unwrap();
        let with_cover = made(
            &dir,
            "with-cover.flac",
            "sine=duration=1",
            &["-i", cover.to_str().unwrap(), "-map", "0", "-map", "1", "-disposition:v", "attached_pic"],
        );
        for file in [&sound, &with_cover] {
            let err = frames_of(file, 2.0).unwrap_err().to_string();
            assert!(err.contains("has no video stream"), "{err}");
        }
        let whole = made(&dir, "whole.mp4", "testsrc2=size=96x96:rate=10:duration=2", &["-c:v", "mpeg4"]);
        let bytes = std::fs::read(&whole).unwrap();
        let cut = dir.join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = frames_of(&cut, 2.0).unwrap_err().to_string();
        assert!(
            err.contains("is cut short or was never finished") && err.contains("Copy or download it again"),
            "{err}"
        );
        // Damaged in the middle: ffmpeg decodes past it, and its errors come back as damage.
        let mut damaged = bytes.clone();
        let mut x = 12345u32;
        for byte in &mut damaged[bytes.len() / 3..][..2000] {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *byte = (x >> 16) as u8;
        }
        let path = dir.join("damaged.mp4");
        std::fs::write(&path, damaged).unwrap();
        let reading = VideoSource::open(&path, 2.0).unwrap().for_each_frame(|_| Ok::<(), MediaError>(())).unwrap();
        let damage = reading.damage.expect("the damage is said");
        assert!(damage.contains("ffmpeg met errors decoding it"), "{damage}");
        let clean = VideoSource::open(&whole, 2.0).unwrap().for_each_frame(|_| Ok::<(), MediaError>(())).unwrap();
        assert_eq!(clean.damage, None);
        // A HEIF photo (no `moov` either) is a picture, not a video cut short.
        let photo = dir.join("photo.heic");
        std::fs::write(&photo, [&b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"[..], &[7u8; 200]].concat()).unwrap();
        let err = frames_of(&photo, 2.0).unwrap_err().to_string();
        assert!(err.contains("is a HEIF / AVIF picture"), "{err}");
        // Bytes of no format, named as an MP4: no video, said so (not ffmpeg's `moov` message).
        let noise = dir.join("noise.mp4");
        std::fs::write(&noise, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<_>>())
            .unwrap();
        let err = frames_of(&noise, 2.0).unwrap_err().to_string();
        assert!(err.contains("is no video ffmpeg can read") && err.contains("a format ffmpeg does not know"), "{err}");
        // A Matroska file ffmpeg wrote with no picture, which it then cannot read: its last words,
        // not all six lines of them, and what to do.
        let empty = made(
            &dir,
            "no-pictures.mkv",
            "testsrc2=size=64x48:rate=10:duration=1",
            &["-frames:v", "0", "-c:v", "ffv1"],
        );
        let err = frames_of(&empty, 2.0).unwrap_err().to_string();
        assert!(err.contains("ffmpeg cannot read") && err.contains("copy or export it again"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn samples_stand_for_the_videos_length_where_it_agrees_with_them() {
        // One sample at 0.001 fps of a 3 s video: 3 s.
        assert_eq!(sampled_duration(1, 0.001, Some(3.0)), 3.0);
        // A length beyond the samples' span, or none: the span.
        assert_eq!(sampled_duration(6, 2.0, Some(3.2)), 3.0);
        assert_eq!(sampled_duration(6, 2.0, None), 3.0);
        // Within the last sampling step: the length.
        assert_eq!(sampled_duration(6, 2.0, Some(2.75)), 2.75);
        // A header that claims less than the samples show, or nonsense: ignored.
        for claim in [2.5, 1.0, 0.0, -4.0, f64::NAN, f64::NEG_INFINITY] {
            assert_eq!(sampled_duration(6, 2.0, Some(claim)), 3.0, "{claim}");
        }
    }

    /// Frames are counted from a GIF's blocks, and an animation whose frames would take too long
    /// to draw is refused by that count before any is decoded.
    #[test]
    fn animations_too_costly_to_draw_are_refused_before_decoding() {
        let bytes = gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 100);
        assert_eq!(gif_frame_count(&mut Cursor::new(&bytes)).unwrap(), 3);
        // 300 one-pixel frames on an 8000 x 8000 canvas: 19.2 billion pixels to draw.
        let mut many = b"GIF89a".to_vec();
        many.extend_from_slice(&[0x40, 0x1F, 0x40, 0x1F, 0x00, 0, 0]);
        for _ in 0..300 {
            // A descriptor at (0, 0), 1 x 1, with a local table of two colours; LZW's code size
            // and one sub-block of data.
            many.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0x80, 0, 0, 0, 255, 255, 255, 2, 2, 0x44, 0x01, 0]);
        }
        many.push(0x3B);
        assert_eq!(gif_frame_count(&mut Cursor::new(&many)).unwrap(), 300);
        let err = collect(&many, 2.0).unwrap_err().to_string();
        assert!(err.contains("its 300 frames on a canvas of 8000x8000"), "{err}");
        assert!(check_compositing(3, (8000, 8000)).is_ok());
    }
}
