//! Video frames, sampled at a fixed rate and streamed: each sampled frame is handed over as soon
//! as it is decoded, so a video is never held in memory at full resolution. Sources: an animated
//! GIF or WebP (decoded frame by frame), a folder of numbered frames (read one at a time), or any
//! other video file through a system `ffmpeg` (raw frames piped on its stdout).
//!
//! Frame `i` is the picture shown at `(i + 0.5) / fps` and stands for `[i / fps, (i + 1) / fps)`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use image::codecs::gif::GifDecoder;
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

/// Refuses sampling rates outside `(0, MAX_FPS]` frames per second.
pub fn check_fps(fps: f64) -> Result<(), MediaError> {
    if fps > 0.0 && fps <= MAX_FPS {
        Ok(())
    } else {
        Err(MediaError::Video(format!("fps = {fps} must be in (0, {MAX_FPS}]")))
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
    Animation { path: PathBuf, format: ImageFormat },
    Frames { paths: Vec<PathBuf> },
    Ffmpeg { path: PathBuf },
}

impl VideoSource {
    /// A folder of frames (file-name order), an animated GIF / WebP, or (through `ffmpeg`)
    /// anything else, to be sampled at `fps`.
    pub fn open(path: &Path, fps: f64) -> Result<Self, MediaError> {
        check_fps(fps)?;
        if path.as_os_str() == "-" {
            return Err(MediaError::Video("videos are not read from standard input; save it to a file first".into()));
        }
        let named = |message: String| MediaError::Video(format!("{}: {message}", path.display()));
        let metadata = std::fs::metadata(path).map_err(|e| named(e.to_string()))?;
        let kind = if metadata.is_dir() {
            SourceKind::Frames { paths: frame_paths(path)? }
        } else {
            let file = open_regular_file(path)?;
            let mut head = Vec::with_capacity(32);
            file.take(32).read_to_end(&mut head).map_err(|e| named(e.to_string()))?;
            match image::guess_format(&head) {
                Ok(format @ (ImageFormat::Gif | ImageFormat::WebP)) => {
                    SourceKind::Animation { path: path.to_path_buf(), format }
                }
                Ok(_) => {
                    return Err(MediaError::Video(format!(
                        "{} is a still image (caption it with caption-image); give an animated GIF / WebP, a folder \
                         of frames or a video file",
                        path.display()
                    )));
                }
                Err(_) if head.is_empty() => return Err(named("the file is empty".into())),
                Err(_) => {
                    check_ffmpeg(path)?;
                    SourceKind::Ffmpeg { path: path.to_path_buf() }
                }
            }
        };
        Ok(Self { kind, fps })
    }

    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// Decodes the frames one by one and hands each sampled frame to `on_frame`, in order; returns
    /// the seconds they stand for ([`sampled_duration`]: the frames over the sampling rate, or the
    /// video's own length where that is shorter; a folder of frames has no length of its own).
    /// Nothing decoded is kept here: what `on_frame` keeps is all that stays.
    pub fn for_each_frame<E: From<MediaError>>(
        &self,
        mut on_frame: impl FnMut(RgbImage) -> Result<(), E>,
    ) -> Result<f64, E> {
        match &self.kind {
            SourceKind::Animation { path, format } => {
                let named = |e: std::io::Error| MediaError::Video(format!("{}: {e}", path.display()));
                let file = BufReader::new(File::open(path).map_err(named)?);
                sample_animation(file, *format, self.fps, &path.display().to_string(), &mut on_frame)
            }
            SourceKind::Frames { paths } => {
                for path in paths {
                    on_frame(read_frame(path)?)?;
                }
                Ok(paths.len() as f64 / self.fps)
            }
            SourceKind::Ffmpeg { path } => {
                let samples = read_with_ffmpeg(path, self.fps, &mut on_frame)?;
                Ok(sampled_duration(samples, self.fps, probe_length(path)))
            }
        }
    }
}

/// Samples an animated GIF or WebP at `fps` on its own clock (each frame's delay), handing each
/// sampled frame to `on_frame` as soon as the frame that follows it is known; returns the seconds
/// the samples stand for (at most the animation's length). The decoder's errors name the
/// animation as `name`; those of `on_frame` pass through as they are.
pub fn sample_animation<R: BufRead + Seek, E: From<MediaError>>(
    reader: R,
    format: ImageFormat,
    fps: f64,
    name: &str,
    on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
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
        ImageFormat::Gif => {
            let mut reader = reader;
            let unreadable = |e: std::io::Error| MediaError::Video(format!("cannot read the GIF: {e}"));
            let frames = gif_frame_count(&mut reader).map_err(|e| ours(unreadable(e)))?;
            reader.seek(std::io::SeekFrom::Start(0)).map_err(|e| ours(unreadable(e)))?;
            let bad = |e: image::ImageError| MediaError::Video(format!("cannot decode the GIF: {e}"));
            let mut decoder = decoding("the GIF decoder", || GifDecoder::new(reader).map_err(bad)).map_err(ours)?;
            check_canvas(decoder.dimensions()).map_err(ours)?;
            check_compositing(frames, decoder.dimensions()).map_err(ours)?;
            decoder.set_limits(decoder_limits()).map_err(|e| ours(bad(e)))?;
            let mut frames = decoder.into_frames();
            while let Some(frame) =
                decoding("the GIF decoder", || frames.next().transpose().map_err(bad)).map_err(ours)?
            {
                let ms = delay_ms(frame.delay().numer_denom_ms());
                push(to_rgb(DynamicImage::ImageRgba8(frame.into_buffer())), ms)?;
            }
        }
        ImageFormat::WebP => {
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
        other => return Err(ours(MediaError::Video(format!("{other:?} is not an animated GIF or WebP")))),
    }
    let total = start;
    let samples = sampler.finish(total, on_frame)?;
    Ok(sampled_duration(samples, fps, Some(total)))
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

/// Milliseconds a frame is shown; browsers show zero-delay frames for 100 ms.
fn delay_ms((numer, denom): (u32, u32)) -> f64 {
    if numer == 0 || denom == 0 { 100.0 } else { f64::from(numer) / f64::from(denom) }
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
        on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(previous) = self.shown.take() {
            while self.time(self.emitted) < start {
                self.emit(previous.clone(), on_frame)?;
            }
        }
        self.shown = Some(frame);
        Ok(())
    }

    /// The animation ends at `total` seconds: `round(total * fps)` samples in all (at least one).
    fn finish<E: From<MediaError>>(
        mut self,
        total: f64,
        on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
    ) -> Result<usize, E> {
        let Some(last) = self.shown.take() else {
            return Err(self.refused("the animation has no frames".into()));
        };
        let samples = ((total * self.fps).round() as usize).max(1);
        while self.emitted < samples {
            self.emit(last.clone(), on_frame)?;
        }
        Ok(self.emitted)
    }

    fn emit<E: From<MediaError>>(
        &mut self,
        frame: RgbImage,
        on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
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

/// The image files of a frame folder in file-name order (their contents are read later, one at a
/// time).
fn frame_paths(dir: &Path) -> Result<Vec<PathBuf>, MediaError> {
    let bad = |e: std::io::Error| MediaError::Video(format!("{}: {e}", dir.display()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(bad)? {
        let path = entry.map_err(bad)?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "webp" | "gif") {
            if paths.len() == MAX_FRAMES {
                return Err(MediaError::Video(format!(
                    "{} holds more than {MAX_FRAMES} frames; the limit is {MAX_FRAMES}",
                    dir.display()
                )));
            }
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(MediaError::Video(format!("{} holds no PNG, JPEG, WebP or GIF frames", dir.display())));
    }
    Ok(paths)
}

fn read_frame(path: &Path) -> Result<RgbImage, MediaError> {
    let bytes = read_regular_file(path, MAX_IMAGE_FILE_BYTES)?;
    decode_image(&bytes).map_err(|e| MediaError::Video(format!("{}: {e}", path.display())))
}

fn ffmpeg_missing(path: &Path) -> MediaError {
    MediaError::Video(format!(
        "{} is not a GIF or WebP, and reading other video files needs ffmpeg, which is not installed \
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
const FFMPEG_FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,flv,live_flv,mpegts,mpeg,ogg,asf,mxf,nut,\
                              yuv4mpegpipe,h264,hevc,vvc,av1,vc1,m4v,mpegvideo,mjpeg,mpjpeg,dv,rm,ivf,obu";

/// `path` as ffmpeg's input: a file whatever the name (ffmpeg would read `concat:a.mp4` or
/// `http:...` as a protocol), opened only as one of [`FFMPEG_FORMATS`].
fn ffmpeg_input(command: &mut Command, path: &Path) {
    let mut input = std::ffi::OsString::from("file:");
    input.push(path);
    command.args(["-format_whitelist", FFMPEG_FORMATS, "-i"]).arg(input);
}

/// The length in seconds a video's container states, read by `ffprobe` (ffmpeg's companion); `None`
/// where it states none or ffprobe cannot run. Used only to end the last sample at the video's end.
fn probe_length(path: &Path) -> Option<f64> {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]);
    ffmpeg_input(&mut command, path);
    let output = command.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let length: f64 = String::from_utf8_lossy(&output.stdout).trim().parse().ok()?;
    (output.status.success() && length.is_finite() && length > 0.0).then_some(length)
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
/// with its own size, so no probe is needed); at most [`MAX_FRAMES`].
fn read_with_ffmpeg<E: From<MediaError>>(
    path: &Path,
    fps: f64,
    on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
) -> Result<usize, E> {
    // Sampled from the file's start (ffmpeg counts time from it): a stream whose first pictures
    // cannot be decoded (a broadcast capture cut mid-GOP) starts later, and its first decoded
    // picture stands for the time before it rather than every sample moving early.
    let (mut frames, mut stderr) = run_ffmpeg(path, fps, &format!("fps={fps}:start_time=0"), on_frame)?;
    if frames == 0 {
        // A video shorter than one sample: the filter drops its frame unless told to pass it (which
        // would also round every other video's end up, one frame more).
        (frames, stderr) = run_ffmpeg(path, fps, &format!("fps={fps}:start_time=0:eof_action=pass"), on_frame)?;
    }
    if frames == 0 {
        let why = if stderr.is_empty() { "it found no video frames in it".to_string() } else { stderr };
        return Err(MediaError::Video(format!("ffmpeg cannot read {}: {why}", path.display())).into());
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
    Ok(frames)
}

/// One ffmpeg run through `filter`, each frame to `on_frame`; the frames and what ffmpeg printed,
/// or an error where it failed.
fn run_ffmpeg<E: From<MediaError>>(
    path: &Path,
    fps: f64,
    filter: &str,
    on_frame: &mut impl FnMut(RgbImage) -> Result<(), E>,
) -> Result<(usize, String), E> {
    let mut command = Command::new("ffmpeg");
    command.args(["-nostdin", "-loglevel", "error"]);
    ffmpeg_input(&mut command, path);
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
        on_frame(frame)?;
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
            return Err(MediaError::Video(format!(
                "{} has no video stream (only sound or data); give a file with pictures",
                path.display()
            ))
            .into());
        }
        let why = if stderr.is_empty() { format!("it exited with {status}") } else { stderr };
        return Err(MediaError::Video(format!("ffmpeg cannot read {}: {why}", path.display())).into());
    }
    Ok((frames, stderr))
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

    fn collect(bytes: &[u8], fps: f64) -> Result<Vec<RgbImage>, MediaError> {
        let mut frames = Vec::new();
        let format = image::guess_format(bytes).map_err(|e| MediaError::Video(e.to_string()))?;
        sample_animation(Cursor::new(bytes), format, fps, "test", &mut |f| {
            frames.push(f);
            Ok::<(), MediaError>(())
        })?;
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

    /// A file that is neither GIF nor WebP goes to ffmpeg: without ffmpeg the error says to
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
