//! Long videos in bounded memory: frames are streamed from ffmpeg and only their embeddings are
//! kept, so peak memory does not grow with the video's length.
//!
//! The videos are made at test time by ffmpeg (`testsrc2`, 1080p, encoded at the sampling rate so
//! that making them takes seconds). Without ffmpeg the test says so and stops;
//! `GLIMPSE_TEST_FFMPEG=require` (set in CI) makes a missing ffmpeg a failure.

use std::path::Path;
use std::process::{Command, Stdio};

/// Peak resident memory that `caption-video` may reach on a 1080p video of any length, with the
/// embedded default on the CPU backend.
const PEAK_BOUND_MIB: u64 = 600;

/// What the longer video may add to the shorter one's peak: its frame embeddings and masks (a few
/// MiB), with room for the allocator's rounding.
const GROWTH_BOUND_MIB: u64 = 48;

/// A 1080p test pattern of `seconds` at 2 frames per second.
fn make_video(path: &Path, seconds: u32) {
    test_pattern("1920x1080:rate=2", &["-t", &seconds.to_string(), "-c:v", "mpeg4", "-q:v", "20", "-g", "240"], path);
}

/// ffmpeg's `testsrc2` at `size_and_rate`, encoded with `options` into `output` (read as a file:
/// its name may look like an ffmpeg protocol).
fn test_pattern(size_and_rate: &str, options: &[&str], output: &Path) {
    let mut file = std::ffi::OsString::from("file:");
    file.push(output);
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc2=size={size_and_rate}")])
        .args(options)
        .arg(file)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not make {}", output.display());
}

/// Runs `glimpse caption-video` on `video`; returns its JSON output and its peak resident memory
/// in MiB (the kernel's own account of the child, from `wait4`).
#[expect(clippy::zombie_processes, reason = "reaped by wait4 below, which also reports its peak memory")]
fn caption_with_peak(video: &Path) -> (serde_json::Value, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["--device", "cpu", "caption-video"])
        .arg(video)
        .args(["--events", "3", "--max-tokens", "2", "--steps-per-token", "1", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 reaps only this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "caption-video failed:\n{err}");
    // ru_maxrss is in KiB on Linux.
    (serde_json::from_str(&out).expect("JSON output"), usage.ru_maxrss as u64 / 1024)
}

#[test]
fn twenty_minutes_of_1080p_in_bounded_memory() {
    if !glimpse_test_device::ffmpeg("the long-video test") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("glimpse-long-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (short, long) = (dir.join("one-minute.mp4"), dir.join("twenty-minutes.mp4"));
    make_video(&short, 60);
    make_video(&long, 1200);
    let (short_out, short_peak) = caption_with_peak(&short);
    let (long_out, long_peak) = caption_with_peak(&long);
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!("peak resident memory: {short_peak} MiB for 1 min, {long_peak} MiB for 20 min of 1080p at 2 fps");

    assert_eq!(short_out["duration"].as_f64(), Some(60.0));
    assert_eq!(long_out["duration"].as_f64(), Some(1200.0));
    assert!(!long_out["events"].as_array().unwrap().is_empty());
    assert!(long_peak <= PEAK_BOUND_MIB, "20 min of 1080p peaked at {long_peak} MiB (bound {PEAK_BOUND_MIB})");
    assert!(
        long_peak <= short_peak + GROWTH_BOUND_MIB,
        "memory grows with length: {short_peak} MiB for 1 min, {long_peak} MiB for 20 min"
    );
}

/// A clip shorter than one sample still gives its one frame (ffmpeg's `fps` filter drops it unless
/// told to pass it) and lasts as long as the clip, a file whose name reads like an ffmpeg protocol (`concat:`) is read as the
/// file it is, and a file cut short is refused.
#[test]
fn a_frame_shorter_than_a_sample_and_a_name_like_a_protocol() {
    if !glimpse_test_device::ffmpeg("the long-video test") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("glimpse-short-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One frame at 25 fps: 0.04 s, a twelfth of a sample at 2 fps.
    let clip = dir.join("concat:one-frame.mp4");
    test_pattern("96x96:rate=25", &["-frames:v", "1", "-c:v", "mpeg4"], &clip);
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .current_dir(&dir)
        .args(["--device", "cpu", "caption-video", "concat:one-frame.mp4", "--max-tokens", "2", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // One sample, standing for the clip's own 0.04 s (not the 0.5 s of a sampling step).
    assert!(json["duration"].as_f64().is_some_and(|d| (d - 0.04).abs() < 1e-3), "one sample at 2 fps: {json}");
    let events = json["events"].as_array().unwrap();
    assert!(events.len() == 1 && events[0]["score"].as_f64().is_some_and(f64::is_finite), "{json}");

    // Other videos keep ffmpeg's own rounding: 4.3 s at 1 fps is four samples (passing the last
    // frame, as for the clip above, would make it five).
    let clip = dir.join("four-and-a-bit.mkv");
    test_pattern("96x96:rate=25", &["-t", "4.3", "-c:v", "mpeg4"], &clip);
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["--device", "cpu", "caption-video"])
        .arg(&clip)
        .args(["--fps", "1", "--max-tokens", "1", "--steps-per-token", "1", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["duration"], 4.0, "{json}");

    // A Matroska file cut in half: ffmpeg reads up to the cut and exits 0; glimpse says the file
    // is short rather than caption half a video as the whole.
    let whole = dir.join("whole.mkv");
    test_pattern("96x96:rate=25", &["-t", "4", "-c:v", "mpeg4", "-q:v", "2"], &whole);
    let bytes = std::fs::read(&whole).unwrap();
    let half = dir.join("half.mkv");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["--device", "cpu", "caption-video"])
        .arg(&half)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is cut short"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rate far below the video's gives one sample standing for the video's own length, not for a
/// sampling step of 100 s; a playlist named like a video (HLS, which would have ffmpeg read
/// another file of the machine) is refused as not a video, and a file of sound alone as one
/// without pictures.
#[test]
fn a_rate_below_the_video_and_a_playlist_named_as_a_video() {
    if !glimpse_test_device::ffmpeg("the long-video test") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("glimpse-slow-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("three-seconds.mp4");
    test_pattern("96x96:rate=10", &["-t", "3", "-c:v", "mpeg4"], &clip);
    let caption = |video: &Path, fps: &str| {
        Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .args(["--device", "cpu", "caption-video"])
            .arg(video)
            .args(["--fps", fps, "--max-tokens", "1", "--steps-per-token", "1", "--format", "json"])
            .output()
            .unwrap()
    };
    let out = caption(&clip, "0.01");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["duration"], 3.0, "{json}");
    assert!(json["events"].as_array().unwrap().iter().all(|e| e["end"].as_f64().unwrap() <= 3.0), "{json}");

    let playlist = dir.join("holiday.mp4");
    let listed = format!("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3,\n{}\n#EXT-X-ENDLIST\n", clip.display());
    std::fs::write(&playlist, listed).unwrap();
    let out = caption(&playlist, "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("is not a video file glimpse reads"), "{stderr}");
    assert!(out.stdout.is_empty());

    // A transport stream cut at the start (a capture begun mid-GOP): its first pictures cannot be
    // decoded, and the samples still cover it from its start, as a player's clock does (were they
    // counted from the first decoded picture, every event would come early).
    let stream = dir.join("whole.ts");
    test_pattern("96x96:rate=10", &["-t", "6", "-c:v", "mpeg2video", "-g", "40", "-q:v", "2"], &stream);
    let bytes = std::fs::read(&stream).unwrap();
    // Transport packets are 188 bytes: cut on a packet boundary, two fifths in.
    let cut = dir.join("cut.ts");
    std::fs::write(&cut, &bytes[bytes.len() * 2 / 5 / 188 * 188..]).unwrap();
    let length = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
        .arg(&cut)
        .output()
        .unwrap();
    let length: f64 = String::from_utf8_lossy(&length.stdout).trim().parse().unwrap();
    let out = caption(&cut, "2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let duration = json["duration"].as_f64().unwrap();
    assert!(duration > length - 0.5 && duration <= length, "{duration} s of a {length} s stream: {json}");

    // Sound alone: said so, rather than ffmpeg's "does not contain any stream".
    let mut sound = std::ffi::OsString::from("file:");
    sound.push(dir.join("sound.mp4"));
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=2"])
        .arg(sound)
        .status()
        .unwrap();
    assert!(made.success());
    let out = caption(&dir.join("sound.mp4"), "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("has no video stream"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
