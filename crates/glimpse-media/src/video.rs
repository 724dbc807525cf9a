//! Video frames, sampled at a fixed rate: animated GIF or WebP (decoded by the `image` crate), a
//! folder of numbered frames, or any other video file through a system `ffmpeg`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, DynamicImage, Frame, ImageFormat, RgbImage};

use crate::MediaError;
use crate::image::{decode_image, to_rgb};

/// The most frames a video may yield after sampling (one hour at 2.8 fps).
pub const MAX_FRAMES: usize = 10_000;

/// Frames sampled every `1 / fps` seconds; frame `i` stands for `[i / fps, (i + 1) / fps)`.
#[derive(Debug, Clone)]
pub struct Video {
    pub frames: Vec<RgbImage>,
    pub fps: f64,
}

impl Video {
    pub fn duration(&self) -> f64 {
        self.frames.len() as f64 / self.fps
    }
}

/// Refuses sampling rates outside `(0, 60]` frames per second.
pub fn check_fps(fps: f64) -> Result<(), MediaError> {
    if fps > 0.0 && fps <= 60.0 { Ok(()) } else { Err(MediaError::Video(format!("fps = {fps} must be in (0, 60]"))) }
}

/// Reads a video from a path: a folder of frames, an animated GIF / WebP, or (through `ffmpeg`)
/// anything else.
pub fn read_video(path: &Path, fps: f64) -> Result<Video, MediaError> {
    check_fps(fps)?;
    if path.is_dir() {
        return read_frame_dir(path, fps);
    }
    let bytes = std::fs::read(path).map_err(|e| MediaError::Video(format!("{}: {e}", path.display())))?;
    match image::guess_format(&bytes) {
        Ok(ImageFormat::Gif) | Ok(ImageFormat::WebP) => decode_animation(&bytes, fps),
        Ok(_) => Err(MediaError::Video(format!(
            "{} is a still image; give an animated GIF / WebP, a folder of frames or a video file",
            path.display()
        ))),
        Err(_) => read_with_ffmpeg(path, fps),
    }
}

/// Samples an animated GIF or WebP at `fps`, using each frame's own delay.
pub fn decode_animation(bytes: &[u8], fps: f64) -> Result<Video, MediaError> {
    check_fps(fps)?;
    let bad = |e: image::ImageError| MediaError::Video(format!("cannot decode the animation: {e}"));
    let frames: Vec<Frame> = match image::guess_format(bytes) {
        Ok(ImageFormat::Gif) => GifDecoder::new(Cursor::new(bytes)).map_err(bad)?.into_frames().collect_frames(),
        Ok(ImageFormat::WebP) => WebPDecoder::new(Cursor::new(bytes)).map_err(bad)?.into_frames().collect_frames(),
        _ => return Err(MediaError::Video("not an animated GIF or WebP".into())),
    }
    .map_err(bad)?;
    if frames.is_empty() {
        return Err(MediaError::Video("the animation has no frames".into()));
    }
    // Frame i is shown from starts[i] for its delay; browsers show zero-delay frames for 100 ms.
    let mut starts = Vec::with_capacity(frames.len());
    let mut total = 0.0;
    for frame in &frames {
        starts.push(total);
        let (numer, denom) = frame.delay().numer_denom_ms();
        let ms = if numer == 0 || denom == 0 { 100.0 } else { f64::from(numer) / f64::from(denom) };
        total += ms / 1000.0;
    }
    let samples = ((total * fps).round() as usize).max(1);
    if samples > MAX_FRAMES {
        return Err(MediaError::Video(format!("{samples} frames at {fps} fps; the limit is {MAX_FRAMES}")));
    }
    let frames: Vec<RgbImage> = frames.into_iter().map(|f| to_rgb(DynamicImage::ImageRgba8(f.into_buffer()))).collect();
    let sampled = (0..samples)
        .map(|i| {
            let t = (i as f64 + 0.5) / fps;
            let shown = starts.partition_point(|&s| s <= t).saturating_sub(1);
            frames[shown].clone()
        })
        .collect();
    Ok(Video { frames: sampled, fps })
}

/// Every image in a folder, in file-name order, as consecutive frames `1 / fps` apart.
pub fn read_frame_dir(dir: &Path, fps: f64) -> Result<Video, MediaError> {
    check_fps(fps)?;
    let bad = |e: std::io::Error| MediaError::Video(format!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(bad)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "webp" | "gif")
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(MediaError::Video(format!("{} holds no PNG, JPEG, WebP or GIF frames", dir.display())));
    }
    if paths.len() > MAX_FRAMES {
        return Err(MediaError::Video(format!("{} frames; the limit is {MAX_FRAMES}", paths.len())));
    }
    let frames = paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| MediaError::Video(format!("{}: {e}", p.display())))?;
            decode_image(&bytes).map_err(|e| MediaError::Video(format!("{}: {e}", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Video { frames, fps })
}

/// Any video `ffmpeg` reads, sampled at `fps` into PNG frames in a temporary folder (at most
/// [`MAX_FRAMES`]; a longer video is cut there).
pub fn read_with_ffmpeg(path: &Path, fps: f64) -> Result<Video, MediaError> {
    check_fps(fps)?;
    let dir = std::env::temp_dir().join(format!("glimpse-frames-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| MediaError::Video(format!("{}: {e}", dir.display())))?;
    let result = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("fps={fps}"), "-frames:v", &MAX_FRAMES.to_string()])
        .arg(dir.join("%06d.png"))
        .output();
    let video = match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(MediaError::Video(format!(
            "{} is not a GIF or WebP, and reading other video files needs ffmpeg, which is not installed \
             (e.g. `apt install ffmpeg`); or pass a folder of frames",
            path.display()
        ))),
        Err(e) => Err(MediaError::Video(format!("cannot run ffmpeg: {e}"))),
        Ok(out) if !out.status.success() => Err(MediaError::Video(format!(
            "ffmpeg cannot read {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
        Ok(_) => read_frame_dir(&dir, fps),
    };
    let _ = std::fs::remove_dir_all(&dir);
    video
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Rgba, RgbaImage};

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

    #[test]
    fn animations_are_sampled_on_their_own_clock() {
        // Three frames of 1 s each, sampled at 2 fps: six samples, two per frame.
        let video = decode_animation(&gif(&[[255, 0, 0], [0, 255, 0], [0, 0, 255]], 1000), 2.0).unwrap();
        assert_eq!(video.frames.len(), 6);
        assert_eq!(video.duration(), 3.0);
        let reds: Vec<u8> = video.frames.iter().map(|f| f.get_pixel(0, 0)[0]).collect();
        let greens: Vec<u8> = video.frames.iter().map(|f| f.get_pixel(0, 0)[1]).collect();
        assert_eq!(reds.iter().filter(|&&r| r > 200).count(), 2);
        assert!(greens[2] > 200 && greens[3] > 200 && greens[4] < 50);
    }

    #[test]
    fn bad_videos_are_errors() {
        assert!(decode_animation(b"GIF89a broken", 2.0).is_err());
        assert!(decode_animation(&gif(&[[1, 2, 3]], 100), 0.0).unwrap_err().to_string().contains("fps"));
        let err = read_video(Path::new("/no/such/video.mp4"), 2.0).unwrap_err().to_string();
        assert!(err.contains("/no/such/video.mp4"), "{err}");
    }

    /// A file that is neither GIF nor WebP goes to ffmpeg: without ffmpeg the error says to
    /// install it; with ffmpeg, that it cannot read this file. Either way, no panic and no frames.
    #[test]
    fn other_files_go_through_ffmpeg() {
        let path = std::env::temp_dir().join(format!("glimpse-not-a-video-{}.mp4", std::process::id()));
        std::fs::write(&path, b"definitely not a video").unwrap();
        let err = read_video(&path, 2.0).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("ffmpeg"), "{err}");
    }
}
