//! glimpse's benchmark (`glimpse bench`): speed and memory at real model sizes (GPT-2 small, CLIP
//! ViT-B/32, random weights), side by side with the PyTorch reference (`bench/reference.py`) when
//! it can run. Every workload calls the library code it measures.
//!
//! Every figure is measured in its own child process ([`measure`], run by [`run`] through the
//! command its caller gives), so each has its own peak memory and a crash loses one figure, not
//! the run.

mod counting;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::ValueEnum;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use counting::{Counter, per_unit};
use futures_lite::future::block_on;
use glimpse_align::guided::{self, GuidanceConfig, Targets};
use glimpse_align::moment::pool_with_contrast_by;
use glimpse_align::zerota::{ZeroTaConfig, dense_caption, embed_frames};
use glimpse_kernels::{
    Activation, Q8_BLOCK, bias_activation, bias_activation_fallback, bias_activation_uses_kernel, layer_norm,
    layer_norm_fallback, layer_norm_uses_kernel, linear, linear_fallback, linear_uses_cpu_kernel, linear_uses_kernel,
    matmul_t, matmul_t_fallback, matmul_t_uses_kernel, q8_matmul, q8_matmul_fallback, q8_matmul_uses_kernel, q8_pack,
};
use glimpse_media::rng::Rng;
use glimpse_media::{ClipTokenizer, Gpt2Tokenizer, ImagePreprocess, write_atomically};
use glimpse_models::device::{self, DeviceChoice};
use glimpse_models::generation::{Decoding, GenerationConfig, generate};
use glimpse_models::tensor::{ids_tensor, read};
use glimpse_models::weights::WeightFile;
use glimpse_models::{Clip, ClipBundle, ClipConfig, Gpt2, Gpt2Bundle, Gpt2Config, KvCache, WeightFormat, l2_normalize};
use glimpse_train::random::{
    clip_tokenizer_for, clip_with_made_up_specials, gpt2_tokenizer_for, with_made_up_specials,
};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Backend to measure; repeat for several [default: cpu, and wgpu when it finds an adapter].
    /// (The global --device does not apply here.)
    #[arg(long = "backend", value_name = "BACKEND", value_parser = backend())]
    backends: Vec<DeviceChoice>,
    /// Figure to measure; repeat for several [default: all].
    #[arg(long = "metric", value_enum, value_name = "METRIC")]
    metrics: Vec<Metric>,
    /// Most timed runs per figure, after one warm-up run; the median is reported. Runs stop early
    /// once a figure has spent --budget seconds (at least one run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seconds of timed runs per figure before stopping early.
    #[arg(long, default_value_t = 60.0)]
    budget: f64,
    /// The PyTorch reference script, run with --python; `none` to skip it.
    #[arg(long, default_value = "bench/reference.py", value_name = "SCRIPT|none")]
    reference: String,
    /// Python interpreter with torch and transformers installed.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where the PyTorch reference runs (the script's --device); `cuda` needs a GPU that torch sees.
    #[arg(long, value_enum, default_value_t = ReferenceDevice::Cpu, value_name = "DEVICE")]
    reference_device: ReferenceDevice,
    /// Also write the figures as JSON to FILE (atomically).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Prepend this run, with the machine's description, to a Markdown results file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Measure one figure in this process and print it as one JSON line (used by the runner).
    #[arg(long, hide = true, value_name = "BACKEND:METRIC")]
    pub measure: Option<String>,
    /// The checkpoint a weight-format figure loads (written by the runner; used with --measure).
    #[arg(long, hide = true, value_name = "FILE")]
    weights: Option<PathBuf>,
}

/// The backends a figure can be measured on: `cpu` and `wgpu` (`auto` is not a backend).
const BACKENDS: [DeviceChoice; 2] = [DeviceChoice::Cpu, DeviceChoice::Wgpu];

fn backend() -> impl TypedValueParser<Value = DeviceChoice> {
    PossibleValuesParser::new(BACKENDS.map(DeviceChoice::name)).try_map(|name| name.parse::<DeviceChoice>())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum, Serialize, Deserialize)]
#[clap(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
enum Metric {
    /// Greedy decoding with the KV cache, batch 1: 64 new tokens after an 8-token prompt.
    Gpt2DecodeTokS,
    /// As gpt2_decode_tok_s, the model loaded from an f16 checkpoint (computing in f32).
    Gpt2DecodeF16TokS,
    /// As gpt2_decode_tok_s, the model loaded from a q8 checkpoint (weights kept 8-bit).
    Gpt2DecodeQ8TokS,
    /// Image tower, batch 8 at 224x224.
    ClipImageImgS,
    /// Text tower, batch 64 x 16 tokens (the candidate-scoring shape).
    ClipTextTxtS,
    /// One CLIP-guided prefix step (mean over a 12-token caption, one step per token).
    PrefixStepMs,
    /// Dense captioning of a 60-second clip at 2 fps, K = 3 events.
    ZerotaVideoS,
    /// wgpu only: the WGSL decode-attention kernel against its fallback (the 12 attention calls of
    /// one GPT-2 small decoding step, batch 1, 72 cached positions, each writing its cache row).
    DecodeAttentionMs,
    /// wgpu only: the WGSL attention kernel over whole sequences against its fallback (Burn's
    /// matmuls, mask and softmax, and the copy that merges the heads): the 12 causal attentions of
    /// the CLIP text tower at the candidate-scoring shape (64 texts x 16 tokens, 8 heads of 64).
    AttentionMs,
    /// wgpu only: the WGSL attention kernel with its two backward kernels against the fallback
    /// under autodiff: GPT-2 small's 12 attentions of a guided step (heads of the fused projection
    /// of 12 positions after a 5-position cache, both tracked), forward and both gradients.
    AttentionBackwardMs,
    /// wgpu only: the WGSL masked-pooling kernels against their fallback (ZeroTA's inside/outside
    /// contrast forward and backward: 3 masks over 120 frames of 512-d embeddings).
    MaskedPoolMs,
    /// wgpu only: the WGSL 8-bit matrix-vector kernel against its fallback (which expands each
    /// matrix): the four products of one GPT-2 small layer at a decoding step, q8 weights.
    Q8MatvecMs,
    /// wgpu only: the WGSL dense-layer kernel against its fallback (Burn's matmul, bias add and
    /// activation): the four f32 products of one GPT-2 small layer at a decoding step, with their
    /// biases and the MLP's GELU.
    LinearMs,
    /// wgpu only: the WGSL kernel for a product with a weight stored as rows against its fallback:
    /// GPT-2 small's tied LM head at a decoding step (50257 x 768 in its two shards, 1 row).
    MatmulTMs,
    /// wgpu only: the WGSL LayerNorm kernel against Burn's LayerNorm: the 25 LayerNorms of one
    /// GPT-2 small decoding step (`[1, 1, 768]` each).
    LayerNormMs,
    /// wgpu only: the WGSL bias-plus-activation kernel against its fallback: the 12 MLP
    /// activations (GELU, tanh approximation) of one GPT-2 small decoding step (`[1, 1, 3072]`).
    BiasActivationMs,
    /// CPU only: `linear`'s product with its backward against its fallback (Burn's matmul under
    /// autodiff): the four products of one GPT-2 small layer over 60 rows (a guided step's
    /// sequences), forward and the input's gradient, constant weights.
    LinearBackwardMs,
}

impl Metric {
    fn unit(self) -> &'static str {
        match self {
            Self::Gpt2DecodeTokS | Self::Gpt2DecodeF16TokS | Self::Gpt2DecodeQ8TokS => "tok/s",
            Self::ClipImageImgS => "img/s",
            Self::ClipTextTxtS => "txt/s",
            Self::ZerotaVideoS => "s",
            // PrefixStepMs and every kernel figure.
            _ => "ms",
        }
    }

    /// Kernel figures compare a kernel of glimpse's with its portable fallback, measured in the
    /// same process on the one backend the kernel runs on (the WGSL kernels on wgpu; on the CPU
    /// `linear`'s product, the other CPU kernels only through the model figures), and have no
    /// PyTorch counterpart.
    fn kernel_backend(self) -> Option<DeviceChoice> {
        match self {
            Self::DecodeAttentionMs
            | Self::AttentionMs
            | Self::AttentionBackwardMs
            | Self::MaskedPoolMs
            | Self::Q8MatvecMs
            | Self::LinearMs
            | Self::MatmulTMs
            | Self::LayerNormMs
            | Self::BiasActivationMs => Some(DeviceChoice::Wgpu),
            Self::LinearBackwardMs => Some(DeviceChoice::Cpu),
            _ => None,
        }
    }

    fn is_kernel(self) -> bool {
        self.kernel_backend().is_some()
    }

    /// Whether this figure is measured on `backend`: a kernel figure on its kernel's only.
    fn runs_on(self, backend: DeviceChoice) -> bool {
        self.kernel_backend().is_none_or(|only| only == backend)
    }

    /// The checkpoint format a weight-format figure loads; these are compared with the f32 figure
    /// of the same run (the PyTorch reference has no counterpart).
    fn weight_format(self) -> Option<WeightFormat> {
        match self {
            Self::Gpt2DecodeF16TokS => Some(WeightFormat::F16),
            Self::Gpt2DecodeQ8TokS => Some(WeightFormat::Q8),
            _ => None,
        }
    }

    /// Whether the PyTorch reference measures this figure too.
    fn has_reference(self) -> bool {
        !self.is_kernel() && self.weight_format().is_none()
    }

    /// Throughputs are better high, times low.
    fn higher_is_better(self) -> bool {
        matches!(
            self,
            Self::Gpt2DecodeTokS
                | Self::Gpt2DecodeF16TokS
                | Self::Gpt2DecodeQ8TokS
                | Self::ClipImageImgS
                | Self::ClipTextTxtS
        )
    }
}

/// Where `bench/reference.py` runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum ReferenceDevice {
    Cpu,
    Cuda,
}

impl ReferenceDevice {
    /// The backend the reference's figures name: `pytorch-cpu` or `pytorch-cuda`.
    fn backend(self) -> String {
        format!("pytorch-{self}")
    }
}

/// Names as on the command line (`cpu`, `clip_text_txt_s`, ...).
macro_rules! display_as_value {
    ($($kind:ty),*) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let value = self.to_possible_value().expect("no variant is skipped");
                f.write_str(value.get_name())
            }
        }
    )*};
}
display_as_value!(Metric, ReferenceDevice);

/// One figure as the child processes (glimpse's and the reference's) print it.
#[derive(Serialize, Deserialize, Clone)]
struct Figure {
    metric: Metric,
    /// `cpu` or `wgpu` for glimpse, `pytorch-cpu` or `pytorch-cuda` for the reference.
    backend: String,
    /// The adapter or library that ran it.
    device: String,
    value: f64,
    unit: String,
    /// Seconds of each timed run.
    runs: Vec<f64>,
    /// Peak resident memory of the measuring process (host memory; a discrete GPU's own memory
    /// is not included), except for `pytorch-cuda`: PyTorch's peak GPU allocation.
    peak_rss_mib: f64,
    #[serde(default)]
    detail: serde_json::Value,
}

/// A finished run: the machine, the figures and what failed.
pub struct Report {
    /// Figures measured; with none, the report still says what failed.
    pub measured: usize,
    machine: String,
    /// The Markdown tables.
    table: String,
    /// The PyTorch reference was asked for and could not run (the reason is on stderr).
    reference_missing: bool,
    json: serde_json::Value,
}

impl Report {
    /// The machine and the tables, as printed in a terminal.
    pub fn text(&self) -> String {
        let missing = if self.reference_missing { "\n(no PyTorch reference: see the message above)\n" } else { "" };
        format!("{}\n\n{}\n{missing}", self.machine, self.table)
    }

    /// `{"machine", "figures", "failures"}`.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.json).expect("figures serialise")
    }
}

/// Measures every figure asked for, each in a process of its own that `measuring(spec)` makes
/// (a command that runs [`measure`] with `spec` and prints its line); writes `--json` and
/// `--record` when given, also when every figure failed.
pub fn run(args: &BenchArgs, measuring: impl Fn(&str) -> Command) -> Result<Report> {
    if args.runs == 0 || !(args.budget.is_finite() && args.budget > 0.0) {
        bail!("--runs must be at least 1 and --budget finite and positive");
    }
    let metrics = if args.metrics.is_empty() { Metric::value_variants().to_vec() } else { args.metrics.clone() };
    let backends = match args.backends.is_empty() {
        true => {
            let mut found = vec![DeviceChoice::Cpu];
            match device::wgpu() {
                Ok(_) => found.push(DeviceChoice::Wgpu),
                Err(e) => eprintln!("wgpu skipped: no adapter ({e})"),
            }
            found
        }
        false => args.backends.clone(),
    };
    let reference = Reference::find(args);
    let model_metrics = metrics.iter().filter(|m| m.has_reference()).count();
    let checkpoints = Checkpoints::write(&metrics)?;
    let jobs = metrics.iter().map(|&m| backends.iter().filter(|&&b| m.runs_on(b)).count()).sum::<usize>()
        + if reference.is_some() { model_metrics } else { 0 };
    let progress = ProgressBar::new(jobs as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}").expect("valid template"),
    );
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    for &metric in &metrics {
        for &backend in backends.iter().filter(|&&b| metric.runs_on(b)) {
            let label = format!("{backend} {metric}");
            progress.set_message(label.clone());
            let mut child = measuring(&format!("{backend}:{metric}"));
            child.args(["--runs", &args.runs.to_string(), "--budget", &args.budget.to_string()]);
            if let Some(path) = metric.weight_format().map(|format| checkpoints.path(format)) {
                child.arg("--weights").arg(path);
            }
            collect(child, &label, &progress, &mut figures, &mut failures);
        }
        if let Some(reference) = reference.as_ref().filter(|_| metric.has_reference()) {
            let label = format!("{} {metric}", args.reference_device.backend());
            progress.set_message(label.clone());
            collect(reference.command(metric, args), &label, &progress, &mut figures, &mut failures);
        }
    }
    progress.finish_and_clear();

    let gpu = match backends.contains(&DeviceChoice::Wgpu) {
        true => device::wgpu().map_or_else(|e| format!("none ({e})"), |s| s.info.to_string()),
        false => "not measured".to_string(),
    };
    let machine = machine_description(&gpu, reference.as_ref().map(|r| r.versions.as_str()));
    let tables = [
        model_table(&figures, &metrics, &backends, args.reference_device),
        format_table(&figures, &backends),
        checkpoints.parity_table(),
        kernel_table(&figures),
        count_table(&figures),
    ];
    drop(checkpoints);
    let table = tables.into_iter().filter(|t| !t.is_empty()).collect::<Vec<_>>().join("\n\n");
    for failure in &failures {
        eprintln!("failed: {failure}");
    }
    let reference_missing = reference.is_none() && args.reference != "none";
    let report = Report {
        measured: figures.len(),
        json: json!({ "machine": machine, "figures": figures, "failures": failures }),
        machine,
        table,
        reference_missing,
    };
    if let Some(path) = &args.json {
        write_atomically(path, report.json().as_bytes())?;
    }
    if let Some(path) = &args.record {
        record(path, &report.machine, &report.table)?;
        eprintln!("recorded in {}", path.display());
    }
    Ok(report)
}

/// Runs one measuring process and keeps its figure, or the reason it has none.
fn collect(
    mut child: Command,
    label: &str,
    progress: &ProgressBar,
    figures: &mut Vec<Figure>,
    failures: &mut Vec<String>,
) {
    let started = Instant::now();
    let outcome = child.output().map_err(|e| e.to_string()).and_then(|out| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        match stdout.lines().rev().find_map(|line| serde_json::from_str::<Figure>(line).ok()) {
            Some(figure) if out.status.success() => Ok(figure),
            _ => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                Err(format!("{} ({})", out.status, tail.into_iter().rev().collect::<Vec<_>>().join(" / ")))
            }
        }
    });
    match outcome {
        Ok(figure) => {
            // Printed even where the bar is hidden (output not a terminal): long runs show progress.
            progress.suspend(|| {
                eprintln!(
                    "{label:<32} {:>10.2} {:<6} peak {:>6.0} MiB  ({:.0} s)",
                    figure.value,
                    figure.unit,
                    figure.peak_rss_mib,
                    started.elapsed().as_secs_f64()
                )
            });
            figures.push(figure);
        }
        Err(why) => {
            progress.suspend(|| eprintln!("{label:<32} failed: {why}"));
            failures.push(format!("{label}: {why}"));
        }
    }
    progress.inc(1);
}

/// The PyTorch reference, when its script exists and its interpreter has torch and transformers.
struct Reference {
    python: String,
    script: PathBuf,
    /// `torch X, transformers Y, N threads`.
    versions: String,
}

impl Reference {
    fn find(args: &BenchArgs) -> Option<Self> {
        if args.reference == "none" {
            return None;
        }
        let script = PathBuf::from(&args.reference);
        if !script.is_file() {
            eprintln!(
                "PyTorch reference skipped: {} not found (run from the repository root, or pass --reference)",
                script.display()
            );
            return None;
        }
        let check = Command::new(&args.python)
            .arg(&script)
            .args(["--check", "--device", &args.reference_device.to_string()])
            .output();
        match check {
            Ok(out) if out.status.success() => {
                let versions = String::from_utf8_lossy(&out.stdout).trim().to_string();
                Some(Self { python: args.python.clone(), script, versions })
            }
            Ok(out) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                eprintln!(
                    "PyTorch reference skipped: {} (install with `pip install torch transformers`)",
                    stderr.lines().last().unwrap_or("the check failed")
                );
                None
            }
            Err(e) => {
                eprintln!("PyTorch reference skipped: cannot run {}: {e}", args.python);
                None
            }
        }
    }

    fn command(&self, metric: Metric, args: &BenchArgs) -> Command {
        let mut command = Command::new(&self.python);
        command.arg(&self.script).args(["--metric", &metric.to_string()]);
        command.args(["--runs", &args.runs.to_string(), "--budget", &args.budget.to_string()]);
        command.args(["--device", &args.reference_device.to_string()]);
        command
    }
}

/// The side-by-side table, in Markdown (readable as it is in a terminal); empty without figures.
fn model_table(
    figures: &[Figure],
    metrics: &[Metric],
    backends: &[DeviceChoice],
    reference_device: ReferenceDevice,
) -> String {
    let find = |metric: Metric, backend: &str| figures.iter().find(|f| f.metric == metric && f.backend == backend);
    let pytorch = format!("PyTorch {}", reference_device.to_string().to_uppercase());
    let mut lines = vec![
        format!("| metric | backend | glimpse | {pytorch} | glimpse / PyTorch | peak MiB glimpse | peak MiB PyTorch |"),
        "|---|---|---:|---:|---:|---:|---:|".to_string(),
    ];
    for &metric in metrics.iter().filter(|m| m.has_reference()) {
        let reference = find(metric, &reference_device.backend());
        let better = if metric.higher_is_better() { "higher is better" } else { "lower is better" };
        for &backend in backends {
            let Some(ours) = find(metric, &backend.to_string()) else { continue };
            let (theirs, ratio, their_mib) = match reference {
                Some(r) => (
                    format!("{:.2} {}", r.value, r.unit),
                    format!("{:.2}x ({better})", ours.value / r.value),
                    format!("{:.0}", r.peak_rss_mib),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            lines.push(format!(
                "| {metric} | {backend} | {:.2} {} | {theirs} | {ratio} | {:.0} | {their_mib} |",
                ours.value, ours.unit, ours.peak_rss_mib,
            ));
        }
    }
    if lines.len() == 2 { String::new() } else { lines.join("\n") }
}

/// GPT-2 small checkpoints in f16 and q8 (random weights) for the weight-format figures, in a
/// temporary folder removed when dropped; each child process loads its file as a user's would.
/// Writing them also measures each format against f32 at real size ([`Parity`]).
struct Checkpoints {
    dir: Option<PathBuf>,
    parity: Vec<Parity>,
}

/// One format against f32 at real size, random weights, on the CPU backend.
struct Parity {
    format: WeightFormat,
    /// GPT-2 small: cosine of the next-token logits after a 16-token prompt.
    logits_cosine: f64,
    /// GPT-2 small: greedy tokens (of 16) equal to f32's, up to the first difference.
    greedy_agreeing: usize,
    /// CLIP ViT-B/32: smallest cosine over 4 image and 4 text embeddings.
    clip_cosine: f64,
}

const PARITY_TOKENS: usize = 16;

impl Checkpoints {
    fn write(metrics: &[Metric]) -> Result<Self> {
        let formats: Vec<WeightFormat> = metrics.iter().filter_map(|m| m.weight_format()).collect();
        if formats.is_empty() {
            return Ok(Self { dir: None, parity: Vec::new() });
        }
        let dir = std::env::temp_dir().join(format!("glimpse-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut checkpoints = Self { dir: Some(dir), parity: Vec::new() };
        let names: Vec<&str> = formats.iter().map(|format| format.name()).collect();
        eprintln!("writing GPT-2 small and CLIP ViT-B/32 in {} and comparing them with f32", names.join(", "));
        let device = device::cpu().device;
        let (gpt2, clip) = (Gpt2Config::gpt2_small(), ClipConfig::vit_b_32());
        let (lm, vision) = (gpt2.init(&device), clip.init(&device));
        let prompt = random_ids(&mut Rng::new(7), PARITY_TOKENS, 0, gpt2.vocab_size);
        let texts: Vec<Vec<u32>> =
            (0..4).map(|i| random_ids(&mut Rng::new(11 + i), 12, 0, clip.text_config.vocab_size)).collect();
        let pixels = Tensor::<4>::random([4, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
        let lm_outputs = |model: &Gpt2| -> Result<(Vec<f32>, Vec<u32>)> {
            let hidden = model.forward_ids(ids_tensor(&prompt, &device), &mut KvCache::new());
            let [_, t, d] = hidden.dims();
            let logits = block_on(read::<3, Float, f32>(model.logits(hidden.narrow(1, t - 1, 1).reshape([1, 1, d]))))?;
            let generation =
                GenerationConfig { max_new_tokens: PARITY_TOKENS, decoding: Decoding::Greedy, stop_at: None };
            Ok((logits, block_on(generate(model, &prompt, &generation, |_| {}, &device))?))
        };
        let clip_outputs = |model: &Clip| -> Result<Vec<f32>> {
            let images = block_on(read::<2, Float, f32>(model.encode_image(pixels.clone())?))?;
            Ok([images, block_on(read::<2, Float, f32>(model.encode_text(&texts, &device)?))?].concat())
        };
        let (f32_logits, f32_tokens) = lm_outputs(&lm)?;
        let f32_embeddings = clip_outputs(&vision)?;
        for format in formats {
            let bytes = block_on(lm.to_safetensors_as(format))?;
            let (logits, tokens) = lm_outputs(&Gpt2::load(&gpt2, &bytes, &device)?)?;
            write_atomically(&checkpoints.path(format), &bytes)?;
            let embeddings = clip_outputs(&Clip::load(&clip, &block_on(vision.to_safetensors_as(format))?, &device)?)?;
            checkpoints.parity.push(Parity {
                format,
                logits_cosine: min_cosine(&f32_logits, &logits, gpt2.vocab_size),
                greedy_agreeing: f32_tokens.iter().zip(&tokens).take_while(|(a, b)| a == b).count(),
                clip_cosine: min_cosine(&f32_embeddings, &embeddings, clip.projection_dim),
            });
        }
        Ok(checkpoints)
    }

    fn path(&self, format: WeightFormat) -> PathBuf {
        self.dir.as_ref().expect("checkpoints were written").join(format!("gpt2-small-{}.safetensors", format.name()))
    }

    /// The parity of each format, in Markdown; empty when none was measured.
    fn parity_table(&self) -> String {
        if self.parity.is_empty() {
            return String::new();
        }
        let mut lines = vec![
            format!(
                "| weights (real size, random, CPU) | GPT-2 small logits cosine | greedy tokens equal to f32 (of {PARITY_TOKENS}) | CLIP B/32 embedding cosine (min of 8) |"
            ),
            "|---|---:|---:|---:|".to_string(),
        ];
        for p in &self.parity {
            lines.push(format!(
                "| {} | {:.5} | {} | {:.5} |",
                p.format.name(),
                p.logits_cosine,
                p.greedy_agreeing,
                p.clip_cosine
            ));
        }
        lines.join("\n")
    }
}

/// The smallest cosine between matching `dim`-long rows of `a` and `b`.
fn min_cosine(a: &[f32], b: &[f32], dim: usize) -> f64 {
    a.chunks(dim)
        .zip(b.chunks(dim))
        .map(|(x, y)| {
            let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum();
            let norm = |v: &[f32]| v.iter().map(|p| f64::from(*p).powi(2)).sum::<f64>().sqrt();
            dot / (norm(x) * norm(y))
        })
        .fold(1.0, f64::min)
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Each weight-format figure beside the f32 figure of the same backend in the same run; empty
/// without them.
fn format_table(figures: &[Figure], backends: &[DeviceChoice]) -> String {
    let mut lines = vec![
        "| metric | backend | weights | glimpse | / f32 | peak MiB | resident after decoding MiB |".to_string(),
        "|---|---|---|---:|---:|---:|---:|".to_string(),
    ];
    for backend in backends.iter().map(DeviceChoice::to_string) {
        let find = |metric: Metric| figures.iter().find(|f| f.metric == metric && f.backend == backend);
        let Some(f32_figure) = find(Metric::Gpt2DecodeTokS) else { continue };
        let formats: Vec<(&str, &Figure)> = [Metric::Gpt2DecodeF16TokS, Metric::Gpt2DecodeQ8TokS]
            .into_iter()
            .filter_map(|metric| Some((metric.weight_format()?.name(), find(metric)?)))
            .collect();
        if formats.is_empty() {
            continue;
        }
        for (weights, row) in [("f32", f32_figure)].into_iter().chain(formats) {
            lines.push(format!(
                "| {} | {backend} | {weights} | {:.2} {} | {:.2}x | {:.0} | {:.0} |",
                row.metric,
                row.value,
                row.unit,
                row.value / f32_figure.value,
                row.peak_rss_mib,
                row.detail["rss_after_decoding_mib"].as_f64().unwrap_or(f64::NAN),
            ));
        }
    }
    if lines.len() == 2 { String::new() } else { lines.join("\n") }
}

/// Kernel against fallback, both measured on the kernel's backend in the same process; empty
/// without figures.
fn kernel_table(figures: &[Figure]) -> String {
    let mut lines = vec![
        "| kernel | backend | shape | glimpse's kernel | portable fallback | speed-up |".to_string(),
        "|---|---|---|---:|---:|---:|".to_string(),
    ];
    for figure in figures.iter().filter(|f| f.metric.is_kernel()) {
        let fallback = figure.detail["fallback_ms"].as_f64().unwrap_or(f64::NAN);
        lines.push(format!(
            "| {} | {} | {} | {:.3} ms | {fallback:.3} ms | {:.2}x |",
            figure.metric,
            figure.backend,
            figure.detail["shape"].as_str().unwrap_or("?"),
            figure.value,
            fallback / figure.value
        ));
    }
    if lines.len() == 2 { String::new() } else { lines.join("\n") }
}

/// Kernel launches and readbacks per unit of each figure that counted them ([`counting`]).
fn count_table(figures: &[Figure]) -> String {
    const KERNELS_SHOWN: usize = 6;
    let mut lines = vec![
        "| metric | backend | per | kernel launches | readbacks | most launched kernels |".to_string(),
        "|---|---|---|---:|---:|---|".to_string(),
    ];
    for figure in figures {
        let counts = &figure.detail["counts"];
        let Some(per) = counts["per"].as_str() else { continue };
        let kernels = counts["kernels"].as_array().map(Vec::as_slice).unwrap_or_default();
        let shown: Vec<String> =
            kernels.iter().take(KERNELS_SHOWN).map(|k| format!("{} {}", k[0].as_str().unwrap_or("?"), k[1])).collect();
        let launches = match figure.backend.as_str() {
            "cpu" => "- (no kernels)".to_string(),
            _ => counts["launches"].to_string(),
        };
        lines.push(format!(
            "| {} | {} | {per} | {launches} | {} | {} |",
            figure.metric,
            figure.backend,
            counts["readbacks"],
            shown.join(", ")
        ));
    }
    if lines.len() == 2 { String::new() } else { lines.join("\n") }
}

/// CPU, cores, memory, OS, GPU adapter, reference library versions, glimpse version.
fn machine_description(gpu: &str, reference: Option<&str>) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once([':', '=']))
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    let cpu = field(&read("/proc/cpuinfo"), "model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = field(&read("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "?".to_string(), |kib| format!("{:.0} GiB", kib / 1024.0 / 1024.0));
    let os = field(&read("/etc/os-release"), "PRETTY_NAME").unwrap_or_else(|| std::env::consts::OS.to_string());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!(" ({})", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} logical cores, {memory} RAM, {os}\nGPU: {gpu}\nglimpse {}{commit}, release build: {}\nReference: {}",
        env!("CARGO_PKG_VERSION"),
        !cfg!(debug_assertions),
        reference.unwrap_or("not run"),
    )
}

/// Adds a section to the results file above its newest one (the first `## ` heading), below
/// whatever introduces the file.
fn record(path: &Path, machine: &str, table: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmark results\n\n".into());
    let (intro, sections) = old.find("\n## ").map_or((old.as_str(), ""), |i| old.split_at(i + 1));
    let section = format!("## {}\n\n{}\n\n{table}\n\n", utc_now(), machine.replace('\n', "  \n"));
    let new = format!("{}\n\n{section}{sections}", intro.trim_end());
    write_atomically(path, new.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (days to civil date: Howard Hinnant's algorithm).
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

// ---- measuring (child process) ----

/// Measures one figure, `BACKEND:METRIC`, in this process: one line of JSON.
pub fn measure(spec: &str, args: &BenchArgs) -> Result<String> {
    Ok(serde_json::to_string(&measure_figure(spec, args)?)?)
}

fn measure_figure(spec: &str, args: &BenchArgs) -> Result<Figure> {
    let (backend, metric) = spec.split_once(':').context("--measure takes BACKEND:METRIC")?;
    let backend = backend.parse::<DeviceChoice>().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(BACKENDS.contains(&backend), "--measure: `{backend}` is not a backend; use cpu or wgpu");
    let metric = Metric::from_str(metric, false).map_err(anyhow::Error::msg)?;
    let selected = device::select(backend)?;
    let timer = Timer { runs: args.runs, budget: args.budget };
    let device = &selected.device;
    let (value, runs, detail) = match metric {
        Metric::Gpt2DecodeTokS => gpt2_decode(Gpt2Config::gpt2_small().init(device), device, &timer)?,
        Metric::Gpt2DecodeF16TokS | Metric::Gpt2DecodeQ8TokS => {
            let path = args.weights.as_ref().context("a weight-format figure needs --weights")?;
            let model = Gpt2::load_weights(&Gpt2Config::gpt2_small(), &WeightFile::open(path)?, device)?;
            gpt2_decode(model, device, &timer)?
        }
        Metric::ClipImageImgS => clip_image(device, &timer)?,
        Metric::ClipTextTxtS => clip_text(device, &timer)?,
        Metric::PrefixStepMs => prefix_step(device, &timer)?,
        Metric::ZerotaVideoS => zerota_video(device, &timer)?,
        Metric::DecodeAttentionMs => decode_attention_kernel(device)?,
        Metric::AttentionMs => attention_kernel(device)?,
        Metric::AttentionBackwardMs => attention_backward_kernel(device)?,
        Metric::MaskedPoolMs => masked_pool_kernel(device)?,
        Metric::Q8MatvecMs => q8_matvec_kernel(device)?,
        Metric::LinearMs => linear_kernel(device)?,
        Metric::MatmulTMs => matmul_t_kernel(device)?,
        Metric::LayerNormMs => layer_norm_kernel(device)?,
        Metric::BiasActivationMs => bias_activation_kernel(device)?,
        Metric::LinearBackwardMs => linear_backward_kernel(device)?,
    };
    Ok(Figure {
        metric,
        backend: backend.to_string(),
        device: selected.info.to_string(),
        value,
        unit: metric.unit().to_string(),
        runs,
        peak_rss_mib: peak_rss_mib(),
        detail,
    })
}

/// Peak resident memory of this process (Linux; NaN elsewhere).
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory of this process now (Linux; NaN elsewhere).
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1));
    kib.and_then(|k| k.parse::<f64>().ok()).map_or(f64::NAN, |k| k / 1024.0)
}

struct Timer {
    runs: usize,
    budget: f64,
}

impl Timer {
    /// Runs `work(0)` once to warm up, then `work(1..)` up to `runs` times or until the budget is
    /// spent, each with its own inputs (identical repeated work can be cached by drivers); `work`
    /// returns the seconds it timed (see [`stopwatch`]), and so do these.
    fn time(&self, mut work: impl FnMut(u64) -> Result<f64>) -> Result<Vec<f64>> {
        work(0)?;
        let mut runs = Vec::new();
        let started = Instant::now();
        for run in 1..=self.runs as u64 {
            runs.push(work(run)?);
            if started.elapsed().as_secs_f64() > self.budget {
                break;
            }
        }
        Ok(runs)
    }
}

/// Seconds taken by `work`, with its result.
fn stopwatch<T>(work: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let start = Instant::now();
    let out = work()?;
    Ok((start.elapsed().as_secs_f64(), out))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 }
}

type Measured = (f64, Vec<f64>, serde_json::Value);

fn random_ids(rng: &mut Rng, n: usize, low: usize, high: usize) -> Vec<u32> {
    (0..n).map(|_| (low + rng.below(high - low)) as u32).collect()
}

/// Decoding speed of `model` (GPT-2 small's shape), with the resident memory once it has run
/// (the weights, the last KV cache, what the allocator keeps).
fn gpt2_decode(model: Gpt2, device: &Device, timer: &Timer) -> Result<Measured> {
    const NEW: usize = 64;
    let config = Gpt2Config::gpt2_small();
    let generation = GenerationConfig { max_new_tokens: NEW, decoding: Decoding::Greedy, stop_at: None };
    let mut counted = serde_json::Value::Null;
    let runs = timer.time(|run| {
        let prompt = random_ids(&mut Rng::new(run), 8, 0, config.vocab_size);
        let counter = Counter::start();
        let mut marks = Vec::new();
        let (seconds, new) =
            stopwatch(|| Ok(block_on(generate(&model, &prompt, &generation, |_| marks.push(counter.now()), device))?))?;
        anyhow::ensure!(new.len() == NEW, "generated {} tokens, expected {NEW}", new.len());
        counted = per_unit("token", &marks);
        Ok(seconds)
    })?;
    let detail = json!({"prompt_tokens": 8, "new_tokens": NEW, "rss_after_decoding_mib": rss_mib(), "counts": counted});
    Ok((NEW as f64 / median(&runs), runs, detail))
}

fn clip_image(device: &Device, timer: &Timer) -> Result<Measured> {
    const BATCH: usize = 8;
    let model = ClipConfig::vit_b_32().init(device);
    let mut counted = serde_json::Value::Null;
    let runs = timer.time(|_| {
        let pixels = Tensor::<4>::random([BATCH, 3, 224, 224], Distribution::Normal(0.0, 1.0), device);
        device.sync()?;
        let counter = Counter::start();
        let before = counter.now();
        let (seconds, embeds) = stopwatch(|| Ok(block_on(read::<2, Float, f32>(model.encode_image(pixels)?))?))?;
        anyhow::ensure!(embeds.len() == BATCH * 512, "unexpected embedding size {}", embeds.len());
        counted = per_unit("batch", &[before, counter.now()]);
        Ok(seconds)
    })?;
    Ok((BATCH as f64 / median(&runs), runs, json!({"batch": BATCH, "size": 224, "counts": counted})))
}

fn clip_text(device: &Device, timer: &Timer) -> Result<Measured> {
    const BATCH: usize = 64;
    const LEN: usize = 16;
    let config = ClipConfig::vit_b_32();
    let model = config.init(device);
    let vocab = config.text_config.vocab_size;
    let mut counted = serde_json::Value::Null;
    let runs = timer.time(|run| {
        let mut rng = Rng::new(run);
        // Start token, 14 ordinary tokens, end token (the largest id, as in CLIP's vocabulary).
        let ids: Vec<Vec<u32>> = (0..BATCH)
            .map(|_| {
                [vec![vocab as u32 - 2], random_ids(&mut rng, LEN - 2, 0, vocab - 2), vec![vocab as u32 - 1]].concat()
            })
            .collect();
        let counter = Counter::start();
        let before = counter.now();
        let (seconds, embeds) = stopwatch(|| Ok(block_on(read::<2, Float, f32>(model.encode_text(&ids, device)?))?))?;
        anyhow::ensure!(embeds.len() == BATCH * 512, "unexpected embedding size {}", embeds.len());
        counted = per_unit("batch", &[before, counter.now()]);
        Ok(seconds)
    })?;
    Ok((BATCH as f64 / median(&runs), runs, json!({"batch": BATCH, "tokens": LEN, "counts": counted})))
}

/// CLIP ViT-B/32 and GPT-2 small with random weights and word-level tokenizers of their real
/// vocabulary sizes over made-up words (`w0`, `w1`, ...): text costs what it costs with the real
/// checkpoints, one token per word.
fn random_bundles(device: &Device) -> Result<(ClipBundle, Gpt2Bundle)> {
    let gpt2 = with_made_up_specials(&Gpt2Config::gpt2_small());
    let lm_tokenizer = Gpt2Tokenizer::from_json(gpt2_tokenizer_for(&gpt2)?.as_bytes())?;
    let clip = clip_with_made_up_specials(&ClipConfig::vit_b_32());
    let clip_tokenizer =
        ClipTokenizer::from_json(clip_tokenizer_for(&clip)?.as_bytes(), clip.text_config.max_position_embeddings)?;
    let lm = Gpt2Bundle { model: gpt2.init(device), config: gpt2, tokenizer: lm_tokenizer, device: device.clone() };
    let clip = ClipBundle {
        source: "random CLIP ViT-B/32".into(),
        model: clip.init(device),
        preprocess: ImagePreprocess::clip_default(clip.vision_config.image_size as u32),
        config: clip,
        tokenizer: clip_tokenizer,
        device: device.clone(),
    };
    Ok((clip, lm))
}

/// The guidance settings of the prefix-step figure: a 5-token learnable prefix (end-of-text and
/// four prompt words; the fifth word starts the context), 64 candidates, one step per token, a
/// fixed 12 tokens.
fn bench_guidance(max_tokens: usize) -> GuidanceConfig {
    GuidanceConfig {
        prompt: "w1 w2 w3 w4 w5".into(),
        max_tokens,
        top_k: 64,
        steps_per_token: 1,
        stop_at_sentence_end: false,
        ..GuidanceConfig::default()
    }
}

fn prefix_step(device: &Device, timer: &Timer) -> Result<Measured> {
    const TOKENS: usize = 12;
    let (clip, lm) = random_bundles(device)?;
    let mut steps = 0;
    let mut counted = serde_json::Value::Null;
    let runs = timer.time(|run| {
        let tokens = if run == 0 { 2 } else { TOKENS };
        let target = l2_normalize(Tensor::<2>::random([1, 512], Distribution::Normal(0.0, 1.0), device));
        let counter = Counter::start();
        let mut marks = vec![counter.now()];
        let (seconds, _) = stopwatch(|| {
            let guidance = bench_guidance(tokens);
            Ok(block_on(guided::caption(&clip, &lm, Targets::Fixed(target), &guidance, |_| marks.push(counter.now())))?)
        })?;
        let taken = marks.len() - 1;
        if run > 0 {
            anyhow::ensure!(taken == TOKENS, "the caption ended after {taken} of {TOKENS} steps");
            steps += taken;
            counted = per_unit("step", &marks);
        }
        Ok(seconds)
    })?;
    let per_step: Vec<f64> = runs.iter().map(|s| s * 1000.0 / TOKENS as f64).collect();
    let detail = json!({
        "prefix_tokens": 5, "context_tokens": format!("1..{TOKENS}"), "candidates": 64, "steps": steps, "counts": counted
    });
    Ok((median(&per_step), runs, detail))
}

/// 60 seconds at 2 fps of three scenes (colour gradients, a little noise per frame), 320x240.
fn synthetic_video() -> Vec<RgbImage> {
    const FRAMES: u32 = 120;
    (0..FRAMES)
        .map(|i| {
            let scene = i * 3 / FRAMES;
            RgbImage::from_fn(320, 240, |x, y| {
                let noise = (x * 7 + y * 13 + i * 31) % 9;
                let base = [(scene * 90 + x / 4) % 256, (y + scene * 60) % 256, (200 - scene * 70 + noise) % 256];
                image::Rgb(base.map(|c| c as u8))
            })
        })
        .collect()
}

fn zerota_video(device: &Device, timer: &Timer) -> Result<Measured> {
    let (clip, lm) = random_bundles(device)?;
    let video = synthetic_video();
    let duration = video.len() as f64 / 2.0;
    let zerota = |frames: &[RgbImage], max_tokens: usize| -> Result<serde_json::Value> {
        let guidance = GuidanceConfig {
            prompt: "w1 w2".into(),
            max_tokens,
            stop_at_sentence_end: false,
            ..ZeroTaConfig::default().guidance
        };
        let config = ZeroTaConfig { events: Some(3), guidance, ..ZeroTaConfig::default() };
        let embeds = embed_frames(&clip, frames)?;
        let counter = Counter::start();
        let mut marks = vec![counter.now()];
        block_on(dense_caption(&clip, &lm, &embeds, duration, &config, |_| marks.push(counter.now())))?;
        Ok(per_unit("step", &marks))
    };
    let mut counted = serde_json::Value::Null;
    // One timed run: it is 36 optimiser steps by itself.
    let single = Timer { runs: 1, budget: timer.budget };
    let runs = single.time(|run| match run {
        0 => stopwatch(|| zerota(&video[..24], 1)).map(|(seconds, _)| seconds),
        _ => stopwatch(|| zerota(&video, 12)).map(|(seconds, counts)| {
            counted = counts;
            seconds
        }),
    })?;
    let detail = json!({
        "frames": video.len(), "fps": 2, "events": 3, "tokens": 12, "steps_per_token": 3, "steps": counted["units"], "counts": counted
    });
    Ok((median(&runs), runs, detail))
}

/// Timed repetitions of a kernel figure, after as many untimed ones.
const KERNEL_RUNS: u64 = 20;

/// Seconds of `KERNEL_RUNS` timed runs of `op` on fresh inputs from `inputs`, each ending with a
/// readback; the clock starts once the inputs are on the device.
fn kernel_runs<I>(
    device: &Device,
    mut inputs: impl FnMut() -> I,
    mut op: impl FnMut(I) -> Tensor<2>,
) -> Result<Vec<f64>> {
    let mut runs = Vec::new();
    for run in 0..2 * KERNEL_RUNS {
        let input = inputs();
        device.sync()?;
        let (seconds, _) = stopwatch(|| Ok(block_on(read::<2, Float, f32>(op(input)))?))?;
        if run >= KERNEL_RUNS {
            runs.push(seconds);
        }
    }
    Ok(runs)
}

/// Kernel against fallback, one after the other in this process: the figure is the kernel's
/// median in milliseconds, its runs the kernel's.
fn kernel_figure(kernel: Vec<f64>, fallback: &[f64], shape: &str) -> Measured {
    let detail = json!({"fallback_ms": median(fallback) * 1000.0, "shape": shape});
    (median(&kernel) * 1000.0, kernel, detail)
}

fn decode_attention_kernel(device: &Device) -> Result<Measured> {
    const LAYERS: usize = 12;
    const HEADS: usize = 12;
    const HEAD_DIM: usize = 64;
    const SEQ: usize = 72;
    // Room for 128 positions, as the cache has after doubling past 64.
    const CAPACITY: usize = 128;
    let d = HEADS * HEAD_DIM;
    // As GPT-2 makes them: the fused projection, and caches with SEQ - 1 positions filled.
    let layer = || {
        let random = Distribution::Normal(0.0, 1.0);
        let cache = || Tensor::<4>::random([1, HEADS, CAPACITY, HEAD_DIM], random, device);
        (Tensor::<3>::random([1, 1, 3 * d], random, device), cache(), cache())
    };
    let token = || (0..LAYERS).map(|_| layer()).collect::<Vec<_>>();
    type Attention = fn(Tensor<3>, usize, Tensor<4>, Tensor<4>, usize, f32) -> (Tensor<3>, Tensor<4>, Tensor<4>);
    let scale = (HEAD_DIM as f32).sqrt().recip();
    let time = |attention: Attention| {
        kernel_runs(device, token, |layers| {
            let outputs: Vec<Tensor<2>> = layers
                .into_iter()
                .map(|(qkv, k, v)| attention(qkv, HEADS, k, v, SEQ - 1, scale).0.reshape([1, d]))
                .collect();
            Tensor::cat(outputs, 0)
        })
    };
    let (qkv, k, v) = layer();
    anyhow::ensure!(glimpse_kernels::decode_attention_uses_kernel(&qkv, HEADS, &k, &v), "the kernel does not run here");
    let kernel = time(glimpse_kernels::decode_attention)?;
    let fallback = time(glimpse_kernels::decode_attention_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "12 layers x [1, 1, 2304] against [1, 12, 72 of 128, 64], cache written"))
}

fn attention_kernel(device: &Device) -> Result<Measured> {
    const LAYERS: usize = 12;
    const TEXTS: usize = 64;
    const TOKENS: usize = 16;
    const HEADS: usize = 8;
    const HEAD_DIM: usize = 64;
    let d = HEADS * HEAD_DIM;
    // As the text tower makes them: three projections, each split into heads (views).
    let layer = || {
        [0; 3].map(|_| {
            Tensor::<3>::random([TEXTS, TOKENS, d], Distribution::Normal(0.0, 1.0), device)
                .reshape([TEXTS, TOKENS, HEADS, HEAD_DIM])
                .swap_dims(1, 2)
        })
    };
    let causal = glimpse_kernels::CausalMask::new(TOKENS, 0, device);
    let mask = glimpse_kernels::Mask::Causal(&causal);
    let scale = (HEAD_DIM as f32).sqrt().recip();
    type Attention =
        fn(Tensor<4>, Tensor<4>, Tensor<4>, Option<[Tensor<4>; 2]>, glimpse_kernels::Mask, f32) -> Tensor<3>;
    let time = |attention: Attention| {
        kernel_runs(
            device,
            || (0..LAYERS).map(|_| layer()).collect::<Vec<_>>(),
            |layers| {
                let outputs: Vec<Tensor<2>> = layers
                    .into_iter()
                    .map(|[q, k, v]| attention(q, k, v, None, mask, scale).narrow(1, TOKENS - 1, 1).reshape([TEXTS, d]))
                    .collect();
                Tensor::cat(outputs, 0)
            },
        )
    };
    let [q, k, v] = layer();
    anyhow::ensure!(glimpse_kernels::attention_uses_kernel(&q, &k, &v, None, mask), "the kernel does not run here");
    let kernel = time(glimpse_kernels::attention)?;
    let fallback = time(glimpse_kernels::attention_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "12 layers x [64, 8, 16, 64] heads split out of projections, causal"))
}

fn attention_backward_kernel(device: &Device) -> Result<Measured> {
    const LAYERS: usize = 12;
    const HEADS: usize = 12;
    const HEAD_DIM: usize = 64;
    const PAST: usize = 5;
    const TOKENS: usize = 12;
    let d = HEADS * HEAD_DIM;
    let tracked = device.clone().autodiff();
    let random = Distribution::Normal(0.0, 1.0);
    // Each layer's fused projection and the prefix's keys and values, all tracked.
    let layer = || {
        let qkv = Tensor::<3>::random([1, TOKENS, 3 * d], random, &tracked).require_grad();
        let cache = Tensor::<4>::random([2, HEADS, PAST, HEAD_DIM], random, &tracked).require_grad();
        (qkv, cache)
    };
    let causal = glimpse_kernels::CausalMask::new(TOKENS, PAST, &tracked);
    let mask = glimpse_kernels::Mask::Causal(&causal);
    let scale = (HEAD_DIM as f32).sqrt().recip();
    let past = |cache: &Tensor<4>| [0, 1].map(|i| cache.clone().narrow(0, i, 1));
    let time = |kernel: bool| {
        kernel_runs(
            device,
            || (0..LAYERS).map(|_| layer()).collect::<Vec<_>>(),
            |layers| {
                let gradients: Vec<Tensor<2>> = layers
                    .into_iter()
                    .flat_map(|(qkv, cache)| {
                        let output = if kernel {
                            glimpse_kernels::attention_qkv(qkv.clone(), HEADS, Some(past(&cache)), mask, scale)
                        } else {
                            let [q, k, v] = glimpse_kernels::qkv_heads(&qkv, HEADS);
                            glimpse_kernels::attention_fallback(q, k, v, Some(past(&cache)), mask, scale)
                        };
                        let grads = output.sum().backward();
                        let of = |leaf: &Tensor<3>| leaf.grad(&grads).expect("a gradient").reshape([1, -1]);
                        [of(&qkv), cache.grad(&grads).expect("a gradient").reshape([1, -1])]
                    })
                    .collect();
                Tensor::cat(gradients, 1)
            },
        )
    };
    let [q, k, v] = glimpse_kernels::qkv_heads(&layer().0, HEADS);
    let cache = layer().1;
    anyhow::ensure!(
        glimpse_kernels::attention_uses_kernel(&q, &k, &v, Some(&past(&cache)), mask),
        "the kernel does not run here"
    );
    let kernel = time(true)?;
    let fallback = time(false)?;
    Ok(kernel_figure(
        kernel,
        &fallback,
        "12 layers x [1, 12, 3 x 768] after [2, 12, 5, 64], causal, forward + both gradients",
    ))
}

/// `count` rows of width `width` as one decoding step makes them, each through `op` on its own.
fn per_row_kernel(
    device: &Device,
    count: usize,
    width: usize,
    op: impl Fn(Tensor<3>) -> Tensor<3>,
) -> Result<Vec<f64>> {
    let rows = || (0..count).map(|_| Tensor::<3>::random([1, 1, width], Distribution::Normal(0.0, 1.0), device));
    kernel_runs(
        device,
        || rows().collect::<Vec<_>>(),
        |rows| Tensor::cat(rows.into_iter().map(|x| op(x).reshape([1, width])).collect(), 0),
    )
}

/// GPT-2 small's four products in a layer (`c_attn`, the attention's `c_proj`, `c_fc`, the MLP's
/// `c_proj`), as (inputs, outputs).
const GPT2_LAYER_PRODUCTS: [(usize, usize); 4] = [(768, 2304), (768, 768), (768, 3072), (3072, 768)];

fn linear_kernel(device: &Device) -> Result<Measured> {
    // The products of one layer at a decoding step, each with its bias, and GELU after `c_fc`.
    const ACTIVATIONS: [Option<Activation>; 4] = [None, None, Some(Activation::GeluTanh), None];
    let random = Distribution::Normal(0.0, 0.03);
    let layers: Vec<(Tensor<2>, Tensor<1>, Option<Activation>)> = GPT2_LAYER_PRODUCTS
        .iter()
        .zip(ACTIVATIONS)
        .map(|(&(k, n), activation)| {
            (Tensor::random([k, n], random, device), Tensor::random([n], random, device), activation)
        })
        .collect();
    let rows = || {
        let random = Distribution::Normal(0.0, 1.0);
        GPT2_LAYER_PRODUCTS.iter().map(|&(k, _)| Tensor::<3>::random([1, 1, k], random, device)).collect::<Vec<_>>()
    };
    anyhow::ensure!(linear_uses_kernel(&rows()[0], &layers[0].0, Some(&layers[0].1)), "the kernel does not run here");
    let time = |dense: fn(Tensor<3>, Tensor<2>, Option<Tensor<1>>, Option<Activation>) -> Tensor<3>| {
        kernel_runs(device, rows, |rows| {
            let outputs: Vec<Tensor<2>> = rows
                .into_iter()
                .zip(&layers)
                .map(|(x, (weight, bias, activation))| {
                    let n = weight.dims()[1];
                    dense(x, weight.clone(), Some(bias.clone()), *activation).reshape([1, n])
                })
                .collect();
            Tensor::cat(outputs, 1)
        })
    };
    let kernel = time(linear)?;
    let fallback = time(linear_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "GPT-2 small's 4 products of a layer, 1 row, f32, bias + GELU"))
}

fn linear_backward_kernel(device: &Device) -> Result<Measured> {
    // A guided step's rows through the products of one layer.
    const ROWS: usize = 60;
    let tracked = device.clone().autodiff();
    let random = Distribution::Normal(0.0, 0.03);
    let weights: Vec<Tensor<2>> =
        GPT2_LAYER_PRODUCTS.iter().map(|&(k, n)| Tensor::random([k, n], random, device)).collect();
    let rows = || {
        let random = Distribution::Normal(0.0, 1.0);
        GPT2_LAYER_PRODUCTS
            .iter()
            .map(|&(k, _)| Tensor::<2>::random([ROWS, k], random, &tracked).require_grad())
            .collect::<Vec<_>>()
    };
    anyhow::ensure!(linear_uses_cpu_kernel(&rows()[0], &weights[0]), "the kernel does not run here");
    let time = |dense: fn(Tensor<2>, Tensor<2>, Option<Tensor<1>>, Option<Activation>) -> Tensor<2>| {
        kernel_runs(device, rows, |rows| {
            let gradients: Vec<Tensor<2>> = rows
                .into_iter()
                .zip(&weights)
                .map(|(x, weight)| {
                    let grads = dense(x.clone(), weight.clone(), None, None).sum().backward();
                    x.grad(&grads).expect("a gradient for the rows")
                })
                .collect();
            Tensor::cat(gradients, 1)
        })
    };
    let kernel = time(linear)?;
    let fallback = time(linear_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "GPT-2 small's 4 products of a layer, 60 rows, forward + input gradient"))
}

fn matmul_t_kernel(device: &Device) -> Result<Measured> {
    // GPT-2 small's token table as `ShardedTable` holds it: blocks of at most 128 MiB.
    const SHARDS: [usize; 2] = [43_690, 6_567];
    const DIM: usize = 768;
    let random = Distribution::Normal(0.0, 0.02);
    let shards: Vec<Tensor<2>> = SHARDS.iter().map(|&rows| Tensor::random([rows, DIM], random, device)).collect();
    let row = || Tensor::<3>::random([1, 1, DIM], Distribution::Normal(0.0, 1.0), device);
    anyhow::ensure!(matmul_t_uses_kernel(&row(), &shards[0]), "the kernel does not run here");
    let time = |product: fn(Tensor<3>, Tensor<2>) -> Tensor<3>| {
        kernel_runs(device, row, |x| {
            let parts: Vec<Tensor<3>> = shards.iter().map(|shard| product(x.clone(), shard.clone())).collect();
            Tensor::cat(parts, 2).reshape([1, SHARDS.iter().sum::<usize>()])
        })
    };
    let kernel = time(matmul_t)?;
    let fallback = time(matmul_t_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "GPT-2 small's tied LM head, 1 row x 50257 x 768 in 2 shards"))
}

fn layer_norm_kernel(device: &Device) -> Result<Measured> {
    const NORMS: usize = 25;
    const DIM: usize = 768;
    let gamma = Tensor::<1>::random([DIM], Distribution::Normal(1.0, 0.1), device);
    let beta = Tensor::<1>::random([DIM], Distribution::Normal(0.0, 0.1), device);
    let probe = Tensor::<3>::zeros([1, 1, DIM], device);
    anyhow::ensure!(layer_norm_uses_kernel(&probe, &gamma, Some(&beta)), "the kernel does not run here");
    let time = |norm: fn(Tensor<3>, Tensor<1>, Option<Tensor<1>>, f64) -> Tensor<3>| {
        per_row_kernel(device, NORMS, DIM, |x| norm(x, gamma.clone(), Some(beta.clone()), 1e-5))
    };
    let kernel = time(layer_norm)?;
    let fallback = time(layer_norm_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "25 x [1, 1, 768], GPT-2 small's LayerNorms of a decoding step"))
}

fn bias_activation_kernel(device: &Device) -> Result<Measured> {
    const LAYERS: usize = 12;
    const WIDTH: usize = 3072;
    let bias = Tensor::<1>::random([WIDTH], Distribution::Normal(0.0, 0.1), device);
    let probe = Tensor::<3>::zeros([1, 1, WIDTH], device);
    anyhow::ensure!(
        bias_activation_uses_kernel(&probe, Some(&bias), Some(Activation::GeluTanh)),
        "the kernel does not run here"
    );
    let time = |activate: fn(Tensor<3>, Option<Tensor<1>>, Option<Activation>) -> Tensor<3>| {
        per_row_kernel(device, LAYERS, WIDTH, |y| activate(y, Some(bias.clone()), Some(Activation::GeluTanh)))
    };
    let kernel = time(bias_activation)?;
    let fallback = time(bias_activation_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "12 x [1, 1, 3072], GPT-2 small's MLP bias + GELU of a decoding step"))
}

fn q8_matvec_kernel(device: &Device) -> Result<Measured> {
    let mut rng = Rng::new(3);
    let matrices: Vec<(Tensor<2, Int>, Tensor<2>)> = GPT2_LAYER_PRODUCTS
        .iter()
        .map(|&(k, n)| {
            let bytes: Vec<i8> = (0..n * k).map(|_| (rng.below(255) as i32 - 127) as i8).collect();
            q8_pack(&bytes, vec![0.01; n * k.div_ceil(Q8_BLOCK)], n, k, device)
        })
        .collect();
    let rows = || {
        let random = Distribution::Normal(0.0, 1.0);
        GPT2_LAYER_PRODUCTS.iter().map(|&(k, _)| Tensor::<3>::random([1, 1, k], random, device)).collect::<Vec<_>>()
    };
    let time = |product: fn(Tensor<3>, Tensor<2, Int>, Tensor<2>) -> Tensor<3>| {
        kernel_runs(device, rows, |rows| {
            let outputs: Vec<Tensor<2>> = rows
                .into_iter()
                .zip(&matrices)
                .map(|(x, (packed, scales))| {
                    let y = product(x, packed.clone(), scales.clone());
                    let n = y.dims()[2];
                    y.reshape([1, n])
                })
                .collect();
            Tensor::cat(outputs, 1)
        })
    };
    let (packed, scales) = &matrices[0];
    anyhow::ensure!(q8_matmul_uses_kernel(&rows()[0], packed, scales), "the kernel does not run here");
    let kernel = time(q8_matmul)?;
    let fallback = time(q8_matmul_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "GPT-2 small's 4 products of a layer, 1 row, q8 weights"))
}

fn masked_pool_kernel(device: &Device) -> Result<Measured> {
    const MASKS: usize = 3;
    const FRAMES: usize = 120;
    const DIM: usize = 512;
    let grad_device = device.clone().autodiff();
    let frames = l2_normalize(Tensor::<2>::random([FRAMES, DIM], Distribution::Normal(0.0, 1.0), device));
    let masks = || Tensor::<2>::random([MASKS, FRAMES], Distribution::Default, &grad_device).require_grad();
    anyhow::ensure!(glimpse_kernels::masked_pool_uses_kernel(&masks(), &frames), "the kernel does not run here");
    // ZeroTA's inside/outside contrast through each pooling: forward, backward, the masks'
    // gradient read back.
    let time = |pool: fn(Tensor<2>, Tensor<2>) -> Tensor<2>| {
        kernel_runs(device, masks, |masks| {
            let (_, similarity) = pool_with_contrast_by(pool, masks.clone(), frames.clone());
            masks.grad(&similarity.backward()).expect("the masks are tracked")
        })
    };
    let kernel = time(glimpse_kernels::masked_pool)?;
    let fallback = time(glimpse_kernels::masked_pool_fallback)?;
    Ok(kernel_figure(kernel, &fallback, "3 masks x 120 frames x 512, forward + backward"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(metric: Metric, backend: &str, value: f64) -> Figure {
        Figure {
            metric,
            backend: backend.into(),
            device: String::new(),
            value,
            unit: metric.unit().into(),
            runs: vec![1.0],
            peak_rss_mib: 100.0,
            detail: json!({}),
        }
    }

    #[test]
    fn ratios_are_glimpse_over_pytorch_and_kernels_stay_out_of_the_model_table() {
        let figures = [
            figure(Metric::ClipTextTxtS, "cpu", 50.0),
            figure(Metric::ClipTextTxtS, "pytorch-cpu", 200.0),
            figure(Metric::PrefixStepMs, "cpu", 300.0),
            figure(Metric::DecodeAttentionMs, "wgpu", 2.0),
        ];
        let table = model_table(&figures, Metric::value_variants(), &BACKENDS, ReferenceDevice::Cpu);
        assert!(
            table.contains("| clip_text_txt_s | cpu | 50.00 txt/s | 200.00 txt/s | 0.25x (higher is better) |"),
            "{table}"
        );
        assert!(table.contains("| prefix_step_ms | cpu | 300.00 ms | - | - |"), "{table}");
        assert!(!table.contains("decode_attention"), "{table}");
        assert_eq!(
            model_table(&figures[3..], Metric::value_variants(), &[DeviceChoice::Wgpu], ReferenceDevice::Cpu),
            ""
        );
    }

    #[test]
    fn kernel_figures_run_on_their_kernels_backend_and_are_tabled_with_it() {
        let on = |backend| Metric::value_variants().iter().filter(|m| m.is_kernel() && m.runs_on(backend)).count();
        let kernels = Metric::value_variants().iter().filter(|m| m.is_kernel()).count();
        assert!(on(DeviceChoice::Cpu) >= 1 && on(DeviceChoice::Wgpu) >= 1, "a kernel figure on each backend");
        assert_eq!(on(DeviceChoice::Cpu) + on(DeviceChoice::Wgpu), kernels, "each kernel figure on one backend");
        let mut cpu = figure(Metric::LinearBackwardMs, "cpu", 5.0);
        cpu.detail = json!({"fallback_ms": 10.0, "shape": "60 rows"});
        let mut wgpu = figure(Metric::LinearMs, "wgpu", 0.5);
        wgpu.detail = json!({"fallback_ms": 2.0, "shape": "1 row"});
        let table = kernel_table(&[cpu, figure(Metric::PrefixStepMs, "cpu", 300.0), wgpu]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(
            rows,
            [
                "| kernel | backend | shape | glimpse's kernel | portable fallback | speed-up |",
                "|---|---|---|---:|---:|---:|",
                "| linear_backward_ms | cpu | 60 rows | 5.000 ms | 10.000 ms | 2.00x |",
                "| linear_ms | wgpu | 1 row | 0.500 ms | 2.000 ms | 4.00x |"
            ]
        );
    }

    #[test]
    fn counts_are_tabled_per_unit_and_the_cpu_shows_no_kernels() {
        let counts = json!({"per": "token", "units": 63, "launches": 241, "readbacks": 1,
            "kernels": [["MatmulEntry<TensorArgs, ..>", 50], ["KernelBinop<AddOp>", 86]]});
        let mut wgpu = figure(Metric::Gpt2DecodeTokS, "wgpu", 1.0);
        wgpu.detail = json!({"counts": counts});
        let mut cpu = figure(Metric::Gpt2DecodeTokS, "cpu", 20.0);
        cpu.detail = json!({"counts": {"per": "token", "launches": 0, "readbacks": 1, "kernels": []}});
        let uncounted = figure(Metric::ClipImageImgS, "wgpu", 3.0);
        let table = count_table(&[wgpu, cpu, uncounted]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(rows.len(), 2, "{table}");
        assert_eq!(
            rows[0],
            "| gpt2_decode_tok_s | wgpu | token | 241 | 1 | MatmulEntry<TensorArgs, ..> 50, KernelBinop<AddOp> 86 |"
        );
        assert_eq!(rows[1], "| gpt2_decode_tok_s | cpu | token | - (no kernels) | 1 |  |");
        assert_eq!(count_table(&[figure(Metric::ClipImageImgS, "cpu", 3.0)]), "");
    }

    #[test]
    fn records_go_newest_first_below_the_introduction() {
        let dir = std::env::temp_dir().join(format!("glimpse-bench-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("RESULTS.md");
        std::fs::write(&path, "# Results\n\nIntroduction.\n").unwrap();
        record(&path, "Machine: first", "| first |").unwrap();
        record(&path, "Machine: second", "| second |").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} missing from {text}"));
        assert!(at("Introduction.") < at("Machine: second"), "{text}");
        assert!(at("Machine: second") < at("Machine: first"), "{text}");
        assert_eq!(text.matches("\n## ").count(), 2, "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
