//! Videos of the world: a sequence of scenes, each held for a few seconds, sometimes separated by
//! empty background, with ground-truth events (times and canonical captions) for dense video
//! captioning. Also atomic GIF and image writers, so an interrupted run never leaves a truncated
//! file where a later run would take it for a finished one.

use std::io::{self, Cursor};
use std::path::Path;

use image::buffer::ConvertBuffer;
use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, ImageError, ImageFormat, RgbImage, RgbaImage};
use serde::{Deserialize, Serialize};

use glimpse_media::rng::{Rng, derive_seed};
use glimpse_media::write_output;

use crate::render::{BACKGROUNDS, RenderConfig, Scene};
use crate::scene::{Attributes, canonical_caption};

/// Highest frame rate of a world video: GIF delays are whole centiseconds, and players and
/// decoders take a delay under 2 cs (above 50 fps) as unset and slow such frames down.
pub const MAX_FPS: f64 = 50.0;

/// How videos are sampled. Ranges are inclusive and may be given in either order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VideoConfig {
    /// Frames per second; must be finite and positive (at most [`MAX_FPS`] to write a GIF).
    pub fps: f64,
    /// Smallest and largest number of events (at least one event is always made).
    pub events: (usize, usize),
    /// Shortest and longest event, in seconds (finite; at least one frame).
    pub event_seconds: (f64, f64),
    /// Chance of an empty-background gap before the first event, between events, and after the
    /// last, so that models also learn that some stretches show nothing.
    pub gap_probability: f64,
    /// Shortest and longest gap, in seconds (finite; at least one frame).
    pub gap_seconds: (f64, f64),
    /// How each frame is drawn.
    pub render: RenderConfig,
    /// How the shots are filmed (the plain world cuts hard between still shots).
    #[serde(default)]
    pub camera: Camera,
}

/// How the camera films the world. Both effects are applied to the rendered frames, after the
/// timeline and every random draw, so a video's events and layouts are the same with any camera.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Camera {
    /// Seconds of crossfade at every change of shot (between events, and between an event and a
    /// gap), centred on the change; 0 cuts hard. Each side gives at most half its shot.
    pub crossfade_seconds: f64,
    /// How far the camera pans across each shot, as a fraction of the frame's width, alternating
    /// left and right from shot to shot; 0 holds still. Kept small (at most 0.15), so that a
    /// shape stays in the third its position names.
    pub pan: f64,
}

impl Camera {
    /// The hard world's camera: 1 s crossfades and an 8% pan per shot.
    pub const HARD: Camera = Camera { crossfade_seconds: 1.0, pan: 0.08 };

    /// One frame of a shot of `image` as this camera may film it inside a video, for training on
    /// filmed frames one at a time: moved sideways by up to half the pan either way (a shot pans
    /// from -pan/2 to +pan/2) and, where the camera crossfades, part-way into `neighbour`, the shot
    /// next to it; inside its own shot a frame always outweighs its neighbour, so the weight of
    /// `neighbour` is below one half.
    pub fn film_still(&self, image: &RgbImage, neighbour: &RgbImage, rng: &mut Rng) -> RgbImage {
        let shift = (rng.range(-0.5, 0.5) * self.pan_fraction() * f64::from(image.width())).round() as i64;
        let moved = shifted(image, shift);
        match self.crossfade() > 0.0 && image.dimensions() == neighbour.dimensions() {
            true => blend(&moved, neighbour, rng.range(0.0, 0.5)),
            false => moved,
        }
    }

    /// The pan as used: at most 0.15, and none when it is not a finite number.
    fn pan_fraction(&self) -> f64 {
        if self.pan.is_finite() { self.pan.clamp(0.0, 0.15) } else { 0.0 }
    }

    /// The crossfade's seconds as used: none when negative or not a finite number.
    fn crossfade(&self) -> f64 {
        if self.crossfade_seconds.is_finite() { self.crossfade_seconds.max(0.0) } else { 0.0 }
    }
}

impl VideoConfig {
    /// The hard world: [`Camera::HARD`] and events of 2 to 10 s.
    pub fn hard() -> Self {
        Self { camera: Camera::HARD, event_seconds: (2.0, 10.0), ..Self::default() }
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            fps: 4.0,
            events: (2, 5),
            event_seconds: (3.0, 8.0),
            gap_probability: 0.3,
            gap_seconds: (1.0, 3.0),
            render: RenderConfig::default(),
            camera: Camera::default(),
        }
    }
}

/// One ground-truth event: what is shown from `start` to `end` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GtEvent {
    /// Time of the event's first frame.
    pub start: f64,
    /// Time just after its last frame (the next frame's start).
    pub end: f64,
    /// The canonical caption of `attributes`.
    pub caption: String,
    pub attributes: Attributes,
}

/// A sampled video with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldVideo {
    pub fps: f64,
    pub frames: Vec<RgbImage>,
    /// Events in time order, never overlapping; frames outside every event show only background.
    pub events: Vec<GtEvent>,
}

impl WorldVideo {
    /// Length in seconds: each frame lasts `1 / fps`.
    pub fn duration(&self) -> f64 {
        self.frames.len() as f64 / self.fps
    }

    /// The annotation as JSON: `{"duration": .., "fps": .., "events": [{"start", "end", "caption",
    /// "attributes"}, ..]}`, the format the evaluation reads.
    pub fn annotation_json(&self) -> serde_json::Value {
        serde_json::json!({ "duration": self.duration(), "fps": self.fps, "events": self.events })
    }
}

/// Independent random streams of one video seed: the timeline and layouts do not depend on how
/// frames are drawn, so changing the noise or the frame size keeps the same events.
const TIMELINE_STREAM: u64 = 0;
const PIXEL_STREAM: u64 = 1;

/// Sample a video: `events` scenes, each differing from the previous one in at least two
/// attributes (so every boundary is visible and the captions differ), each held for a whole number
/// of frames, with optional background-only gaps, all on one background colour. Every frame is
/// rendered afresh, so shapes jitter and noise changes from frame to frame.
///
/// # Panics
/// If `config.fps` is not finite and positive or a seconds range is not finite: programmer errors
/// in the configuration, not data.
pub fn sample_video(seed: u64, config: &VideoConfig) -> WorldVideo {
    let fps = config.fps;
    assert!(fps.is_finite() && fps > 0.0, "VideoConfig::fps must be finite and positive, not {fps}");
    for (name, (lo, hi)) in [("event_seconds", config.event_seconds), ("gap_seconds", config.gap_seconds)] {
        assert!(lo.is_finite() && hi.is_finite(), "VideoConfig::{name} must be finite, not ({lo}, {hi})");
    }
    let mut timeline = Rng::new(derive_seed(seed, TIMELINE_STREAM));
    let background = *timeline.pick(&BACKGROUNDS);
    let pixels = Rng::new(derive_seed(seed, PIXEL_STREAM));
    let mut builder = Builder { config, background, timeline, pixels, frames: Vec::new(), shots: Vec::new() };
    let (lo, hi) = (config.events.0.min(config.events.1).max(1), config.events.0.max(config.events.1).max(1));
    let count = lo + builder.timeline.below(hi - lo + 1);
    let mut events: Vec<GtEvent> = Vec::new();
    for _ in 0..count {
        builder.maybe_gap();
        let attributes = loop {
            let a = Attributes::sample(&mut builder.timeline);
            if events.last().is_none_or(|e| a.differs_in(&e.attributes) >= 2) {
                break a;
            }
        };
        let scene = Scene::sample_on(background, Some(attributes), &mut builder.timeline);
        let start = builder.frames.len();
        builder.hold(&scene, config.event_seconds);
        events.push(GtEvent {
            start: start as f64 / fps,
            end: builder.frames.len() as f64 / fps,
            caption: canonical_caption(&attributes),
            attributes,
        });
    }
    builder.maybe_gap();
    let mut frames = builder.frames;
    film(&mut frames, &builder.shots, &config.camera, fps);
    WorldVideo { fps, frames, events }
}

/// Pans across each shot and crossfades between shots (`shots` are the first frame of each).
fn film(frames: &mut [RgbImage], shots: &[usize], camera: &Camera, fps: f64) {
    let n = frames.len();
    let ends: Vec<(usize, usize)> = shots.iter().zip(shots.iter().skip(1).chain([&n])).map(|(&a, &b)| (a, b)).collect();
    let pan = camera.pan_fraction();
    if pan > 0.0 {
        for (shot, &(a, b)) in ends.iter().enumerate() {
            let direction = if shot % 2 == 0 { 1.0 } else { -1.0 };
            for (i, frame) in frames[a..b].iter_mut().enumerate() {
                let progress = (i as f64 + 0.5) / (b - a) as f64 - 0.5;
                let shift = (direction * pan * progress * f64::from(frame.width())).round() as i64;
                *frame = shifted(frame, shift);
            }
        }
    }
    let half = (camera.crossfade() * fps / 2.0).round() as usize;
    if half == 0 {
        return;
    }
    let original: Vec<RgbImage> = frames.to_vec();
    for pair in ends.windows(2) {
        let ((a, k), (_, b)) = (pair[0], pair[1]);
        let h = half.min((k - a) / 2).min((b - k) / 2);
        let (before, after) = (&original[k - 1], &original[k]);
        for i in k - h..k + h {
            let alpha = (i - (k - h)) as f64 / (2 * h) as f64 + 0.5 / (2 * h) as f64;
            let (from, to) = if i < k { (&original[i], after) } else { (before, &original[i]) };
            frames[i] = blend(from, to, alpha);
        }
    }
}

/// `image` moved `shift` pixels to the right (left when negative), the edge column repeated
/// where the frame is uncovered.
fn shifted(image: &RgbImage, shift: i64) -> RgbImage {
    let width = i64::from(image.width());
    RgbImage::from_fn(image.width(), image.height(), |x, y| {
        let source = (i64::from(x) - shift).clamp(0, width - 1) as u32;
        *image.get_pixel(source, y)
    })
}

/// `(1 - alpha) * from + alpha * to`, per channel, rounded.
fn blend(from: &RgbImage, to: &RgbImage, alpha: f64) -> RgbImage {
    let mut out = from.clone();
    for (o, t) in out.pixels_mut().zip(to.pixels()) {
        for c in 0..3 {
            o[c] = (f64::from(o[c]) * (1.0 - alpha) + f64::from(t[c]) * alpha).round() as u8;
        }
    }
    out
}

/// The state of [`sample_video`] while it appends frames.
struct Builder<'a> {
    config: &'a VideoConfig,
    background: [u8; 3],
    /// Draws for the timeline and layouts.
    timeline: Rng,
    /// Draws for jitter and noise.
    pixels: Rng,
    frames: Vec<RgbImage>,
    /// The first frame of each shot held so far.
    shots: Vec<usize>,
}

impl Builder<'_> {
    /// Append `scene` for a sampled number of seconds, rounded to whole frames (at least one).
    fn hold(&mut self, scene: &Scene, (lo, hi): (f64, f64)) {
        let count = ((self.timeline.range(lo, hi) * self.config.fps).round() as usize).max(1);
        self.shots.push(self.frames.len());
        for _ in 0..count {
            self.frames.push(scene.render(&self.config.render, &mut self.pixels));
        }
    }

    /// Append a background-only gap with the configured probability.
    fn maybe_gap(&mut self) {
        if self.timeline.chance(self.config.gap_probability) {
            let scene = Scene::sample_on(self.background, None, &mut self.timeline);
            self.hold(&scene, self.config.gap_seconds);
        }
    }
}

/// GIF colour quantisation speed (1..=30): 10 keeps the few, well separated colours of a scene
/// intact while encoding many times faster than the default of 1.
const GIF_SPEED: i32 = 10;

/// Write `video` as an endlessly looping animated GIF, atomically. GIF delays are whole
/// centiseconds, so the frame delay is `1 / fps` rounded to 10 ms (4 fps is exact).
///
/// Fails with `InvalidInput` for a video without frames, which GIF cannot represent.
pub fn write_gif(video: &WorldVideo, path: &Path) -> io::Result<()> {
    if video.frames.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a GIF needs at least one frame"));
    }
    let centiseconds = (100.0 / video.fps).round().clamp(1.0, f64::from(u16::MAX)) as u32;
    let delay = Delay::from_numer_denom_ms(centiseconds * 10, 1);
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, GIF_SPEED);
        encoder.set_repeat(Repeat::Infinite).map_err(io_error)?;
        for frame in &video.frames {
            let rgba: RgbaImage = frame.convert();
            encoder.encode_frame(Frame::from_parts(rgba, 0, 0, delay)).map_err(io_error)?;
        }
        // Dropping the encoder writes the GIF trailer.
    }
    write_output(path, &bytes)
}

/// The format [`write_image`] writes `path` in: the one its extension names (PNG when the
/// extension is missing or unknown), if it is one glimpse reads (PNG, JPEG, WebP or GIF).
pub fn image_format(path: &Path) -> io::Result<ImageFormat> {
    let format = ImageFormat::from_path(path).unwrap_or(ImageFormat::Png);
    if ![ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP, ImageFormat::Gif].contains(&format) {
        let message = format!("{format:?} is not written by glimpse; name a .png, .jpg, .webp or .gif file");
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    Ok(format)
}

/// Write one image atomically, in its [`image_format`].
pub fn write_image(img: &RgbImage, path: &Path) -> io::Result<()> {
    let format = image_format(path)?;
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).map_err(io_error)?;
    write_output(path, bytes.get_ref())
}

/// Keep I/O errors as they are; wrap encoding errors.
fn io_error(error: ImageError) -> io::Error {
    match error {
        ImageError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::io::BufReader;
    use std::path::PathBuf;

    use image::AnimationDecoder;
    use image::codecs::gif::GifDecoder;

    use super::*;

    fn short() -> VideoConfig {
        VideoConfig { events: (2, 3), event_seconds: (1.0, 2.0), gap_seconds: (0.5, 1.0), ..Default::default() }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("glimpse-world-{}-{name}", std::process::id()))
    }

    fn shows_shapes(img: &RgbImage) -> bool {
        img.pixels().any(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 60)
    }

    #[test]
    fn timelines_are_consistent() {
        let config = VideoConfig::default();
        // Small frames: the timeline does not depend on them, and the test stays fast.
        let config = VideoConfig { render: RenderConfig { size: 8, ..config.render }, ..config };
        for seed in 0..30 {
            let video = sample_video(seed, &config);
            let duration = video.duration();
            assert_eq!(video.frames.len(), (duration * video.fps).round() as usize);
            assert!((2..=5).contains(&video.events.len()));
            let mut previous_end = 0.0;
            for event in &video.events {
                assert!(previous_end <= event.start && event.start < event.end && event.end <= duration);
                for t in [event.start, event.end] {
                    assert!(((t * video.fps).round() - t * video.fps).abs() < 1e-9);
                }
                let seconds = event.end - event.start;
                assert!((3.0 - 0.125..=8.0 + 0.125).contains(&seconds), "{seconds}");
                assert_eq!(event.caption, canonical_caption(&event.attributes));
                previous_end = event.end;
            }
            for pair in video.events.windows(2) {
                assert!(pair[0].attributes.differs_in(&pair[1].attributes) >= 2);
            }
        }
    }

    #[test]
    fn frames_show_shapes_exactly_during_events() {
        for seed in 0..10 {
            let video = sample_video(seed, &short());
            for (i, frame) in video.frames.iter().enumerate() {
                let t = (i as f64 + 0.5) / video.fps;
                let inside = video.events.iter().any(|e| e.start <= t && t < e.end);
                assert_eq!(shows_shapes(frame), inside, "seed {seed} frame {i}");
                assert_eq!(frame.dimensions(), (96, 96));
            }
        }
    }

    #[test]
    fn gaps_appear_when_certain_and_never_when_impossible() {
        let always = sample_video(1, &VideoConfig { gap_probability: 1.0, ..short() });
        assert!(always.events[0].start > 0.0 && always.events.last().unwrap().end < always.duration());
        assert!(always.events.windows(2).all(|p| p[0].end < p[1].start));
        let never = sample_video(1, &VideoConfig { gap_probability: 0.0, ..short() });
        assert_eq!(never.events[0].start, 0.0);
        assert_eq!(never.events.last().unwrap().end, never.duration());
        assert!(never.events.windows(2).all(|p| p[0].end == p[1].start));
    }

    #[test]
    fn same_seed_same_video() {
        let config = short();
        assert_eq!(sample_video(5, &config), sample_video(5, &config));
        assert_ne!(sample_video(5, &config).frames, sample_video(6, &config).frames);
        // The timeline does not depend on how frames are drawn.
        let quiet = VideoConfig { render: RenderConfig { noise: 0.0, size: 48, ..config.render }, ..config };
        assert_eq!(sample_video(5, &config).events, sample_video(5, &quiet).events);
    }

    #[test]
    fn odd_configs_still_make_a_video() {
        let config = VideoConfig { events: (0, 0), event_seconds: (-1.0, 0.0), gap_seconds: (0.0, 0.0), ..short() };
        let video = sample_video(3, &config);
        assert_eq!(video.events.len(), 1);
        assert_eq!(video.events[0].end - video.events[0].start, 1.0 / video.fps);
        let reversed = sample_video(3, &VideoConfig { events: (4, 2), ..short() });
        assert!((2..=4).contains(&reversed.events.len()));
    }

    #[test]
    fn the_hard_camera_keeps_the_timeline_and_changes_only_pixels() {
        let plain = VideoConfig { events: (3, 4), gap_probability: 0.5, ..VideoConfig::default() };
        let filmed = VideoConfig { camera: Camera::HARD, ..plain };
        for seed in 0..4 {
            let (cut, faded) = (sample_video(seed, &plain), sample_video(seed, &filmed));
            assert_eq!(cut.events, faded.events);
            assert_eq!(cut.frames.len(), faded.frames.len());
            // Each change of shot (4 fps, 1 s crossfade): the two frames either side are blends.
            for event in &cut.events[1..] {
                let k = (event.start * cut.fps).round() as usize;
                let (a, b) = (&cut.frames[k - 3], &cut.frames[k + 2]);
                let mixed = &faded.frames[k];
                assert_ne!(mixed, &cut.frames[k], "seed {seed}: frame {k} is not faded");
                let between = mixed.pixels().zip(a.pixels()).zip(b.pixels()).filter(|((m, a), b)| {
                    (0..3)
                        .all(|c| m[c] >= a[c].min(b[c]).saturating_sub(20) && m[c] <= a[c].max(b[c]).saturating_add(20))
                });
                assert!(between.count() * 10 >= 9 * mixed.len() / 3, "seed {seed}: frame {k} is not a blend");
            }
        }
        // The pan, on still frames (no jitter, no noise): each frame of a shot is its cut frame
        // moved sideways, by an amount that changes across the shot.
        let still = VideoConfig { render: RenderConfig { noise: 0.0, jitter: 0.0, ..plain.render }, ..plain };
        let panned = VideoConfig { camera: Camera { crossfade_seconds: 0.0, pan: 0.08 }, ..still };
        let (cut, moved) = (sample_video(1, &still), sample_video(1, &panned));
        let event = &cut.events[0];
        let shifts: Vec<i64> = ((event.start * cut.fps) as usize..(event.end * cut.fps) as usize)
            .map(|i| (-6..=6).find(|&d| shifted(&cut.frames[i], d) == moved.frames[i]).expect("a sideways move"))
            .collect();
        let range = shifts.iter().max().unwrap() - shifts.iter().min().unwrap();
        assert!((3..=8).contains(&range), "shifts across the shot: {shifts:?}");
        // No camera: exactly the plain world.
        assert_eq!(sample_video(3, &VideoConfig { camera: Camera::default(), ..plain }), sample_video(3, &plain));
    }

    #[test]
    fn a_filmed_still_is_its_image_moved_and_mixed_with_less_than_half_its_neighbour() {
        let still = RenderConfig { noise: 0.0, jitter: 0.0, ..RenderConfig::default() };
        let mut rng = Rng::new(9);
        let background = BACKGROUNDS[0];
        let image = Scene::sample_on(background, Some(Attributes::sample(&mut rng)), &mut rng).render(&still, &mut rng);
        let gap = Scene::sample_on(background, None, &mut rng).render(&still, &mut rng);
        let pan_only = Camera { crossfade_seconds: 0.0, pan: 0.08 };
        let (mut shifts, mut mixes) = (Vec::new(), 0);
        for _ in 0..40 {
            let filmed = pan_only.film_still(&image, &gap, &mut rng);
            shifts.push((-4..=4).find(|&d| shifted(&image, d) == filmed).expect("a sideways move of at most 4%"));
            // A crossfaded still is a mix nearer the image than the gap in every channel.
            let fade_only = Camera { crossfade_seconds: 1.0, pan: 0.0 };
            let mixed = fade_only.film_still(&image, &gap, &mut rng);
            let nearer = mixed.pixels().zip(image.pixels()).zip(gap.pixels()).all(|((m, i), g)| {
                (0..3).all(|c| {
                    m[c].abs_diff(i[c]) <= m[c].abs_diff(g[c]) + 1 && m[c] >= i[c].min(g[c]) && m[c] <= i[c].max(g[c])
                })
            });
            assert!(nearer);
            mixes += usize::from(mixed != image);
        }
        assert!(mixes >= 30, "{mixes} of 40 stills mixed");
        assert!(shifts.iter().any(|&d| d < 0) && shifts.iter().any(|&d| d > 0), "{shifts:?}");
        assert_eq!(Camera::default().film_still(&image, &gap, &mut rng), image);
    }

    #[test]
    #[should_panic(expected = "fps")]
    fn zero_fps_is_a_programmer_error() {
        sample_video(0, &VideoConfig { fps: 0.0, ..Default::default() });
    }

    #[test]
    fn annotation_json_has_the_documented_shape() {
        let video = sample_video(2, &short());
        let json = video.annotation_json();
        assert_eq!(json["fps"], 4.0);
        assert_eq!(json["duration"], video.duration());
        let events = json["events"].as_array().unwrap();
        assert_eq!(events.len(), video.events.len());
        assert_eq!(events[0]["caption"], video.events[0].caption.as_str());
        let back: Vec<GtEvent> = serde_json::from_value(json["events"].clone()).unwrap();
        assert_eq!(back, video.events);
    }

    #[test]
    fn gif_round_trips() {
        let video = sample_video(4, &short());
        let path = temp_path("round-trip.gif");
        write_gif(&video, &path).unwrap();
        let decoder = GifDecoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
        let frames = decoder.into_frames().collect_frames().unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(frames.len(), video.frames.len());
        assert_eq!(frames[0].delay().numer_denom_ms(), (250, 1));
        // Quantisation keeps the scene's colours close.
        let event = &video.events[0];
        let i = (event.start * video.fps) as usize;
        let (original, decoded) = (&video.frames[i], frames[i].buffer());
        let far = original.enumerate_pixels().filter(|&(x, y, p)| {
            let q = decoded.get_pixel(x, y);
            (0..3).any(|c| p.0[c].abs_diff(q.0[c]) > 24)
        });
        assert!(far.count() < 50);
    }

    #[test]
    fn tiny_and_odd_gifs_do_not_panic() {
        for size in [0, 1, 3] {
            let mut video =
                sample_video(1, &VideoConfig { render: RenderConfig { size, ..Default::default() }, ..short() });
            for fps in [f64::NAN, 0.0, 1000.0] {
                video.fps = fps;
                let path = temp_path(&format!("odd-{size}.gif"));
                // Zero-sized frames may be refused, but nothing panics and nothing is left behind.
                if write_gif(&video, &path).is_ok() {
                    fs::remove_file(&path).unwrap();
                }
            }
        }
    }

    #[test]
    fn empty_videos_are_refused() {
        let video = WorldVideo { fps: 4.0, frames: Vec::new(), events: Vec::new() };
        let err = write_gif(&video, &temp_path("empty.gif")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn images_are_written_atomically_in_their_format() {
        let img = sample_video(8, &short()).frames.swap_remove(0);
        for name in ["frame.png", "frame.unknown", "frame"] {
            let path = temp_path(name);
            write_image(&img, &path).unwrap();
            let back = image::open(&path).map(|i| i.to_rgb8());
            let back = back.or_else(|_| image::load_from_memory(&fs::read(&path).unwrap()).map(|i| i.to_rgb8()));
            fs::remove_file(&path).unwrap();
            assert_eq!(back.unwrap(), img, "{name}");
        }
        let jpeg = temp_path("frame.jpg");
        write_image(&img, &jpeg).unwrap();
        assert_eq!(ImageFormat::from_path(&jpeg).unwrap(), ImageFormat::Jpeg);
        assert_eq!(image::guess_format(&fs::read(&jpeg).unwrap()).unwrap(), ImageFormat::Jpeg);
        fs::remove_file(&jpeg).unwrap();
        assert!(write_image(&img, Path::new("/")).is_err());
        for name in ["empty.png", "empty.jpg", "empty.webp", "empty.gif"] {
            let path = temp_path(name);
            if write_image(&RgbImage::new(0, 0), &path).is_ok() {
                fs::remove_file(&path).unwrap();
            }
        }
        assert!(write_image(&img, &temp_path("missing-dir").join("frame.png")).is_err());
        let err = write_image(&img, &temp_path("frame.bmp")).unwrap_err().to_string();
        assert_eq!(err, "Bmp is not written by glimpse; name a .png, .jpg, .webp or .gif file");
        assert!(!temp_path("frame.bmp").exists());
    }
}
