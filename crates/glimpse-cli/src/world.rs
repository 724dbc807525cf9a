//! `glimpse world`: scenes and videos of the procedural world, with their ground truth.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use glimpse_media::rng::Rng;
use glimpse_media::write_output;
use glimpse_world::render::{RenderConfig, Scene};
use glimpse_world::scene::{Attributes, canonical_caption};
use glimpse_world::video::{MAX_FPS, VideoConfig, image_format, sample_video, write_gif, write_image};
use serde_json::json;

#[derive(Subcommand)]
pub enum WorldCommand {
    /// Render one scene (PNG, or the format OUT's extension names); prints its caption and
    /// attributes as JSON.
    Image {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
        /// Side of the square image in pixels.
        #[arg(long, default_value_t = 96)]
        size: u32,
    },
    /// Render a video of 2-5 scenes (with background-only gaps) as an animated GIF; writes its
    /// ground-truth events next to it (OUT with `.json`) and prints them.
    #[command(after_help = "JSON: {\"duration\": s, \"fps\": .., \"events\": [{\"start\": s, \"end\": s, \
                            \"caption\": .., \"attributes\": {..}}]}")]
    Video {
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_name = "OUT.gif")]
        out: PathBuf,
        #[arg(long, default_value_t = 4.0)]
        fps: f64,
        #[arg(long, default_value_t = 96)]
        size: u32,
        /// The hard world: 1 s crossfades between shots, a pan across each, events of 2 to 10 s.
        #[arg(long)]
        hard: bool,
    },
}

pub fn run(command: WorldCommand) -> Result<()> {
    let render = |size: u32| -> Result<RenderConfig> {
        if !(16..=2048).contains(&size) {
            bail!("--size {size} must be between 16 and 2048 pixels");
        }
        Ok(RenderConfig { size, ..RenderConfig::default() })
    };
    match command {
        WorldCommand::Image { seed, out, size } => {
            crate::check_out(Some(&out), &[])?;
            image_format(&out).with_context(|| format!("--out {}", out.display()))?;
            let mut rng = Rng::new(seed);
            let attributes = Attributes::sample(&mut rng);
            let image = Scene::sample(Some(attributes), &mut rng).render(&render(size)?, &mut rng);
            write_image(&image, &out).with_context(|| format!("cannot write {}", out.display()))?;
            let caption = canonical_caption(&attributes);
            crate::print_out(&format!("{}\n", json!({ "image": out, "caption": caption, "attributes": attributes })))?;
        }
        WorldCommand::Video { seed, out, fps, size, hard } => {
            check_fps(fps)?;
            // The truth goes beside the GIF under the same name: `--out x.json` would be both.
            if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("gif")) {
                bail!(
                    "--out {} must name a .gif file: the video is an animated GIF, its truth goes beside it",
                    out.display()
                );
            }
            let truth = out.with_extension("json");
            // Both files or neither: refused before either is written.
            crate::check_out(Some(&out), &[])?;
            crate::check_out(Some(&truth), &[]).with_context(|| format!("the truth of --out {}", out.display()))?;
            let world = if hard { VideoConfig::hard() } else { VideoConfig::default() };
            let video = sample_video(seed, &VideoConfig { fps, render: render(size)?, ..world });
            let annotations = serde_json::to_string_pretty(&video.annotation_json())?;
            write_gif(&video, &out).with_context(|| format!("cannot write {}", out.display()))?;
            if let Err(e) = write_output(&truth, annotations.as_bytes()) {
                // Best effort: a video without its truth is half an output.
                let _ = std::fs::remove_file(&out);
                return Err(e).with_context(|| format!("cannot write {}", truth.display()));
            }
            crate::print_out(&format!("{annotations}\n"))?;
        }
    }
    Ok(())
}

/// Refuses a frame rate a world video cannot have (`--fps` of `world video` and `eval`).
pub fn check_fps(fps: f64) -> Result<()> {
    if !(fps > 0.0 && fps <= MAX_FPS) {
        bail!("--fps {fps} must be in (0, {MAX_FPS}]");
    }
    Ok(())
}
