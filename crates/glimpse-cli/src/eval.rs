//! `glimpse eval`: the embedded default (or any world-trained models) judged on held-out seeds
//! of the procedural world.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use futures_lite::future::block_on;
use glimpse_align::grounding::FindConfig;
use glimpse_align::guided::IMAGE_PROMPT;
use glimpse_align::projector::Projector;
use glimpse_align::zerota::VIDEO_PROMPT;
use glimpse_eval::{
    AttributeScores, DenseScores, GroundingScores, QUERY_LEVELS, dense_captioning, grounding, guided_captions,
    held_out_images, projector_captions, retrieval_r_at_1, zero_shot_attributes,
};
use glimpse_media::video::DEFAULT_FPS;
use glimpse_models::device::SelectedDevice;
use glimpse_models::{ClipBundle, Gpt2Bundle};
use glimpse_world::video::VideoConfig;
use serde_json::json;

use crate::{Format, GuidanceArgs, MeteorArgs, ModelArgs, MomentArgs, emit, progress_bar};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    models: ModelArgs,
    /// Projector file for projector captioning [default: the embedded default's].
    #[arg(long, value_name = "FILE")]
    projector: Option<PathBuf>,
    /// Held-out videos for dense captioning, in the plain world and again in the hard one (0 skips it).
    #[arg(long, default_value_t = 50)]
    videos: usize,
    /// Held-out videos for moment retrieval, in the plain world and again in the hard one (0 skips it).
    #[arg(long, default_value_t = 50)]
    grounding_videos: usize,
    /// Held-out frames for text->image retrieval (0 skips it).
    #[arg(long, default_value_t = 100)]
    frames: usize,
    /// Held-out images for image captioning (0 skips it).
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// First held-out seed; seeds `seed..seed + N` are used.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Frames per second sampled from each video.
    #[arg(long, default_value_t = DEFAULT_FPS)]
    fps: f64,
    #[command(flatten)]
    guidance: GuidanceArgs,
    #[command(flatten)]
    moments: MomentArgs,
    #[command(flatten)]
    meteor: MeteorArgs,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the report to FILE (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: EvalArgs, selected: &SelectedDevice) -> Result<()> {
    let inputs: Vec<&Path> = args.models.paths().chain(args.projector.as_deref()).collect();
    crate::check_out(args.out.as_deref(), &inputs)?;
    crate::world::check_fps(args.fps)?;
    if args.videos > 10_000 || args.images > 10_000 || args.grounding_videos > 10_000 {
        anyhow::bail!("--videos, --grounding-videos and --images take at most 10000");
    }
    if args.seed.checked_add(args.videos.max(args.grounding_videos) as u64).is_none() {
        anyhow::bail!("--seed {} leaves no room for the videos (--videos, --grounding-videos) below 2^64", args.seed);
    }
    let guidance = args.guidance.config(IMAGE_PROMPT);
    guidance.validate(&crate::flag)?;
    let moments = args.moments.config(args.guidance.config(VIDEO_PROMPT));
    moments.validate(&crate::flag)?;
    let mut meteor = args.meteor.start()?;
    let (clip, lm) = args.models.load(selected)?;
    let projector =
        (args.images > 0).then(|| load_projector(args.projector.as_deref(), &clip, &lm, selected)).transpose()?;
    let mut report = serde_json::Map::new();
    let mut table = Vec::new();
    if args.frames > 0 {
        let r1 = block_on(retrieval_r_at_1(&clip, args.frames, args.seed))?;
        table.push(format!("tiny CLIP text->image R@1 ({} held-out frames): {r1:.3}", args.frames));
        let chosen = block_on(zero_shot_attributes(&clip, args.frames, args.seed))?;
        let per: Vec<String> = chosen.iter().map(|(name, a)| format!("{name} {a:.2}")).collect();
        table.push(format!("tiny CLIP zero-shot attribute choice (same frames): {}", per.join(", ")));
        report
            .insert("retrieval".into(), json!({ "frames": args.frames, "r_at_1": r1, "zero_shot_attributes": chosen }));
    }
    if let Some(projector) = &projector {
        let scenes = held_out_images(&clip, args.images, args.seed)?;
        let pairs = block_on(projector_captions(&lm, projector, &scenes))?;
        let projected = AttributeScores::of(&pairs);
        table.push(attribute_row("image captioning, projector", &projected));
        let bar = progress_bar(args.images, "images");
        let pairs = block_on(guided_captions(&clip, &lm, &guidance, &scenes, |i, _| bar.set_position(i as u64 + 1)))?;
        bar.finish_and_clear();
        let guided = AttributeScores::of(&pairs);
        table.push(attribute_row("image captioning, CLIP-guided (zero-shot)", &guided));
        report.insert(
            "image_captioning".into(),
            json!({ "projector": projected, "guided": guided, "guided_examples": &pairs[..pairs.len().min(5)] }),
        );
    }
    // The plain world cuts hard between still shots; the hard world crossfades, pans and varies
    // the shots' lengths (`VideoConfig::hard`). The models were trained on neither's videos.
    let worlds = [
        ("plain", VideoConfig { fps: args.fps, ..VideoConfig::default() }),
        ("hard", VideoConfig { fps: args.fps, ..VideoConfig::hard() }),
    ];
    if args.videos > 0 {
        let mut dense = serde_json::Map::new();
        for (world, video_config) in &worlds {
            for (count_given, key, what) in [(true, "k_given", "K given"), (false, "k_auto", "K auto")] {
                let bar = progress_bar(args.videos, "videos");
                let seeds = args.seed..args.seed + args.videos as u64;
                let on_video = |_: &_| bar.inc(1);
                let results = block_on(dense_captioning(
                    &clip,
                    &lm,
                    &moments,
                    count_given,
                    video_config,
                    seeds,
                    on_video,
                    |_| {},
                ))?;
                bar.finish_and_clear();
                let scores = DenseScores::of(&results, meteor.as_mut()).context("METEOR")?;
                table.extend(dense_rows(&scores, &format!("{world} world, {what}")));
                dense.insert(format!("{world}_{key}"), json!({ "scores": scores, "videos": results }));
            }
        }
        report.insert("dense_captioning".into(), dense.into());
    }
    if args.grounding_videos > 0 {
        // The default is the training-free proposals; the ablation rows refine them by gradient.
        let proposals = FindConfig::default();
        let refined = FindConfig { refine_steps: 40, ..proposals.clone() };
        let configs = [proposals, refined];
        let mut grounding_report = serde_json::Map::new();
        for (world, video_config) in &worlds {
            let bar = progress_bar(args.grounding_videos, "grounding");
            let seeds = args.seed..args.seed + args.grounding_videos as u64;
            let results = block_on(grounding(&clip, &configs, video_config, seeds, || bar.inc(1)))?;
            bar.finish_and_clear();
            table.push(format!(
                "moment retrieval, {world} world ({} held-out videos; top moment per query):",
                args.grounding_videos
            ));
            table.push(format!("  {:<40}{:>7}  R1@0.3  R1@0.5  R1@0.7  mIoU", "query states, method", "queries"));
            for (name, results) in [("proposals", &results[0]), ("refined", &results[1])] {
                let mut rows = Vec::new();
                for (level, what) in QUERY_LEVELS.iter().enumerate() {
                    let scores = GroundingScores::of(results.iter().filter(|r| r.level == level));
                    table.push(grounding_row(&format!("{what}, {name}"), &scores));
                    rows.push(json!({ "level": what, "scores": scores }));
                }
                let all = GroundingScores::of(results.iter());
                table.push(grounding_row(&format!("all, {name}"), &all));
                let entry = json!({ "levels": rows, "all": all, "queries": results });
                grounding_report.insert(format!("{world}_{name}"), entry);
            }
        }
        report.insert("grounding".into(), grounding_report.into());
    }
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&serde_json::Value::Object(report))? + "\n",
        Format::Text => table.join("\n") + "\n",
    };
    emit(&text, args.out.as_deref())
}

/// The projector at `path` (or the embedded default's), checked against the models it joins.
fn load_projector(
    path: Option<&Path>,
    clip: &ClipBundle,
    lm: &Gpt2Bundle,
    selected: &SelectedDevice,
) -> Result<Projector> {
    let (bytes, name): (Cow<[u8]>, String) = match path {
        Some(path) => (crate::read_file(path)?.into(), path.display().to_string()),
        None => (glimpse_hub::embedded::WORLD_PROJECTOR.into(), "the embedded projector".into()),
    };
    let projector = Projector::from_safetensors(&bytes, &selected.device).with_context(|| name.clone())?;
    projector.config().check_fits(clip.config.projection_dim, lm.model.n_embd()).with_context(|| name)?;
    Ok(projector)
}

fn grounding_row(what: &str, scores: &GroundingScores) -> String {
    let r: Vec<String> = scores.r_at_1.iter().map(|(_, r)| format!("{r:.3}")).collect();
    format!("  {what:<40}{:>7}   {}   {:.3}", scores.queries, r.join("   "), scores.miou)
}

fn attribute_row(what: &str, scores: &AttributeScores) -> String {
    let per: Vec<String> = scores.per_attribute.iter().map(|(name, a)| format!("{name} {a:.2}")).collect();
    format!(
        "{what} ({} images): attribute accuracy {:.3} [{}], all five right {:.3}",
        scores.captions,
        scores.mean,
        per.join(", "),
        scores.all_correct
    )
}

fn dense_rows(scores: &DenseScores, what: &str) -> Vec<String> {
    let mut rows = vec![format!("dense captioning, {what} ({} held-out videos):", scores.videos)];
    rows.push("  tIoU   precision  recall".into());
    for s in &scores.segments {
        rows.push(format!("  {:.1}    {:.3}      {:.3}", s.threshold, s.precision, s.recall));
    }
    rows.push(format!("  mean   {:.3}      {:.3}", scores.mean_precision, scores.mean_recall));
    rows.push(format!("  events per video: {:.2} predicted, {:.2} true", scores.predicted_events, scores.true_events));
    rows.push(format!(
        "  matched pairs (tIoU >= 0.5): attribute accuracy {:.3}, all five right {:.3}",
        scores.attributes.mean, scores.attributes.all_correct
    ));
    let meteor = scores.meteor.map_or_else(String::new, |m| format!(", METEOR {m:.3}"));
    rows.push(format!(
        "  BLEU-4 {:.3}, CIDEr-D {:.3}{meteor} (densevid_eval's protocol, as `glimpse score`; mean over thresholds)",
        scores.bleu4, scores.cider_d
    ));
    rows.push(format!("  {}", crate::soda_line(scores.soda_c.as_ref())));
    rows
}
