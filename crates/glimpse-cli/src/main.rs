//! `glimpse`: CLIP and GPT-2 on your own device, from Hugging Face checkpoints.

/// A line on stderr, as `eprintln!` writes it, without its panic where stderr is gone (a log
/// pipe closed midway): the messages are lost and the run goes on.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod batch;
mod driver_output;
mod eval;
mod models;
mod train;
mod world;

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Float;
use clap::builder::TypedValueParser;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use futures_lite::future::block_on;
use glimpse_align::AlignError;
use glimpse_align::grounding::{FindConfig, FindOptions, check_queries, find_moments};
use glimpse_align::guided::{self, GuidanceConfig, GuidanceOptions, IMAGE_PROMPT, Step, Targets};
use glimpse_align::magic::{MagicConfig, magic_captions};
use glimpse_align::zerota::{
    EmbeddedVideo, Event, FrameEmbedder, SCENE_CUT, VIDEO_PROMPT, ZeroTaConfig, captions_json, dense_caption,
    embed_source,
};
use glimpse_batch::first_few;
use glimpse_media::decode_image;
use glimpse_media::image::MAX_IMAGE_FILE_BYTES;
use glimpse_media::subtitles::{Cue, check_chapters_fit, to_chapters, to_srt, to_vtt};
use glimpse_media::untrusted::{self, read_regular_file};
use glimpse_media::video::{DEFAULT_FPS, VideoSource};
use glimpse_models::device::{self, DeviceChoice, SelectedDevice};
use glimpse_models::generation::{Decoding, GenerationConfig, generate};
use glimpse_models::tensor::read;
use glimpse_models::{Clip, ClipBundle, Gpt2Bundle, ModelFiles, l2_normalize};
use glimpse_world::densevid;
use glimpse_world::meteor::Meteor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Loading a real-size model frees a buffer per tensor read, in a burst. With transparent huge
/// pages, a 2 MiB page stays resident while any 4 KiB of it is in use, and those freed pages stayed
/// resident: ~110 MB of peak memory for CLIP ViT-B/32 + GPT-2 small. mimalloc reserves its first
/// arena before `main`, so its own `allow_thp` option comes too late; the process-wide switch
/// covers that arena too. A refusal (an old kernel) only costs memory.
fn disable_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
}

#[derive(Parser)]
#[command(
    name = "glimpse",
    version,
    about = "CLIP and GPT-2 on your own device (CPU or GPU through wgpu): zero-shot dense video captioning, \
             image captioning and more, with the embedded default or Hugging Face checkpoints",
    after_help = "A model DIR is a folder in the Hugging Face layout: config.json, model.safetensors, \
                  tokenizer.json (and preprocessor_config.json or processor_config.json for CLIP), e.g. a `git clone` of \
                  https://huggingface.co/openai/clip-vit-base-patch32 or https://huggingface.co/gpt2.\n\n\
                  Without --clip / --lm / --model, the embedded default is used: a tiny CLIP and GPT-2 \
                  trained by glimpse on its procedural world of coloured shapes (see models/README.md).\n\n\
                  Examples:\n  \
                  glimpse caption-video examples/shapes.gif --format srt\n  \
                  glimpse caption-video talk.mp4 --clip clip-vit-base-patch32 --lm gpt2 --events 5\n  \
                  glimpse embed --model clip-vit-base-patch32 --image cat.png --text 'a cat' --text 'a dog'\n  \
                  glimpse generate --model gpt2 --prompt 'The quick brown fox' --max-new-tokens 20"
)]
struct Cli {
    /// Where to run: `wgpu` (Vulkan / Metal / DX12), `cpu`, or `auto` (a hardware GPU if there is
    /// one, else the CPU; software GPU adapters are slower than the CPU backend).
    #[arg(long, global = true, default_value = "auto", value_parser = device_choice())]
    device: DeviceChoice,

    #[command(subcommand)]
    command: Command,
}

/// `--device`: the library's names, listed in `--help`.
fn device_choice() -> impl TypedValueParser<Value = DeviceChoice> {
    clap::builder::PossibleValuesParser::new(DeviceChoice::ALL.map(DeviceChoice::name))
        .try_map(|name| name.parse::<DeviceChoice>())
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecodingArg {
    Greedy,
    Contrastive,
    Beam,
}

/// The settings of CLIP-guided decoding a user may change ([`GuidanceOptions`]).
#[derive(clap::Args)]
struct GuidanceArgs {
    /// Hard prompt the caption continues [default: "Image of" for images, "Video showing" for videos].
    #[arg(long)]
    prompt: Option<String>,
    /// Most tokens per caption.
    #[arg(long, default_value_t = GuidanceConfig::default().max_tokens)]
    max_tokens: usize,
    /// Candidate tokens CLIP scores at each step.
    #[arg(long, default_value_t = GuidanceConfig::default().top_k)]
    top_k: usize,
    /// Optimiser steps per token.
    #[arg(long, default_value_t = GuidanceConfig::default().steps_per_token)]
    steps_per_token: usize,
    /// Learnable soft-prompt vectors (0: key/value offsets only).
    #[arg(long, default_value_t = GuidanceConfig::default().soft_prompt_len)]
    soft_prompt: usize,
}

impl GuidanceArgs {
    fn config(&self, default_prompt: &str) -> GuidanceConfig {
        let options = GuidanceOptions {
            prompt: self.prompt.clone(),
            max_tokens: Some(self.max_tokens),
            top_k: Some(self.top_k),
            steps_per_token: Some(self.steps_per_token),
            soft_prompt_len: Some(self.soft_prompt),
        };
        options.config(default_prompt)
    }
}

/// The settings of the moment masks a user may change (defaults: `ZeroTaConfig::default()`).
#[derive(clap::Args)]
struct MomentArgs {
    /// Optimiser steps on the masks alone before captioning starts.
    #[arg(long, default_value_t = ZeroTaConfig::default().warmup_steps)]
    warmup_steps: usize,
    /// Learning rate of the masks.
    #[arg(long, default_value_t = ZeroTaConfig::default().mask_lr)]
    mask_lr: f64,
    /// With a fixed --events K, masks start on the K longest scenes, a scene cut being where
    /// consecutive frames' CLIP similarity drops below this value (--events auto finds its scenes
    /// by kernel temporal segmentation instead).
    #[arg(long, default_value_t = SCENE_CUT, value_name = "SIMILARITY")]
    scene_cut: f32,
    /// Start the masks evenly spread instead (ZeroTA's start; pair it with e.g.
    /// --warmup-steps 150 --mask-lr 0.05).
    #[arg(long)]
    even_start: bool,
    /// How readily `--events auto` starts a new scene: the weight of the penalty per scene in
    /// kernel temporal segmentation (larger: fewer events).
    #[arg(long, default_value_t = ZeroTaConfig::default().scene_penalty)]
    scene_penalty: f64,
    /// Weight of the pairwise tIoU loss that keeps events apart.
    #[arg(long, default_value_t = ZeroTaConfig::default().tiou_weight)]
    tiou_weight: f64,
    /// Weight of the inside/outside similarity that makes a mask take in a whole scene.
    #[arg(long, default_value_t = ZeroTaConfig::default().contrast_weight)]
    contrast_weight: f64,
    /// Narrowest mask, as a fraction of the video.
    #[arg(long, default_value_t = ZeroTaConfig::default().min_width)]
    min_width: f64,
}

impl MomentArgs {
    fn config(&self, guidance: GuidanceConfig) -> ZeroTaConfig {
        ZeroTaConfig {
            guidance,
            warmup_steps: self.warmup_steps,
            mask_lr: self.mask_lr,
            tiou_weight: self.tiou_weight,
            contrast_weight: self.contrast_weight,
            min_width: self.min_width,
            scene_penalty: self.scene_penalty,
            scene_cut: (!self.even_start).then_some(self.scene_cut),
            ..ZeroTaConfig::default()
        }
    }
}

/// The options of dense captioning (`caption-video`, `batch caption-video`).
#[derive(clap::Args)]
struct DenseArgs {
    /// Number of events K, or `auto`: one event per scene of the video (counted by kernel
    /// temporal segmentation of the frames' CLIP embeddings), at most --max-events.
    #[arg(long, default_value_t = EventsArg(ZeroTaConfig::default().events), value_name = "K|auto")]
    events: EventsArg,
    /// The most events `--events auto` may find.
    #[arg(long, default_value_t = ZeroTaConfig::default().max_events)]
    max_events: usize,
    /// Caption blank scenes too (by default scenes of mostly flat frames, such as black between
    /// shots, get no event; very dark or featureless footage can look flat).
    #[arg(long)]
    keep_blank: bool,
    /// Frames per second: the sampling rate of animations and video files, the frame rate of a folder.
    #[arg(long, default_value_t = DEFAULT_FPS)]
    fps: f64,
    /// Seed of the masks' starting positions (same seed, same device: same result).
    #[arg(long, default_value_t = ZeroTaConfig::default().seed)]
    seed: u64,
    #[arg(long, value_enum, default_value_t = Method::Zerota)]
    method: Method,
    #[command(flatten)]
    guidance: GuidanceArgs,
    #[command(flatten)]
    moments: MomentArgs,
}

impl DenseArgs {
    /// The pipeline's configuration, checked, its errors naming the flags.
    fn config(&self) -> Result<ZeroTaConfig> {
        let mut config = ZeroTaConfig {
            events: self.events.0,
            max_events: self.max_events,
            keep_blank: self.keep_blank,
            seed: self.seed,
            ..self.moments.config(self.guidance.config(VIDEO_PROMPT))
        };
        if self.method == Method::Uniform {
            config = config.uniform();
        }
        config.validate(&flag)?;
        Ok(config)
    }
}

/// `--events`: a count, or `auto` (`None`).
#[derive(Clone, Copy)]
struct EventsArg(Option<usize>);

impl std::str::FromStr for EventsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self(None)),
            _ => s.parse().map(|k| Self(Some(k))).map_err(|_| format!("`{s}` is neither a count nor `auto`")),
        }
    }
}

impl std::fmt::Display for EventsArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(k) => write!(f, "{k}"),
            None => f.write_str("auto"),
        }
    }
}

/// The flag of a field of `glimpse_align`'s configs, for the messages of their checks.
fn flag(field: &str) -> String {
    match field {
        "soft_prompt_len" => "--soft-prompt".into(),
        field => format!("--{}", field.replace('_', "-")),
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum VideoFormat {
    /// Times, caption and score per event.
    Text,
    Json,
    Srt,
    Vtt,
    /// YouTube chapters (`MM:SS Title`, from 00:00, at least three of 10 s or more; short events
    /// are merged into their neighbours).
    Chapters,
    /// The captions alone, one per line: a plain transcript.
    Txt,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ImageMethod {
    /// A prefix optimised against CLIP at every token (ZeroCap-style).
    Guided,
    /// Contrastive search with a CLIP term, no gradients (MAGIC; faster). Uses --prompt and
    /// --max-tokens; its candidates are the paper's 45, not --top-k; no optimiser steps.
    Magic,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Method {
    /// Moment masks and prefixes optimised jointly (ZeroTA).
    Zerota,
    /// Equal segments, each captioned as it is (a baseline without moment optimisation).
    Uniform,
}

#[derive(Subcommand)]
enum Command {
    /// L2-normalised CLIP embeddings of texts and images, and their similarity logits: the
    /// building block of retrieval and zero-shot classification.
    #[command(after_help = "JSON output: {\"text_embeds\": [[..]], \"image_embeds\": [[..]], \
                            \"logits_per_image\": [[..]]}, each present when its inputs are given.")]
    Embed {
        /// CLIP model directory (Hugging Face layout) or hub repository id (owner/name[@revision]) [default: the embedded world CLIP].
        #[arg(long, value_name = "DIR|ID")]
        model: Option<PathBuf>,
        /// A text to embed; repeat for several.
        #[arg(long = "text", value_name = "T")]
        texts: Vec<String>,
        /// An image to embed (PNG, JPEG, WebP, GIF); repeat for several.
        #[arg(long = "image", value_name = "PATH")]
        images: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Caption images zero-shot: GPT-2 is steered towards each image's CLIP embedding by
    /// optimising a prefix at every token (ZeroCap-style; no training data).
    #[command(after_help = "JSON output: {\"captions\": [{\"image\": .., \"caption\": .., \"score\": ..}]}; \
                            score is the cosine similarity of caption and image in CLIP space.")]
    CaptionImage {
        /// Images to caption (PNG, JPEG, WebP, GIF).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<PathBuf>,
        #[command(flatten)]
        models: ModelArgs,
        #[arg(long, value_enum, default_value_t = ImageMethod::Guided)]
        method: ImageMethod,
        #[command(flatten)]
        guidance: GuidanceArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the result to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Dense video captioning zero-shot (ZeroTA): find K events and caption each.
    #[command(after_help = "VIDEO is an animated GIF, WebP or PNG, a folder of frames (in name order, numbers by \
                            value: frame2 before frame10), or any video file ffmpeg reads (needs ffmpeg \
                            installed).\n\n\
                            JSON output: {\"video\": .., \"duration\": s, \"events\": [{\"start\": s, \"end\": s, \
                            \"caption\": .., \"score\": ..}]}, events sorted by start.")]
    CaptionVideo {
        #[arg(value_name = "VIDEO")]
        video: PathBuf,
        #[command(flatten)]
        models: ModelArgs,
        #[command(flatten)]
        dense: DenseArgs,
        #[arg(long, value_enum, default_value_t = VideoFormat::Text)]
        format: VideoFormat,
        /// Write the result to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Find where in a video something happens, from a description (zero-shot, CLIP only):
    /// spans read off each frame's similarity to the query, then refined by gradient as soft masks.
    #[command(after_help = "VIDEO is read as by caption-video. The frames are embedded once for all queries.\n\n\
                            JSON output: {\"video\": .., \"duration\": s, \"queries\": [{\"query\": .., \
                            \"moments\": [{\"start\": s, \"end\": s, \"score\": ..}]}]}, moments best first; \
                            score is how much more the moment matches the query than the rest of the video \
                            (difference of CLIP cosine similarities).")]
    Find {
        #[arg(value_name = "VIDEO")]
        video: PathBuf,
        /// What to find; give several to search for each.
        #[arg(required = true, value_name = "QUERY")]
        queries: Vec<String>,
        /// CLIP model directory (Hugging Face layout) or hub repository id (owner/name[@revision]) [default: the embedded world CLIP].
        #[arg(long, value_name = "DIR|ID")]
        clip: Option<PathBuf>,
        /// Moments per query, best first.
        #[arg(long, default_value_t = FindConfig::default().top)]
        top: usize,
        /// Frames per second sampled from the video.
        #[arg(long, default_value_t = DEFAULT_FPS)]
        fps: f64,
        /// Shortest moment, in seconds.
        #[arg(long, default_value_t = FindConfig::default().min_seconds)]
        min_seconds: f64,
        /// Gradient steps refining each moment (0: the training-free proposals alone).
        #[arg(long, default_value_t = FindConfig::default().refine_steps)]
        refine_steps: usize,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Write the result to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Continue a prompt with GPT-2 (greedy, contrastive or beam search, KV-cached).
    #[command(after_help = "JSON output: {\"ids\": [..new token ids..], \"text\": \"..new text..\"}.")]
    Generate {
        /// GPT-2 model directory (Hugging Face layout) or hub repository id (owner/name[@revision]) [default: the embedded world GPT-2].
        #[arg(long, value_name = "DIR|ID")]
        model: Option<PathBuf>,
        /// The prompt, tokenised exactly as tokenizer.json says (no extra start token).
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 20, value_name = "N")]
        max_new_tokens: usize,
        #[arg(long, value_enum, default_value_t = DecodingArg::Greedy)]
        decoding: DecodingArg,
        /// Contrastive search: number of candidates.
        #[arg(long, default_value_t = 4)]
        k: usize,
        /// Contrastive search: weight of the degeneration penalty, in [0, 1].
        #[arg(long, default_value_t = 0.6)]
        alpha: f32,
        /// Beam search: number of hypotheses kept.
        #[arg(long, default_value_t = 4)]
        beams: usize,
        /// Stop after the end-of-text token instead of always generating N tokens.
        #[arg(long)]
        stop_at_eos: bool,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Train the embedded default's models on the procedural world (CPU: minutes).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// The download cache of hub models: list, fetch ahead of time, remove.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Caption an archive: every video of a manifest, sharded over workers (Kubernetes Indexed
    /// Jobs, Slurm arrays), each result written once; then merge the results.
    #[command(subcommand)]
    Batch(batch::BatchCommand),
    /// Render scenes and videos of the procedural world with their ground truth.
    #[command(subcommand)]
    World(world::WorldCommand),
    /// Dense-captioning scores of a submission (`batch merge`'s output, or any file in the
    /// ActivityNet Captions layout) against a truth file in that layout, by `densevid_eval`'s
    /// protocol: BLEU-1..4, CIDEr-D (what densevid_eval prints as CIDEr), precision and recall at tIoU 0.3 / 0.5 / 0.7 /
    /// 0.9 and their mean.
    #[command(after_help = "TRUTH: {id: {\"timestamps\": [[start, end], ..], \"sentences\": [..]}} (ActivityNet \
                            Captions' val_1.json layout).\n\n\
                            JSON output: [{\"threshold\": t, \"bleu_1\": .., .., \"recall\": ..}, .., {the mean, no threshold}]")]
    Score {
        #[arg(value_name = "RESULTS")]
        results: PathBuf,
        #[arg(value_name = "TRUTH")]
        truth: PathBuf,
        #[command(flatten)]
        meteor: MeteorArgs,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Score models on held-out seeds of the world: retrieval, image and dense video captioning.
    #[command(after_help = "JSON output (--format json): {\"retrieval\": {..}, \"image_captioning\": {..}, \
                            \"dense_captioning\": {\"scores\": {..}, \"videos\": [..]}}")]
    Eval(eval::EvalArgs),
    /// Speed and memory at real model sizes (GPT-2 small, CLIP ViT-B/32, random weights) on each
    /// backend, side by side with PyTorch when `bench/reference.py` can run (torch + transformers).
    #[command(after_help = "Figures: gpt2_decode_tok_s (greedy, KV cache, batch 1, 64 new tokens after 8), \
                            clip_image_img_s (batch 8, 224x224), clip_text_txt_s (64 texts x 16 tokens), \
                            prefix_step_ms (one CLIP-guided prefix step: GPT-2 forward + backward over a \
                            5-token prefix and the caption so far, 64 candidates scored by CLIP, AdamW; mean \
                            over a 12-token caption), zerota_video_s (60 s at 2 fps, 3 events, 12 tokens x 3 \
                            steps), each with the measuring process's peak memory.\n\n\
                            Examples:\n  \
                            glimpse bench                                   # every backend, every figure\n  \
                            glimpse bench --backend cpu --metric clip_text_txt_s --runs 10\n  \
                            glimpse bench --record bench/RESULTS.md --json bench.json")]
    Bench {
        #[command(flatten)]
        args: glimpse_bench::BenchArgs,
        /// Print JSON instead of a table on stdout.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

/// The exit status of a run stopped by a bug (sysexits' EX_SOFTWARE), apart from refused input (1).
const EXIT_INTERNAL_ERROR: i32 = 70;

fn main() {
    disable_huge_pages();
    let matches = Cli::command().get_matches();
    install_panic_hook(command_name(&matches));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The hook has reported a panic; unwinding up to here runs the destructors that remove
    // half-written files.
    let Ok(outcome) = std::panic::catch_unwind(AssertUnwindSafe(|| run(cli))) else {
        std::process::exit(EXIT_INTERNAL_ERROR);
    };
    let Err(err) = outcome else { return };
    // A reader that stops early (`glimpse ... | head`) is no failure: the run ends quietly with 0,
    // as tools that ignore SIGPIPE (ripgrep) do, instead of reporting an error nobody asked about.
    if err.chain().any(|e| e.is::<StdoutClosed>()) {
        return;
    }
    let _ = writeln!(std::io::stderr(), "error: {err:#}");
    std::process::exit(1);
}

/// The subcommands of a run, e.g. `train lm`, for the panic message.
fn command_name(matches: &clap::ArgMatches) -> String {
    let mut names = Vec::new();
    let mut current = matches;
    while let Some((name, sub)) = current.subcommand() {
        names.push(name);
        current = sub;
    }
    names.join(" ")
}

/// Replaces Rust's panic message by one line saying what failed and where to report it. Panics
/// that `glimpse_media::untrusted::decoding` turns into ordinary errors pass silently.
fn install_panic_hook(command: String) {
    std::panic::set_hook(Box::new(move |info| {
        if glimpse_media::untrusted::panic_becomes_error() {
            return;
        }
        let message = info.payload_as_str().unwrap_or("no message");
        let place = info.location().map_or_else(|| "an unknown place".to_string(), ToString::to_string);
        // Written, not `eprintln!`ed: a closed stderr must not panic inside the hook.
        let _ = writeln!(
            std::io::stderr(),
            "error: glimpse {command} failed unexpectedly (internal error: {message} at {place}); please report it \
             at {}/issues",
            env!("CARGO_PKG_REPOSITORY")
        );
    }));
}

/// Stdout's reader has gone (a closed pipe).
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout. `print!` panics once the reader has gone (`glimpse ... | head -c1`);
/// this returns [`StdoutClosed`], which ends the run quietly.
fn print_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        result => result.context("cannot write to stdout"),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(command) => train::run(command, &select_device(cli.device)?),
        Command::World(command) => world::run(command),
        Command::Batch(command) => batch::run(command, cli.device),
        Command::Models(command) => models::run(command),
        Command::Score { results, truth, meteor, format } => score(&results, &truth, &meteor, format),
        Command::Eval(args) => eval::run(args, &select_device(cli.device)?),
        Command::Bench { args, format } => bench(&args, format),
        Command::Embed { model, texts, images, format } => {
            if texts.is_empty() && images.is_empty() {
                bail!("nothing to embed: give at least one --text or --image");
            }
            check_images(&images)?;
            embed(&select_device(cli.device)?, model.as_deref(), &texts, &images, format)
        }
        Command::CaptionImage { images, models, method, guidance, format, out } => {
            let config = guidance.config(IMAGE_PROMPT);
            config.validate(&flag)?;
            let inputs: Vec<&Path> = images.iter().map(PathBuf::as_path).chain(models.paths()).collect();
            check_out(out.as_deref(), &inputs)?;
            check_images(&images)?;
            let selected = select_device(cli.device)?;
            caption_images(&selected, &models, &images, method, &config, format, out.as_deref())
        }
        Command::CaptionVideo { video, models, dense, format, out } => {
            let inputs: Vec<&Path> = std::iter::once(video.as_path()).chain(models.paths()).collect();
            check_out(out.as_deref(), &inputs)?;
            let source = VideoSource::open(&video, dense.fps)?;
            let config = dense.config()?;
            let selected = select_device(cli.device)?;
            caption_video(&selected, &models, &video, &source, &config, format, out.as_deref())
        }
        Command::Find { video, queries, clip, top, fps, min_seconds, refine_steps, format, out } => {
            let inputs: Vec<&Path> = std::iter::once(video.as_path()).chain(clip.as_deref()).collect();
            check_out(out.as_deref(), &inputs)?;
            let source = VideoSource::open(&video, fps)?;
            let options =
                FindOptions { top: Some(top), min_seconds: Some(min_seconds), refine_steps: Some(refine_steps) };
            let config = options.config();
            config.validate(&flag)?;
            check_queries(&queries.iter().map(String::as_str).collect::<Vec<_>>())?;
            let selected = select_device(cli.device)?;
            find(&selected, clip.as_deref(), &video, &source, &queries, &config, format, out.as_deref())
        }
        Command::Generate { model, prompt, max_new_tokens, decoding, k, alpha, beams, stop_at_eos, format } => {
            let decoding = match decoding {
                DecodingArg::Greedy => Decoding::Greedy,
                DecodingArg::Contrastive if !(0.0..=1.0).contains(&alpha) => {
                    bail!("--alpha {alpha} must be between 0 and 1")
                }
                // The upper bounds depend on the model's vocabulary: the library checks them.
                DecodingArg::Contrastive if k == 0 => bail!("--k 0 must be at least 1"),
                DecodingArg::Contrastive => Decoding::Contrastive { top_k: k, alpha },
                DecodingArg::Beam if beams == 0 => bail!("--beams 0 must be at least 1"),
                DecodingArg::Beam => Decoding::Beam { beams },
            };
            let selected = select_device(cli.device)?;
            generate_text(&selected, model.as_deref(), &prompt, max_new_tokens, decoding, stop_at_eos, format)
        }
    }
}

/// `glimpse score`: `densevid_eval`'s protocol on a submission and a truth file.
fn score(results: &Path, truth: &Path, meteor: &MeteorArgs, format: Format) -> Result<()> {
    let predictions =
        densevid::read_predictions(&read_file(results)?).map_err(|e| anyhow::anyhow!("{}: {e}", results.display()))?;
    let videos = densevid::read_truth(&read_file(truth)?).map_err(|e| anyhow::anyhow!("{}: {e}", truth.display()))?;
    check_ids(&predictions, &videos, results, truth)?;
    let mut meteor = meteor.start()?;
    let scores = densevid::evaluate(&predictions, &videos, meteor.as_mut()).context("METEOR")?;
    let soda = meteor.as_mut().map(|m| densevid::soda_c(&predictions, &videos, m)).transpose().context("METEOR")?;
    if format == Format::Json {
        let json = serde_json::json!({ "scores": scores, "soda_c": soda });
        return print_out(&format!("{}\n", serde_json::to_string_pretty(&json)?));
    }
    let mut lines = vec![format!(
        "{} videos in the truth, {} of them predicted\n\ntIoU  BLEU-1  BLEU-2  BLEU-3  BLEU-4  CIDEr-D  METEOR  precision  recall",
        videos.len(),
        videos.keys().filter(|id| predictions.contains_key(*id)).count()
    )];
    for s in &scores {
        let threshold = s.threshold.map_or_else(|| "mean".to_string(), |t| format!("{t:.1} "));
        let meteor = s.meteor.map_or_else(|| "   -  ".to_string(), |m| format!("{m:.4}"));
        lines.push(format!(
            "{threshold:<5} {:.4}  {:.4}  {:.4}  {:.4}  {:.4}   {meteor}  {:.4}     {:.4}",
            s.bleu_1, s.bleu_2, s.bleu_3, s.bleu_4, s.cider_d, s.precision, s.recall
        ));
    }
    lines.push(soda_line(soda.as_ref()));
    print_out(&(lines.join("\n") + "\n"))
}

/// Refuses a submission and a truth file that share no video (ids spelt two ways, such as
/// ActivityNet's `v_` prefix on one side only: every figure would be 0), and says on stderr what
/// is not scored: videos the truth lacks, and predictions past the first
/// [`densevid::MAX_PROPOSALS`] of a video.
fn check_ids(
    predictions: &BTreeMap<String, Vec<densevid::Prediction>>,
    videos: &BTreeMap<String, densevid::Truth>,
    results: &Path,
    truth: &Path,
) -> Result<()> {
    if videos.is_empty() {
        bail!("{} holds no video; give the benchmark's truth file", truth.display());
    }
    let quoted = |ids: &mut dyn Iterator<Item = &String>| -> Vec<String> {
        ids.map(|id| format!("`{}`", untrusted::quoted(id))).collect()
    };
    let outside = quoted(&mut predictions.keys().filter(|id| !videos.contains_key(*id)));
    if !predictions.is_empty() && outside.len() == predictions.len() {
        bail!(
            "none of the {} videos of {} is in {} (its ids are like {}, the truth's like {}); the ids must be \
             spelt alike",
            predictions.len(),
            results.display(),
            truth.display(),
            first_few(&outside, 3, ", "),
            first_few(&quoted(&mut videos.keys().take(3)), 3, ", ")
        );
    }
    if !outside.is_empty() {
        say!(
            "score: of the videos of {}, {} are not in the truth and are not scored ({})",
            results.display(),
            outside.len(),
            first_few(&outside, 10, ", ")
        );
    }
    let long = predictions.values().filter(|p| p.len() > densevid::MAX_PROPOSALS).count();
    if long > 0 {
        say!(
            "score: of the videos with more than {} predictions ({long}), the first {} of each are scored, as \
             densevid_eval scores them",
            densevid::MAX_PROPOSALS,
            densevid::MAX_PROPOSALS
        );
    }
    Ok(())
}

/// `--meteor-jar`: METEOR, and SODA_c, which scores with it.
#[derive(clap::Args)]
struct MeteorArgs {
    /// METEOR 1.5's jar (e.g. pycocoevalcap's `meteor/meteor-1.5.jar`, its `data/` beside it), run
    /// with Java: adds METEOR and SODA_c (F1 of tIoU x METEOR over the best in-order matching).
    #[arg(long, value_name = "JAR")]
    meteor_jar: Option<PathBuf>,
}

impl MeteorArgs {
    fn start(&self) -> Result<Option<Meteor>> {
        self.meteor_jar.as_deref().map(|jar| Meteor::start(jar).context("--meteor-jar")).transpose()
    }
}

/// The SODA_c line of a report, or why there is none.
fn soda_line(soda: Option<&densevid::Soda>) -> String {
    match soda {
        Some(s) => format!("SODA_c (METEOR): precision {:.4}, recall {:.4}, F1 {:.4}", s.precision, s.recall, s.f1),
        None => "METEOR and SODA_c: not computed (they run METEOR 1.5 in Java: give --meteor-jar)".into(),
    }
}

/// `glimpse bench`: each figure measured by this executable in a process of its own.
fn bench(args: &glimpse_bench::BenchArgs, format: Format) -> Result<()> {
    if let Some(spec) = &args.measure {
        return print_out(&format!("{}\n", glimpse_bench::measure(spec, args)?));
    }
    let exe = std::env::current_exe().context("cannot find the glimpse executable to run measurements")?;
    let report = glimpse_bench::run(args, |spec| {
        let mut command = std::process::Command::new(&exe);
        command.args(["bench", "--measure", spec]);
        command
    })?;
    match format {
        Format::Json => print_out(&format!("{}\n", report.json()))?,
        Format::Text => print_out(&report.text())?,
    }
    if report.measured == 0 {
        bail!("no figure could be measured");
    }
    Ok(())
}

/// Sets up the device and says on stderr which one was chosen and why.
fn select_device(choice: DeviceChoice) -> Result<SelectedDevice> {
    let (selected, driver_output) = driver_output::captured(|| device::select(choice));
    let selected = selected.map_err(|e| {
        let said =
            if driver_output.is_empty() { String::new() } else { format!("\nthe driver said:\n{driver_output}") };
        anyhow::anyhow!("{e}; try --device cpu{said}")
    })?;
    match &selected.reason {
        Some(reason) => say!("device: {} ({reason})", selected.info),
        None => say!("device: {}", selected.info),
    }
    Ok(selected)
}

fn rows(tensor: burn::Tensor<2>) -> Result<Vec<Vec<f32>>> {
    let [_, d] = tensor.dims();
    let values = block_on(read::<2, Float, f32>(tensor))?;
    Ok(values.chunks(d).map(<[f32]>::to_vec).collect())
}

fn embed(
    selected: &SelectedDevice,
    dir: Option<&Path>,
    texts: &[String],
    images: &[PathBuf],
    format: Format,
) -> Result<()> {
    let clip = ClipBundle::load(&clip_files(dir)?, &selected.device)?;
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let text_embeds = (!texts.is_empty()).then(|| clip.encode_texts(&text_refs)).transpose()?;
    let image_embeds = (!images.is_empty()).then(|| embed_images(&clip, images)).transpose()?;
    let logits = match (&image_embeds, &text_embeds) {
        (Some(i), Some(t)) => Some(clip.model.logits_per_image(i.clone(), t.clone())),
        _ => None,
    };
    let text_embeds = text_embeds.map(|t| rows(l2_normalize(t))).transpose()?;
    let image_embeds = image_embeds.map(|i| rows(l2_normalize(i))).transpose()?;

    if format == Format::Json {
        let mut out = serde_json::Map::new();
        if let Some(t) = text_embeds {
            out.insert("text_embeds".into(), json!(t));
        }
        if let Some(i) = image_embeds {
            out.insert("image_embeds".into(), json!(i));
        }
        if let Some(l) = logits {
            out.insert("logits_per_image".into(), json!(rows(l)?));
        }
        return print_out(&format!("{}\n", serde_json::Value::Object(out)));
    }
    let preview = |v: &[f32]| {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:+.4}")).collect();
        format!("{}-d [{}, ...]", v.len(), head.join(", "))
    };
    let mut lines = Vec::new();
    for (text, e) in texts.iter().zip(text_embeds.iter().flatten()) {
        lines.push(format!("text  {text:?}: {}", preview(e)));
    }
    for (path, e) in images.iter().zip(image_embeds.iter().flatten()) {
        lines.push(format!("image {}: {}", path.display(), preview(e)));
    }
    if let Some(probabilities) = logits.map(|l| rows(Clip::zero_shot(l))).transpose()? {
        lines.push("\nzero-shot probabilities (softmax over the texts):".into());
        for (path, row) in images.iter().zip(&probabilities) {
            lines.push(format!("  {}", path.display()));
            for (text, p) in texts.iter().zip(row) {
                lines.push(format!("    {:6.2}%  {text}", 100.0 * p));
            }
        }
    }
    print_out(&(lines.join("\n") + "\n"))
}

fn generate_text(
    selected: &SelectedDevice,
    dir: Option<&Path>,
    prompt: &str,
    max_new_tokens: usize,
    decoding: Decoding,
    stop_at_eos: bool,
    format: Format,
) -> Result<()> {
    let lm = Gpt2Bundle::load(&lm_files(dir)?, &selected.device)?;
    let ids = lm.tokenizer.encode(prompt)?;
    let stop_at = if stop_at_eos {
        Some(lm.config.eos_token_id.context("--stop-at-eos: config.json has no eos_token_id")?)
    } else {
        None
    };
    let config = GenerationConfig { max_new_tokens, decoding, stop_at };
    // In text mode the continuation streams: print what each new token adds to the decoded text.
    let mut stream = lm.tokenizer.stream();
    // Generation cannot be stopped from here: a failed write is kept and reported after it.
    let mut write_error = None;
    // The prompt is echoed with the first token, so a request that fails prints nothing.
    let on_token = |id: u32| {
        if format != Format::Text || write_error.is_some() {
            return;
        }
        let mut piece = if stream.ids().is_empty() { prompt.to_string() } else { String::new() };
        piece.push_str(&stream.push(id).unwrap_or_default());
        write_error = print_out(&piece).err();
    };
    let ids = block_on(generate(&lm.model, &ids, &config, on_token, &selected.device))?;
    if let Some(err) = write_error {
        return Err(err);
    }
    match format {
        Format::Json => print_out(&format!("{}\n", json!({ "ids": ids, "text": lm.tokenizer.decode(&ids)? })))?,
        Format::Text if ids.is_empty() => print_out(&format!("{prompt}\n"))?,
        Format::Text => print_out(&format!("{}\n", stream.rest()?))?,
    }
    Ok(())
}

/// The images at `paths` embedded by `clip`, L2-normalised (`[n, d]`): each decoded and
/// preprocessed in turn, so that only CLIP-sized pixels are held (a 16000-pixel PNG decodes to
/// 768 MB).
fn embed_images(clip: &ClipBundle, paths: &[PathBuf]) -> Result<burn::Tensor<2>> {
    let mut embedder = FrameEmbedder::new(clip);
    for path in paths {
        let bytes = read_regular_file(path, MAX_IMAGE_FILE_BYTES)?;
        let image = decode_image(&bytes).with_context(|| path.display().to_string())?;
        embedder.push(&image).with_context(|| path.display().to_string())?;
    }
    Ok(embedder.finish()?.embeddings().clone())
}

/// Refuses image paths that are not readable files before the models load (each is decoded only
/// once they have).
fn check_images(paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        glimpse_media::untrusted::open_regular_file(path)?;
    }
    Ok(())
}

/// Refuses an `--out` that could not be written, before any work is done: a folder, or a file in
/// a folder that does not exist; and one that would replace one of the command's `inputs` or be
/// replace a file inside one (a frame of a folder of frames, a model's file).
fn check_out(out: Option<&Path>, inputs: &[&Path]) -> Result<()> {
    let Some(out) = out.filter(|out| !is_stdout(out)) else { return Ok(()) };
    if out.as_os_str().to_string_lossy().ends_with(std::path::is_separator) {
        bail!("--out {} ends with a path separator; name a file", out.display());
    }
    if out.is_dir() || out.file_name().is_none() {
        bail!("--out {} is a folder; name a file in it", out.display());
    }
    // Where a link points, for a link to a file still to be made.
    let target = glimpse_media::files::output_target(out).with_context(|| format!("--out {}", out.display()))?;
    let folder = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!("--out {}: there is no folder {}; create it first", out.display(), folder.display());
    }
    // A file is written beside its name and renamed onto it: a folder that takes no new file is
    // said now, not once the work is done. A device or a pipe (also behind a link, such as
    // /dev/stderr) is written as it is.
    if !std::fs::metadata(out).is_ok_and(|meta| !meta.is_file()) {
        glimpse_media::files::check_can_write_beside(&target).with_context(|| {
            format!("--out {}: cannot write in {}; choose a folder you can write", out.display(), folder.display())
        })?;
        glimpse_media::files::check_can_replace(&target).with_context(|| {
            format!("--out {}: the file there may not be replaced; make it writable, or name another", out.display())
        })?;
    }
    if let Some(input) = inputs.iter().find(|input| glimpse_media::files::output_overwrites(out, input)) {
        bail!(
            "--out {} would write over the input {} or a file in it; write the result elsewhere",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// `-` and `/dev/stdout` name the standard output, which may be a pipe or a file appended to
/// (`>> log`): written as printed output, never replaced.
fn is_stdout(out: &Path) -> bool {
    out == Path::new("-") || out == Path::new("/dev/stdout")
}

/// The CLIP and GPT-2 a command uses.
#[derive(clap::Args)]
struct ModelArgs {
    /// CLIP model directory (Hugging Face layout) or hub repository id (owner/name[@revision]) [default: the embedded world CLIP].
    #[arg(long, value_name = "DIR|ID")]
    clip: Option<PathBuf>,
    /// GPT-2 model directory (Hugging Face layout) or hub repository id (owner/name[@revision]) [default: the embedded world GPT-2].
    #[arg(long, value_name = "DIR|ID")]
    lm: Option<PathBuf>,
}

impl ModelArgs {
    /// The models' folders or hub ids as given.
    fn paths(&self) -> impl Iterator<Item = &Path> {
        self.clip.iter().chain(&self.lm).map(PathBuf::as_path)
    }

    fn load(&self, selected: &SelectedDevice) -> Result<(ClipBundle, Gpt2Bundle)> {
        let clip = ClipBundle::load(&clip_files(self.clip.as_deref())?, &selected.device)?;
        let lm = Gpt2Bundle::load(&lm_files(self.lm.as_deref())?, &selected.device)?;
        Ok((clip, lm))
    }
}

/// A CLIP from a folder or the hub, or the embedded world CLIP.
fn clip_files(arg: Option<&Path>) -> Result<ModelFiles> {
    models::files(arg, glimpse_hub::embedded::world_clip)
}

/// A GPT-2 from a folder or the hub, or the embedded world GPT-2.
fn lm_files(arg: Option<&Path>) -> Result<ModelFiles> {
    models::files(arg, glimpse_hub::embedded::world_lm)
}

/// A small input file (a projector, a state file): a regular file of at most 1 GiB.
fn read_file(path: &Path) -> Result<Vec<u8>> {
    Ok(read_regular_file(path, 1 << 30)?)
}

/// A progress bar on stderr (drawn only on a terminal) over `total` units of work.
fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {wide_msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn on_step(bar: &ProgressBar) -> impl FnMut(&Step) + '_ {
    |step: &Step| {
        bar.set_position(step.step as u64 + 1);
        bar.set_message(format!(
            "loss {:.3} | {}",
            step.clip_loss + step.fluency_loss + step.mask_loss,
            step.captions.join(" | ")
        ));
    }
}

/// Writes `text` to `out` through a temporary file renamed into place (a failed run never leaves
/// a half-written file), or prints it.
fn emit(text: &str, out: Option<&Path>) -> Result<()> {
    let Some(out) = out.filter(|out| !is_stdout(out)) else {
        return print_out(text);
    };
    glimpse_media::write_output(out, text.as_bytes()).with_context(|| {
        let target = glimpse_media::files::output_target(out).unwrap_or_else(|_| out.to_path_buf());
        format!("cannot write {}", target.display())
    })?;
    say!("wrote {}", out.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn caption_images(
    selected: &SelectedDevice,
    models: &ModelArgs,
    paths: &[PathBuf],
    method: ImageMethod,
    config: &GuidanceConfig,
    format: Format,
    out: Option<&Path>,
) -> Result<()> {
    let (clip, lm) = models.load(selected)?;
    // What the models cannot run is refused before the images are encoded for nothing.
    if matches!(method, ImageMethod::Guided) {
        guided::check_fits(&lm, config, &flag)?;
    }
    let targets = embed_images(&clip, paths)?;
    let captions = match method {
        ImageMethod::Guided => {
            let bar = progress_bar(config.max_tokens * config.steps_per_token, "captioning");
            let outcome = block_on(guided::caption(&clip, &lm, Targets::Fixed(targets), config, on_step(&bar)))?;
            bar.finish_and_clear();
            outcome.captions
        }
        ImageMethod::Magic => {
            let magic =
                MagicConfig { prompt: config.prompt.clone(), max_tokens: config.max_tokens, ..MagicConfig::default() };
            block_on(magic_captions(&clip, &lm, targets, &magic))?
        }
    };
    let text = match format {
        Format::Json => {
            let captions: Vec<_> = paths
                .iter()
                .zip(&captions)
                .map(|(p, c)| json!({ "image": p.display().to_string(), "caption": c.text, "score": c.score }))
                .collect();
            format!("{}\n", json!({ "captions": captions }))
        }
        Format::Text => paths
            .iter()
            .zip(&captions)
            .map(|(p, c)| format!("{}: {} (score {:.3})\n", p.display(), c.text, c.score))
            .collect(),
    };
    emit(&text, out)
}

/// Every frame of `source` (read from `path`) embedded as it is decoded (only the embeddings are
/// kept), with a spinner; and the video's duration. A frame the model cannot take is named by the
/// video and its time (the decoders' own errors name the file already); damage the reading met
/// is said on stderr.
fn read_video(clip: &ClipBundle, path: &Path, source: &VideoSource) -> Result<(EmbeddedVideo, f64)> {
    let reading = ProgressBar::new_spinner().with_prefix("reading frames");
    reading.set_style(ProgressStyle::with_template("{prefix} {pos} {elapsed_precise}").expect("valid template"));
    let mut frames = 0;
    let embedded = embed_source(clip, source, || {
        frames += 1;
        reading.inc(1)
    })
    .map_err(|e| match e {
        // A frame the model cannot take; the decoders' own errors name the file already, and a
        // failure of the device is no frame's.
        AlignError::Model(_) | AlignError::Input(_) if e.is_callers() => {
            let at = (frames as f64 - 0.5) / source.fps();
            anyhow::Error::from(e).context(format!("{}: the frame at {at:.2} s", path.display()))
        }
        e => anyhow::Error::from(e),
    })?;
    reading.finish_and_clear();
    let (embedded, read) = embedded;
    if let Some(damage) = read.damage {
        say!("warning: {}: {damage}", path.display());
    }
    Ok((embedded, read.seconds))
}

/// `glimpse find`.
#[allow(clippy::too_many_arguments)]
fn find(
    selected: &SelectedDevice,
    clip: Option<&Path>,
    path: &Path,
    source: &VideoSource,
    queries: &[String],
    config: &FindConfig,
    format: Format,
    out: Option<&Path>,
) -> Result<()> {
    let clip = ClipBundle::load(&clip_files(clip)?, &selected.device)?;
    let (frames, duration) = read_video(&clip, path, source)?;
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    let found = block_on(find_moments(&clip, &frames, duration, &refs, config))?;
    for (query, _) in queries.iter().zip(&found).filter(|(_, moments)| moments.is_empty()) {
        say!(
            "{}: no moment for {query:?}: every frame is blank, or no stretch of --min-seconds shows something",
            path.display()
        );
    }
    let text = match format {
        Format::Json => {
            let queries: Vec<_> =
                queries.iter().zip(&found).map(|(q, m)| serde_json::json!({ "query": q, "moments": m })).collect();
            let video = path.display().to_string();
            format!("{}\n", serde_json::json!({ "video": video, "duration": duration, "queries": queries }))
        }
        Format::Text => queries
            .iter()
            .zip(&found)
            .map(|(query, moments)| {
                let lines: String = moments
                    .iter()
                    .map(|m| format!("  {:7.2}s - {:7.2}s  (score {:.3})\n", m.start, m.end, m.score))
                    .collect();
                format!("{query}\n{lines}")
            })
            .collect(),
    };
    emit(&text, out)
}

#[allow(clippy::too_many_arguments)]
fn caption_video(
    selected: &SelectedDevice,
    models: &ModelArgs,
    path: &Path,
    source: &VideoSource,
    config: &ZeroTaConfig,
    format: VideoFormat,
    out: Option<&Path>,
) -> Result<()> {
    let (clip, lm) = models.load(selected)?;
    // What the models cannot run is refused before the video is read for nothing.
    guided::check_fits(&lm, &config.guidance, &flag)?;
    let (frames, duration) = read_video(&clip, path, source)?;
    let count = frames.frames();
    let plural = if count == 1 { "" } else { "s" };
    say!("{}: {count} frame{plural} at {} fps ({duration:.1} s)", path.display(), source.fps());
    if let Some(asked) = config.events.filter(|&asked| asked > count) {
        say!("{}: {asked} events asked of {count} frame{plural}: at most one per frame", path.display());
    }
    if format == VideoFormat::Chapters {
        check_chapters_fit(duration)
            .map_err(|why| anyhow::anyhow!("{}: --format chapters: {why}; use another format", path.display()))?;
    }
    let bar = progress_bar(config.guidance.max_tokens * config.guidance.steps_per_token, "events");
    let events = block_on(dense_caption(&clip, &lm, &frames, duration, config, on_step(&bar)))?;
    bar.finish_and_clear();
    if events.is_empty() {
        say!("{}: no events: every scene of the video is blank (--keep-blank captions them)", path.display());
    }
    let cues: Vec<Cue> = events.iter().map(Event::cue).collect();
    let text = match format {
        VideoFormat::Srt => to_srt(&cues),
        VideoFormat::Vtt => to_vtt(&cues),
        VideoFormat::Chapters => to_chapters(&cues, duration).map_err(|why| {
            anyhow::anyhow!(
                "{}: --format chapters: {why}; caption more events (--events) or use another format",
                path.display()
            )
        })?,
        VideoFormat::Txt => events.iter().map(|e| format!("{}\n", e.caption)).collect(),
        VideoFormat::Json => captions_json(&path.display().to_string(), duration, &events),
        VideoFormat::Text => events
            .iter()
            .map(|e| format!("{:7.2}s - {:7.2}s  {}  (score {:.3})\n", e.start, e.end, e.caption, e.score))
            .collect(),
    };
    emit(&text, out)
}
