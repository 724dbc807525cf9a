//! CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
//! Supervision", <https://arxiv.org/abs/2103.00020>): a ViT image tower and a causal text tower
//! projected into one embedding space.
//!
//! Loads Hugging Face `CLIPModel` checkpoints unchanged (`vision_model.*`, `text_model.*`,
//! `visual_projection`, `text_projection`, `logit_scale`). PyTorch `nn.Linear` weights are stored
//! `[out, in]` and transposed on load. The patch embedding is a stride-`p` convolution without
//! bias, computed here as one matmul over unfolded patches.

use burn::module::{Initializer, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use glimpse_kernels::{CausalMask, Mask, attention};
use glimpse_media::untrusted::settings_from_json;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hf_config::{check_model_type, hf_config_json};
use crate::nn::{Activation, Dense, LayerNorm, ShardedTable, split_heads};
use crate::tensor::l2_normalize;
use crate::weights::{Layout, Loader, Saver, Tensors, WeightFile, WeightFormat};

/// `text_config` of a Hugging Face CLIP `config.json`. Defaults are transformers' defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClipTextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_text_inner")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    /// The context length (77 for OpenAI CLIP).
    #[serde(default = "d_context")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// `2` is the legacy value of the original checkpoints: pooling then takes the position of the
    /// largest id (the end token has the largest id in OpenAI's vocabulary), as transformers does.
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

/// `vision_config` of a Hugging Face CLIP `config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClipVisionConfig {
    #[serde(default = "d_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_vision_inner")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: Activation,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl ClipVisionConfig {
    /// About the f32 values one image takes through the tower at once: its pixels, a layer's
    /// activations and one layer's attention scores. Frames are encoded in batches that fit a
    /// budget of these ([`ClipVisionConfig::images_per_batch`]).
    pub fn floats_per_image(&self) -> f64 {
        let size = self.image_size as f64;
        let tokens = (self.image_size / self.patch_size).pow(2) as f64 + 1.0;
        let activations = tokens * (6.0 * self.hidden_size as f64 + self.intermediate_size as f64);
        3.0 * size * size + activations + self.num_attention_heads as f64 * tokens * tokens
    }

    /// Images to encode in one batch: at most `most`, and as many as fit 256 MiB of
    /// [`floats_per_image`](ClipVisionConfig::floats_per_image) (16 of ViT-B/32, 5 of ViT-L/14 at 336).
    pub fn images_per_batch(&self, most: usize) -> usize {
        ((BATCH_FLOATS / self.floats_per_image()) as usize).clamp(1, most.max(1))
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// What one image may take through the image tower ([`ClipVisionConfig::floats_per_image`]): 1 GiB
/// of f32, 23 times ViT-L/14 at 336 pixels. A config beyond it is refused at load rather than
/// running out of memory on the first frame.
const MAX_FLOATS_PER_IMAGE: f64 = GIB / 4.0;

/// The f32 values a batch of images may take ([`ClipVisionConfig::images_per_batch`]).
const BATCH_FLOATS: f64 = 256.0 * (1 << 20) as f64 / 4.0;

/// A Hugging Face CLIP `config.json`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(from = "ClipConfigJson")]
pub struct ClipConfig {
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
    #[serde(default = "d_projection")]
    pub projection_dim: usize,
}

/// `config.json` as transformers reads it: a tower's `*_config_dict` (which early conversions,
/// LAION's among them, wrote beside `*_config`) is read instead of its `*_config`, and a tower
/// with neither takes the defaults.
#[derive(Deserialize)]
struct ClipConfigJson {
    text_config: Option<ClipTextConfig>,
    text_config_dict: Option<ClipTextConfig>,
    vision_config: Option<ClipVisionConfig>,
    vision_config_dict: Option<ClipVisionConfig>,
    #[serde(default = "d_projection")]
    projection_dim: usize,
}

impl From<ClipConfigJson> for ClipConfig {
    fn from(json: ClipConfigJson) -> Self {
        fn defaults<T: serde::de::DeserializeOwned>() -> T {
            serde_json::from_str("{}").expect("every field has a default")
        }
        Self {
            text_config: json.text_config_dict.or(json.text_config).unwrap_or_else(defaults),
            vision_config: json.vision_config_dict.or(json.vision_config).unwrap_or_else(defaults),
            projection_dim: json.projection_dim,
        }
    }
}

fn d_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inner() -> usize {
    2048
}
fn d_layers() -> usize {
    12
}
fn d_text_heads() -> usize {
    8
}
fn d_context() -> usize {
    77
}
fn d_act() -> Activation {
    Activation::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> u32 {
    49407
}
fn d_vision_hidden() -> usize {
    768
}
fn d_vision_inner() -> usize {
    3072
}
fn d_vision_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_projection() -> usize {
    512
}

/// transformers' initialisation of CLIP's embeddings (`initializer_range` 0.02). Burn's default
/// N(0, 1) would let the position embeddings drown the token and patch embeddings at the start
/// of training, and every text of one length would begin with the same embedding.
const SMALL_NORMAL: Initializer = Initializer::Normal { mean: 0.0, std: 0.02 };

/// The legacy `eos_token_id` of the original CLIP configs (see [`ClipTextConfig::eos_token_id`]).
const LEGACY_EOS: u32 = 2;

impl ClipTextConfig {
    /// The end token a text is pooled at, as `eos_token_id` names it; `None` for the legacy value,
    /// which pools at the largest id.
    pub fn pooled_token(&self) -> Option<u32> {
        (self.eos_token_id != LEGACY_EOS).then_some(self.eos_token_id)
    }
}

impl ClipConfig {
    /// `openai/clip-vit-base-patch32`.
    pub fn vit_b_32() -> Self {
        serde_json::from_str(r#"{"text_config": {"eos_token_id": 2}, "vision_config": {}}"#).expect("defaults parse")
    }

    /// Parses `config.json` and checks that it describes a model glimpse can build.
    pub fn from_json(json: &[u8]) -> Result<Self, ModelError> {
        check_model_type(json, "clip", "a CLIP")?;
        let config: Self = settings_from_json(json).map_err(|e| ModelError::config("config.json", e))?;
        config.validate()?;
        Ok(config)
    }

    /// `config.json` as transformers writes it for a `CLIPModel`.
    pub fn to_json(&self) -> String {
        hf_config_json(self, "clip", "CLIPModel")
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        for (name, value, max) in [
            ("text_config.vocab_size", t.vocab_size, 1 << 24),
            ("text_config.hidden_size", t.hidden_size, 1 << 16),
            ("text_config.intermediate_size", t.intermediate_size, 1 << 18),
            ("text_config.num_hidden_layers", t.num_hidden_layers, 1024),
            ("text_config.num_attention_heads", t.num_attention_heads, 1024),
            ("text_config.max_position_embeddings", t.max_position_embeddings, 1 << 16),
            ("vision_config.hidden_size", v.hidden_size, 1 << 16),
            ("vision_config.intermediate_size", v.intermediate_size, 1 << 18),
            ("vision_config.num_hidden_layers", v.num_hidden_layers, 1024),
            ("vision_config.num_attention_heads", v.num_attention_heads, 1024),
            ("vision_config.num_channels", v.num_channels, 16),
            ("vision_config.image_size", v.image_size, 8192),
            ("vision_config.patch_size", v.patch_size, 8192),
            ("projection_dim", self.projection_dim, 1 << 16),
        ] {
            if value == 0 || value > max {
                return bad(format!("{name} = {value} is outside 1..={max}"));
            }
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return bad(format!(
                "text hidden_size {} is not divisible by {} heads",
                t.hidden_size, t.num_attention_heads
            ));
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return bad(format!(
                "vision hidden_size {} is not divisible by {} heads",
                v.hidden_size, v.num_attention_heads
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return bad(format!("image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        if v.num_channels != 3 {
            return bad(format!("vision_config.num_channels = {}: glimpse feeds RGB images (3)", v.num_channels));
        }
        for (name, eps) in
            [("text_config.layer_norm_eps", t.layer_norm_eps), ("vision_config.layer_norm_eps", v.layer_norm_eps)]
        {
            if !(eps > 0.0 && eps < 1.0) {
                return bad(format!("{name} = {eps} must lie between 0 and 1"));
            }
        }
        if t.pooled_token().is_some_and(|eos| eos as usize >= t.vocab_size) {
            return bad(format!(
                "text_config.eos_token_id = {} is outside the vocabulary (vocab_size = {})",
                t.eos_token_id, t.vocab_size
            ));
        }
        let floats = v.floats_per_image();
        if floats > MAX_FLOATS_PER_IMAGE {
            return bad(format!(
                "the image tower would need {:.1} GiB per image ({} pixels square, {} patches, {} heads); glimpse \
                 takes models of at most {} GiB per image",
                floats * 4.0 / GIB,
                v.image_size,
                (v.image_size / v.patch_size).pow(2),
                v.num_attention_heads,
                MAX_FLOATS_PER_IMAGE * 4.0 / GIB
            ));
        }
        Ok(())
    }

    /// A model with lazily initialised random weights. The config must be valid
    /// ([`ClipConfig::validate`]; `from_json` checks it).
    pub fn init(&self, device: &Device) -> Clip {
        let t = &self.text_config;
        let v = &self.vision_config;
        let grid = v.image_size / v.patch_size;
        let linear_no_bias = |i, o| Dense::new(i, o, false, device);
        Clip {
            vision: ClipVision {
                patch_embedding: Initializer::KaimingUniform { gain: 1.0, fan_out_only: false }.init_with(
                    [v.hidden_size, v.num_channels, v.patch_size, v.patch_size],
                    Some(v.num_channels * v.patch_size * v.patch_size),
                    None,
                    device,
                ),
                class_embedding: SMALL_NORMAL.init([v.hidden_size], device),
                position_embedding: EmbeddingConfig::new(grid * grid + 1, v.hidden_size)
                    .with_initializer(SMALL_NORMAL)
                    .init(device),
                pre_layrnorm: LayerNorm::new(v.hidden_size, v.layer_norm_eps, device),
                layers: (0..v.num_hidden_layers)
                    .map(|_| EncoderLayer::init(v.hidden_size, v.intermediate_size, v.layer_norm_eps, device))
                    .collect(),
                post_layernorm: LayerNorm::new(v.hidden_size, v.layer_norm_eps, device),
                n_head: v.num_attention_heads,
                patch_size: v.patch_size,
                image_size: v.image_size,
                activation: v.hidden_act,
            },
            text: ClipText {
                token_embedding: ShardedTable::init(t.vocab_size, t.hidden_size, &SMALL_NORMAL, device),
                position_embedding: EmbeddingConfig::new(t.max_position_embeddings, t.hidden_size)
                    .with_initializer(SMALL_NORMAL)
                    .init(device),
                layers: (0..t.num_hidden_layers)
                    .map(|_| EncoderLayer::init(t.hidden_size, t.intermediate_size, t.layer_norm_eps, device))
                    .collect(),
                final_layer_norm: LayerNorm::new(t.hidden_size, t.layer_norm_eps, device),
                n_head: t.num_attention_heads,
                pooled_token: t.pooled_token(),
                activation: t.hidden_act,
            },
            visual_projection: linear_no_bias(v.hidden_size, self.projection_dim),
            text_projection: linear_no_bias(t.hidden_size, self.projection_dim),
            logit_scale: Initializer::Constant { value: (1.0f64 / 0.07).ln() }.init([1], device),
        }
    }
}

/// One pre-LayerNorm transformer layer, shared by both towers.
#[derive(Module, Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Dense,
    k_proj: Dense,
    v_proj: Dense,
    out_proj: Dense,
    layer_norm2: LayerNorm,
    fc1: Dense,
    fc2: Dense,
}

impl EncoderLayer {
    fn init(d: usize, inner: usize, eps: f64, device: &Device) -> Self {
        let linear = |i, o| Dense::new(i, o, true, device);
        Self {
            layer_norm1: LayerNorm::new(d, eps, device),
            q_proj: linear(d, d),
            k_proj: linear(d, d),
            v_proj: linear(d, d),
            out_proj: linear(d, d),
            layer_norm2: LayerNorm::new(d, eps, device),
            fc1: linear(d, inner),
            fc2: linear(inner, d),
        }
    }

    fn walk(&mut self, tensors: &impl Tensors, prefix: &str) {
        let t = Layout::Transposed;
        tensors.layer_norm(&format!("{prefix}layer_norm1"), &mut self.layer_norm1);
        tensors.dense(&format!("{prefix}self_attn.q_proj"), &mut self.q_proj, t);
        tensors.dense(&format!("{prefix}self_attn.k_proj"), &mut self.k_proj, t);
        tensors.dense(&format!("{prefix}self_attn.v_proj"), &mut self.v_proj, t);
        tensors.dense(&format!("{prefix}self_attn.out_proj"), &mut self.out_proj, t);
        tensors.layer_norm(&format!("{prefix}layer_norm2"), &mut self.layer_norm2);
        tensors.dense(&format!("{prefix}mlp.fc1"), &mut self.fc1, t);
        tensors.dense(&format!("{prefix}mlp.fc2"), &mut self.fc2, t);
    }

    /// `[batch, seq, d]` -> `[batch, seq, d]`; `mask` hides future positions (text tower).
    fn forward(&self, x: Tensor<3>, n_head: usize, act: Activation, mask: Mask) -> Tensor<3> {
        self.forward_with_past(x, Past::None, n_head, act, mask).0
    }

    /// As [`EncoderLayer::forward`], with `past` positions' keys and values placed before x's
    /// own, or x's own kept and returned. `mask` covers `past + seq` keys.
    fn forward_with_past(
        &self,
        x: Tensor<3>,
        past: Past,
        n_head: usize,
        act: Activation,
        mask: Mask,
    ) -> (Tensor<3>, Option<[Tensor<4>; 2]>) {
        let h = self.layer_norm1.forward(x.clone());
        let q = split_heads(self.q_proj.forward(h.clone()), n_head);
        let k = split_heads(self.k_proj.forward(h.clone()), n_head);
        let v = split_heads(self.v_proj.forward(h), n_head);
        let scale = (q.dims()[3] as f32).sqrt().recip();
        let (attended, kept) = match past {
            Past::Before(past) => (attention(q, k, v, Some(*past), mask, scale), None),
            Past::Keep => (attention(q, k.clone(), v.clone(), None, mask, scale), Some([k, v])),
            Past::None => (attention(q, k, v, None, mask, scale), None),
        };
        let x = self.out_proj.forward_residual(attended, x);
        let h = self.fc1.forward_normed(x.clone(), &self.layer_norm2, Some(act));
        (self.fc2.forward_residual(h, x), kept)
    }
}

/// What an [`EncoderLayer`] does with keys and values beyond its own input's.
enum Past {
    None,
    /// Its input's keys and values are returned (a shared beginning's).
    Keep,
    /// `[batch, heads, past, head_dim]` keys and values of positions before its input.
    Before(Box<[Tensor<4>; 2]>),
}

#[derive(Module, Debug)]
struct ClipVision {
    /// `[hidden, channels, patch, patch]`, as stored.
    patch_embedding: Param<Tensor<4>>,
    class_embedding: Param<Tensor<1>>,
    position_embedding: Embedding,
    pre_layrnorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    post_layernorm: LayerNorm,
    #[module(skip)]
    n_head: usize,
    #[module(skip)]
    patch_size: usize,
    #[module(skip)]
    image_size: usize,
    #[module(skip)]
    activation: Activation,
}

impl ClipVision {
    fn walk(&mut self, tensors: &impl Tensors) {
        let p = "vision_model.";
        tensors.param(&format!("{p}embeddings.patch_embedding.weight"), &mut self.patch_embedding, Layout::AsStored);
        tensors.param(&format!("{p}embeddings.class_embedding"), &mut self.class_embedding, Layout::AsStored);
        tensors.embedding(&format!("{p}embeddings.position_embedding"), &mut self.position_embedding);
        tensors.layer_norm(&format!("{p}pre_layrnorm"), &mut self.pre_layrnorm);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.walk(tensors, &format!("{p}encoder.layers.{i}."));
        }
        tensors.layer_norm(&format!("{p}post_layernorm"), &mut self.post_layernorm);
    }

    /// `[batch, channels, size, size]` -> pooled `[batch, hidden]` (class token after `post_layernorm`).
    fn forward(&self, pixels: Tensor<4>) -> Tensor<2> {
        let [b, c, h, w] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, c * p * p]);
        let weight = self.patch_embedding.val();
        let d = weight.dims()[0];
        let weight = weight.reshape([d, c * p * p]).transpose().unsqueeze::<3>();
        let patches = patches.matmul(weight);
        let class = self.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let x = Tensor::cat(vec![class, patches], 1);
        let x = x + self.position_embedding.weight.val().unsqueeze::<3>();
        let mut x = self.pre_layrnorm.forward(x);
        for layer in &self.layers {
            x = layer.forward(x, self.n_head, self.activation, Mask::All);
        }
        let pooled = x.narrow(1, 0, 1).reshape([b, d]);
        self.post_layernorm.forward(pooled)
    }
}

#[derive(Module, Debug)]
struct ClipText {
    token_embedding: ShardedTable,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    #[module(skip)]
    n_head: usize,
    #[module(skip)]
    pooled_token: Option<u32>,
    #[module(skip)]
    activation: Activation,
}

impl ClipText {
    fn walk(&mut self, tensors: &impl Tensors) {
        let p = "text_model.";
        tensors.sharded(&format!("{p}embeddings.token_embedding.weight"), &mut self.token_embedding);
        tensors.embedding(&format!("{p}embeddings.position_embedding"), &mut self.position_embedding);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.walk(tensors, &format!("{p}encoder.layers.{i}."));
        }
        tensors.layer_norm(&format!("{p}final_layer_norm"), &mut self.final_layer_norm);
    }

    /// The position whose hidden state represents the text, as transformers chooses it.
    fn pooling_position(&self, ids: &[u32]) -> usize {
        // transformers takes `argmax(ids == eos)`, which is 0 when no end token is present.
        let end = self.pooled_token.unwrap_or_else(|| ids.iter().copied().max().unwrap_or(0));
        ids.iter().position(|&id| id == end).unwrap_or(0)
    }

    /// Token ids (already with start/end tokens) -> pooled `[batch, hidden]`.
    fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<2> {
        match self.shared_beginnings(ids, device) {
            Some(runs) => self.forward_shared(ids, &runs, device),
            None => self.forward_whole(ids, device),
        }
    }

    /// Runs of consecutive rows that begin with the same tokens, where encoding each run's
    /// beginning once and then only the rest of each row takes at most two thirds of the positions
    /// of encoding every row whole (the two passes cost more operations); `None` elsewhere, and
    /// off the CPU backend (on a GPU the second pass's launches cost more than the positions it
    /// saves).
    ///
    /// Guided decoding asks for this: the `top_k` candidates of a caption are the caption so far
    /// and one more token each. The causal mask makes a position's state depend on the positions
    /// before it only, so a shared beginning has the same states in every row.
    fn shared_beginnings(&self, ids: &[Vec<u32>], device: &Device) -> Option<Vec<Run>> {
        if !glimpse_kernels::is_cpu(device) {
            return None;
        }
        let mut runs: Vec<Run> = Vec::new();
        for (row, tokens) in ids.iter().enumerate() {
            // A beginning stops before the pooled position: the rest of a row is never empty.
            let limit = self.pooling_position(tokens);
            let common = runs.last().map_or(0, |run| {
                let first = &ids[run.rows.start];
                first[..run.len].iter().zip(&tokens[..limit]).take_while(|(a, b)| a == b).count()
            });
            match runs.last_mut() {
                Some(run) if common >= MIN_SHARED => {
                    run.len = common;
                    run.rows.end = row + 1;
                }
                _ => runs.push(Run { rows: row..row + 1, len: limit }),
            }
        }
        let whole = ids.len() * ids.iter().map(Vec::len).max().unwrap_or(0);
        let beginnings = runs.len() * runs.iter().map(|run| run.len).max().unwrap_or(0);
        let rest =
            ids.len() * runs.iter().flat_map(|run| ids[run.rows.clone()].iter().map(|r| r.len() - run.len)).max()?;
        (3 * (beginnings + rest) <= 2 * whole).then_some(runs)
    }

    /// [`ClipText::forward`] with each run's beginning encoded once (its keys and values kept per
    /// layer), then the rest of its rows attending to them.
    fn forward_shared(&self, ids: &[Vec<u32>], runs: &[Run], device: &Device) -> Tensor<2> {
        let pad = ids[0][ids[0].len() - 1];
        // The beginnings, `[runs, p]`, padded after their tokens (which the causal mask keeps out
        // of them, and the mask below out of the rest).
        let p = runs.iter().map(|run| run.len).max().unwrap_or(0);
        let beginnings: Vec<&[u32]> = runs.iter().map(|run| &ids[run.rows.start][..run.len]).collect();
        let mut x = self.embed_from_start(padded(&beginnings, p, pad, device));
        let mask = CausalMask::new(p, 0, device);
        let mut past = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (next, kept) =
                layer.forward_with_past(x, Past::Keep, self.n_head, self.activation, Mask::Causal(&mask));
            past.push(kept.expect("kept keys and values"));
            x = next;
        }
        // The rest of each row, `[batch, s]`, at its own positions (padding clamped into range).
        let b = ids.len();
        let row_runs: Vec<(usize, &Run)> =
            runs.iter().enumerate().flat_map(|(i, run)| run.rows.clone().map(move |_| (i, run))).collect();
        let s = ids.iter().zip(&row_runs).map(|(row, (_, run))| row.len() - run.len).max().unwrap_or(0);
        let last_position = self.position_embedding.weight.dims()[0] - 1;
        let position_ids: Vec<i64> =
            row_runs.iter().flat_map(|(_, run)| (0..s).map(move |i| (run.len + i).min(last_position) as i64)).collect();
        let position_ids = Tensor::<2, Int>::from_data(TensorData::new(position_ids, [b, s]), device);
        let rest: Vec<&[u32]> = ids.iter().zip(&row_runs).map(|(row, (_, run))| &row[run.len..]).collect();
        let rest = padded(&rest, s, pad, device);
        let mut x = self.token_embedding.lookup(rest) + self.position_embedding.forward(position_ids);
        // Hidden: the padding of a row's beginning, and later positions of its rest.
        let hidden: Vec<bool> = row_runs
            .iter()
            .flat_map(|(_, run)| {
                (0..s).flat_map(move |i| (0..p + s).map(move |j| if j < p { j >= run.len } else { j - p > i }))
            })
            .collect();
        let mask = Tensor::<4, Bool>::from_data(TensorData::new(hidden, [b, 1, s, p + s]), device);
        let of_row = Tensor::<1, Int>::from_data(
            TensorData::new(row_runs.iter().map(|(i, _)| *i as i64).collect::<Vec<_>>(), [b]),
            device,
        );
        for (layer, [k, v]) in self.layers.iter().zip(past) {
            let past = Past::Before(Box::new([k.select(0, of_row.clone()), v.select(0, of_row.clone())]));
            x = layer.forward_with_past(x, past, self.n_head, self.activation, Mask::Hidden(&mask)).0;
        }
        self.pool(
            self.final_layer_norm.forward(x),
            ids.iter().zip(&row_runs).map(|(row, (_, run))| self.pooling_position(row) - run.len),
        )
    }

    /// Every row encoded whole.
    fn forward_whole(&self, ids: &[Vec<u32>], device: &Device) -> Tensor<2> {
        let t = ids.iter().map(Vec::len).max().unwrap_or(0);
        // Padding sits after every real token; the causal mask keeps it out of the pooled state.
        let pad = ids[0][ids[0].len() - 1];
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let mut x = self.embed_from_start(padded(&rows, t, pad, device));
        let mask = CausalMask::new(t, 0, device);
        for layer in &self.layers {
            x = layer.forward(x, self.n_head, self.activation, Mask::Causal(&mask));
        }
        self.pool(self.final_layer_norm.forward(x), ids.iter().map(|row| self.pooling_position(row)))
    }

    /// Token and position embeddings of rows that start at position 0: `[batch, t]` -> `[batch, t, hidden]`.
    fn embed_from_start(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let t = tokens.dims()[1];
        let positions = self.position_embedding.weight.val().narrow(0, 0, t).unsqueeze::<3>();
        self.token_embedding.lookup(tokens) + positions
    }

    /// Row `i`'s state at `positions[i]`: `[batch, seq, hidden]` -> `[batch, hidden]`.
    fn pool(&self, x: Tensor<3>, positions: impl Iterator<Item = usize>) -> Tensor<2> {
        let [b, t, d] = x.dims();
        let rows: Vec<i64> = positions.enumerate().map(|(i, position)| (i * t + position) as i64).collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [b]), &x.device());
        x.reshape([b * t, d]).select(0, rows)
    }
}

/// `rows` as a `[rows, t]` id tensor, each filled up to `t` with `pad`.
fn padded(rows: &[&[u32]], t: usize, pad: u32, device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> =
        rows.iter().flat_map(|row| row.iter().copied().chain(std::iter::repeat(pad)).take(t).map(i64::from)).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), t]), device)
}

/// Tokens rows must share before their beginning is encoded once: the start token alone is
/// shared by every text.
const MIN_SHARED: usize = 2;

/// Rows `rows` of a batch, which all begin with the same `len` tokens.
#[derive(Debug)]
struct Run {
    rows: std::ops::Range<usize>,
    len: usize,
}

/// CLIP: both towers, their projections and the learned temperature.
#[derive(Module, Debug)]
pub struct Clip {
    vision: ClipVision,
    text: ClipText,
    visual_projection: Dense,
    text_projection: Dense,
    /// Stored as a log; `[1]`.
    logit_scale: Param<Tensor<1>>,
}

impl Clip {
    /// Builds the model from `model.safetensors` bytes of a Hugging Face `CLIPModel`.
    pub fn load(config: &ClipConfig, safetensors: &[u8], device: &Device) -> Result<Self, ModelError> {
        Self::load_weights(config, &WeightFile::parse(safetensors)?, device)
    }

    /// As [`Clip::load`], from a parsed (or opened) weight file; tensors are read one at a time.
    pub fn load_weights(config: &ClipConfig, file: &WeightFile, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let loader = Loader::new(file, device);
        let mut model = config.init(device);
        model.walk(&loader);
        loader.finish(|name| name.ends_with("embeddings.position_ids"))?;
        Ok(model)
    }

    /// The model as `model.safetensors` bytes with Hugging Face names (the inverse of [`Clip::load`]).
    pub async fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        self.to_safetensors_as(WeightFormat::F32).await
    }

    /// As [`Self::to_safetensors`], stored in `format` (`glimpse models convert`).
    pub async fn to_safetensors_as(&self, format: WeightFormat) -> Result<Vec<u8>, ModelError> {
        let saver = Saver::new(format);
        self.clone().walk(&saver);
        saver.to_safetensors(crate::weights::pytorch_metadata()).await
    }

    fn walk(&mut self, tensors: &impl Tensors) {
        self.vision.walk(tensors);
        self.text.walk(tensors);
        tensors.dense("visual_projection", &mut self.visual_projection, Layout::Transposed);
        tensors.dense("text_projection", &mut self.text_projection, Layout::Transposed);
        tensors.param("logit_scale", &mut self.logit_scale, Layout::Scalar);
    }

    pub fn image_size(&self) -> usize {
        self.vision.image_size
    }

    pub fn context_length(&self) -> usize {
        self.text.position_embedding.weight.lazy_shape().dims::<2>()[0]
    }

    pub fn vocab_size(&self) -> usize {
        self.text.token_embedding.rows()
    }

    /// Projected image embeddings (not normalised): `[batch, channels, size, size]` -> `[batch, projection_dim]`.
    pub fn encode_image(&self, pixels: Tensor<4>) -> Result<Tensor<2>, ModelError> {
        let [_, c, h, w] = pixels.dims();
        let s = self.image_size();
        let channels = self.vision.patch_embedding.lazy_shape().dims::<4>()[1];
        if (c, h, w) != (channels, s, s) {
            return Err(ModelError::Input(format!("pixels are {c}x{h}x{w}, the model takes {channels}x{s}x{s}")));
        }
        Ok(self.visual_projection.forward(self.vision.forward(pixels)))
    }

    /// Projected text embeddings (not normalised) for token ids that already carry the start and
    /// end tokens (see `glimpse-media`'s CLIP tokenizer): `batch` rows -> `[batch, projection_dim]`.
    pub fn encode_text(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor<2>, ModelError> {
        let (context, vocab) = (self.context_length(), self.vocab_size());
        if ids.is_empty() || ids.iter().any(Vec::is_empty) {
            return Err(ModelError::Input("no text to encode".into()));
        }
        if let Some(row) = ids.iter().find(|row| row.len() > context) {
            return Err(ModelError::Input(format!("{} tokens exceed the context length {context}", row.len())));
        }
        if let Some(&id) = ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {vocab}")));
        }
        Ok(self.text_projection.forward(self.text.forward(ids, device)))
    }

    /// Whether [`Clip::encode_text`] encodes these rows' shared beginnings once (runs of rows that
    /// begin alike, as a guided step's candidates do, on the CPU backend) rather than every row whole.
    pub fn text_shares_beginnings(&self, ids: &[Vec<u32>], device: &Device) -> bool {
        self.text.shared_beginnings(ids, device).is_some()
    }

    /// The learned temperature `exp(logit_scale)`, `[1]`, at most 100: CLIP's training clamps it
    /// there, and a checkpoint beyond it would overflow the logits.
    pub fn logit_scale(&self) -> Tensor<1> {
        self.logit_scale.val().exp().clamp_max(100.0)
    }

    /// `logits_per_image[i][j] = exp(logit_scale) * cos(image_i, text_j)`, from unnormalised embeddings.
    pub fn logits_per_image(&self, image_embeds: Tensor<2>, text_embeds: Tensor<2>) -> Tensor<2> {
        let sim = l2_normalize(image_embeds).matmul(l2_normalize(text_embeds).transpose());
        sim * self.logit_scale().unsqueeze::<2>()
    }

    /// Zero-shot classification: each image's probability over the texts, `[images, texts]`,
    /// from [`Self::logits_per_image`].
    pub fn zero_shot(logits_per_image: Tensor<2>) -> Tensor<2> {
        softmax(logits_per_image, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_towers_config_dict_is_read_over_its_config_and_a_missing_tower_takes_the_defaults() {
        let json = br#"{"model_type": "clip",
            "text_config": {"layer_norm_eps": 1e-5, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2},
            "text_config_dict": {"layer_norm_eps": 0.3, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2},
            "vision_config_dict": null}"#;
        let config = ClipConfig::from_json(json).unwrap();
        assert_eq!(config.text_config.layer_norm_eps, 0.3);
        assert_eq!((config.vision_config.hidden_size, config.vision_config.patch_size), (768, 32));
        let bare =
            ClipConfig::from_json(br#"{"model_type": "clip", "text_config_dict": {"num_hidden_layers": 2}}"#).unwrap();
        assert_eq!((bare.text_config.num_hidden_layers, bare.text_config.hidden_size), (2, 512));
        assert_eq!(bare.vision_config.num_hidden_layers, 12);
        // Written back as transformers writes it now: the towers' configs only.
        let written = bare.to_json();
        assert!(written.contains("\"text_config\"") && !written.contains("config_dict"), "{written}");
    }
}
