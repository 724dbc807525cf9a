//! GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
//! <https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf>).
//!
//! Pre-LayerNorm decoder blocks, learned absolute positions, tanh-approximate GELU and an LM head
//! tied to the token embedding by default (the config may name another activation, scale
//! attention otherwise, or store its own head). Weights load unchanged from Hugging Face
//! checkpoints saved from `GPT2Model` (`h.0.attn...`) or `GPT2LMHeadModel` (`transformer.h.0.attn...`,
//! with or without `lm_head.weight`). GPT-2's `Conv1D` stores weights `[in, out]`, which is Burn's layout already.

use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::prelude::*;
use glimpse_kernels::{CausalMask, Mask, attention_qkv, qkv_heads};
use glimpse_media::untrusted::settings_from_json;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::hf_config::{check_model_type, hf_config_json};
use crate::nn::{Activation, Dense, LayerNorm, ShardedTable};
use crate::weights::{Layout, Loader, Saver, Tensors, WeightFile, WeightFormat};

/// The fields of a Hugging Face GPT-2 `config.json` that shape the model. Other fields are ignored;
/// fields that would change the computation in ways glimpse does not implement are refused.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_activation")]
    pub activation_function: Activation,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// The token a text ends with. transformers also takes a list of them; glimpse ends a text at
    /// one, and takes a list of one, or none ([`one_end_token`]).
    #[serde(default, deserialize_with = "one_end_token")]
    pub eos_token_id: Option<u32>,
    /// Read only to be checked: an id outside the vocabulary means config.json does not belong to
    /// the weights (Burn's gather would panic on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<u32>,
    /// With the next, what attention scores are scaled by ([`Gpt2Config::attention_scale`]).
    #[serde(default = "default_true")]
    scale_attn_weights: bool,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    /// Scores computed in f32 within half-precision training: glimpse computes them in f32
    /// always. Kept so that a converted checkpoint says what its source said.
    #[serde(default)]
    reorder_and_upcast_attn: bool,
    #[serde(default)]
    add_cross_attention: bool,
}

/// The longest position table a config may declare; also bounds every length a caller asks for.
pub const MAX_POSITIONS: usize = 1 << 20;

/// `eos_token_id` as config.json may write it: an id, a list of one, or null (or an empty list).
fn one_end_token<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let id = |value: &serde_json::Value| {
        value
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| D::Error::custom(format!("{value} is no token id")))
    };
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Array(ids) if ids.is_empty() => Ok(None),
        serde_json::Value::Array(ids) if ids.len() == 1 => id(&ids[0]).map(Some),
        serde_json::Value::Array(ids) => Err(D::Error::custom(format!(
            "{} names {} end tokens, where glimpse ends a text at one: set it to the id the model ends its texts with",
            serde_json::Value::Array(ids.clone()),
            ids.len()
        ))),
        value => id(&value).map(Some),
    }
}

fn default_eps() -> f64 {
    1e-5
}
fn default_activation() -> Activation {
    Activation::GeluTanh
}
fn default_true() -> bool {
    true
}

impl Gpt2Config {
    /// The special tokens config.json names that glimpse reads, by their names: each must be a
    /// token of the model's tokenizer.
    pub fn special_token_ids(&self) -> impl Iterator<Item = (&'static str, u32)> {
        [("eos_token_id", self.eos_token_id), ("bos_token_id", self.bos_token_id)]
            .into_iter()
            .filter_map(|(name, id)| Some((name, id?)))
    }

    /// GPT-2 small (124M): the `gpt2` checkpoint's shape.
    pub fn gpt2_small() -> Self {
        Self::sized(50257, 1024, 768, 12, 12)
    }

    /// GPT-2 medium (355M).
    pub fn gpt2_medium() -> Self {
        Self::sized(50257, 1024, 1024, 24, 16)
    }

    pub fn sized(vocab_size: usize, n_positions: usize, n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Self {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: None,
            layer_norm_epsilon: default_eps(),
            activation_function: default_activation(),
            tie_word_embeddings: true,
            eos_token_id: (vocab_size as u32).checked_sub(1),
            bos_token_id: None,
            pad_token_id: None,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            reorder_and_upcast_attn: false,
            add_cross_attention: false,
        }
    }

    /// Parses `config.json` and checks that it describes a model glimpse can build.
    pub fn from_json(json: &[u8]) -> Result<Self, ModelError> {
        check_model_type(json, "gpt2", "a GPT-2")?;
        let config: Self = settings_from_json(json).map_err(|e| ModelError::config("config.json", e))?;
        config.validate()?;
        Ok(config)
    }

    /// `config.json` as transformers writes it for a `GPT2LMHeadModel`.
    pub fn to_json(&self) -> String {
        hf_config_json(self, "gpt2", "GPT2LMHeadModel")
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// What layer `layer`'s attention scores are multiplied by: `1 / sqrt(head_dim)` unless
    /// `scale_attn_weights` is false, divided by `layer + 1` under `scale_attn_by_inverse_layer_idx`
    /// (as transformers computes them).
    pub fn attention_scale(&self, layer: usize) -> f32 {
        let head_dim = (self.n_embd / self.n_head) as f32;
        let by_width = if self.scale_attn_weights { head_dim.sqrt().recip() } else { 1.0 };
        let by_depth = if self.scale_attn_by_inverse_layer_idx { (layer + 1) as f32 } else { 1.0 };
        by_width / by_depth
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        for (name, value, max) in [
            ("vocab_size", self.vocab_size, 1 << 24),
            ("n_positions", self.n_positions, MAX_POSITIONS),
            ("n_embd", self.n_embd, 1 << 16),
            ("n_layer", self.n_layer, 1024),
            ("n_head", self.n_head, 1024),
            ("n_inner", self.inner_dim(), 1 << 18),
        ] {
            if value == 0 || value > max {
                return bad(format!("{name} = {value} is outside 1..={max}"));
            }
        }
        for (name, id) in [
            ("eos_token_id", self.eos_token_id),
            ("bos_token_id", self.bos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= self.vocab_size) {
                return bad(format!(
                    "{name} = {id} is outside the vocabulary (vocab_size = {}); config.json does not belong to \
                     this model",
                    self.vocab_size
                ));
            }
        }
        if !(self.layer_norm_epsilon > 0.0 && self.layer_norm_epsilon < 1.0) {
            return bad(format!("layer_norm_epsilon = {} must lie between 0 and 1", self.layer_norm_epsilon));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd = {} is not divisible by n_head = {}", self.n_embd, self.n_head));
        }
        if self.add_cross_attention {
            return bad("add_cross_attention is not supported by glimpse's GPT-2 (a decoder of another model's \
                        states, not a language model)"
                .into());
        }
        Ok(())
    }

    /// A model with lazily initialised random weights (nothing is allocated until used).
    /// The config must be valid ([`Gpt2Config::validate`]; `from_json` checks it).
    pub fn init(&self, device: &Device) -> Gpt2 {
        let d = self.n_embd;
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        Gpt2 {
            wte: ShardedTable::init(self.vocab_size, d, &init, device),
            wpe: EmbeddingConfig::new(self.n_positions, d).with_initializer(init.clone()).init(device),
            blocks: (0..self.n_layer).map(|layer| Block::init(self, layer, device)).collect(),
            ln_f: LayerNorm::new(d, self.layer_norm_epsilon, device),
            lm_head: (!self.tie_word_embeddings).then(|| ShardedTable::init(self.vocab_size, d, &init, device)),
            n_head: self.n_head,
            activation: self.activation_function,
        }
    }
}

#[derive(Module, Debug)]
struct Block {
    ln_1: LayerNorm,
    /// q | k | v projections fused, `[n_embd, 3 n_embd]`.
    c_attn: Dense,
    c_proj: Dense,
    ln_2: LayerNorm,
    c_fc: Dense,
    mlp_proj: Dense,
    /// What attention scores are scaled by ([`Gpt2Config::attention_scale`]).
    #[module(skip)]
    attention_scale: f32,
}

impl Block {
    fn init(config: &Gpt2Config, layer: usize, device: &Device) -> Self {
        let d = config.n_embd;
        Self {
            ln_1: LayerNorm::new(d, config.layer_norm_epsilon, device),
            c_attn: Dense::new(d, 3 * d, true, device),
            c_proj: Dense::new(d, d, true, device),
            ln_2: LayerNorm::new(d, config.layer_norm_epsilon, device),
            c_fc: Dense::new(d, config.inner_dim(), true, device),
            mlp_proj: Dense::new(config.inner_dim(), d, true, device),
            attention_scale: config.attention_scale(layer),
        }
    }

    fn walk(&mut self, tensors: &impl Tensors, prefix: &str) {
        tensors.layer_norm(&format!("{prefix}ln_1"), &mut self.ln_1);
        tensors.dense(&format!("{prefix}attn.c_attn"), &mut self.c_attn, Layout::AsStored);
        tensors.dense(&format!("{prefix}attn.c_proj"), &mut self.c_proj, Layout::AsStored);
        tensors.layer_norm(&format!("{prefix}ln_2"), &mut self.ln_2);
        tensors.dense(&format!("{prefix}mlp.c_fc"), &mut self.c_fc, Layout::AsStored);
        tensors.dense(&format!("{prefix}mlp.c_proj"), &mut self.mlp_proj, Layout::AsStored);
    }

    /// `x`: `[batch, t, d]`; `past`: this layer's cached keys/values; `mask`: causal over `t`
    /// after `past`, [`Mask::All`] for a single position (which sees everything). Returns the
    /// cache extended by `x`'s positions when `keep`, none otherwise.
    fn forward(
        &self,
        x: Tensor<3>,
        past: Option<LayerKv>,
        keep: bool,
        mask: Mask,
        (n_head, act): (usize, Activation),
    ) -> (Tensor<3>, Option<LayerKv>) {
        let t = x.dims()[1];
        let qkv = self.c_attn.forward_normed(x.clone(), &self.ln_1, None);
        let (attended, kv) = match past {
            // A decoding step: one kernel on wgpu reads q, k, v out of the projection, writes the
            // cache and attends.
            Some(past) if t == 1 && keep => {
                let (attended, kv) = past.attend_next(qkv, n_head, self.attention_scale);
                (attended, Some(kv))
            }
            past => {
                // An empty cache (which `append` takes) is no cache to attend to.
                let cached = past.as_ref().filter(|past| past.seq_len() > 0).map(|past| [past.keys(), past.values()]);
                let kv = keep.then(|| {
                    let [_, k, v] = qkv_heads(&qkv, n_head);
                    match past {
                        Some(past) => past.append(k, v),
                        None => LayerKv::new(k, v),
                    }
                });
                (attention_qkv(qkv, n_head, cached, mask, self.attention_scale), kv)
            }
        };
        let x = self.c_proj.forward_residual(attended, x);
        let h = self.c_fc.forward_normed(x.clone(), &self.ln_2, Some(act));
        (self.mlp_proj.forward_residual(h, x), kv)
    }
}

/// Keys and values of one layer, `[batch, heads, seq, head_dim]` each.
///
/// Held in buffers with room to grow: a decoding step writes its position in place (on wgpu inside
/// the decode-attention kernel, where concatenating copied the whole cache at every token), and a
/// full buffer doubles; several positions at once are concatenated. A buffer shared with another
/// cache (a clone) is copied before it is written (Burn writes in place only into a tensor nobody
/// else holds), so caches stay plain values.
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// `[batch, heads, capacity, head_dim]`, the first `len` positions filled.
    k: Tensor<4>,
    v: Tensor<4>,
    len: usize,
}

impl LayerKv {
    /// A cache holding exactly `k` and `v`: `[batch, heads, seq, head_dim]` each.
    pub fn new(k: Tensor<4>, v: Tensor<4>) -> Self {
        assert_eq!(k.dims(), v.dims(), "keys and values differ in shape");
        let len = k.dims()[2];
        Self { k, v, len }
    }

    /// Positions held.
    pub fn seq_len(&self) -> usize {
        self.len
    }

    /// `[batch, heads, seq, head_dim]`.
    pub fn keys(&self) -> Tensor<4> {
        Self::filled(&self.k, self.len)
    }

    /// `[batch, heads, seq, head_dim]`.
    pub fn values(&self) -> Tensor<4> {
        Self::filled(&self.v, self.len)
    }

    /// A full buffer as it is: Burn refuses to narrow to length 0, which an empty cache holds.
    fn filled(buffer: &Tensor<4>, len: usize) -> Tensor<4> {
        if buffer.dims()[2] == len { buffer.clone() } else { buffer.clone().narrow(2, 0, len) }
    }

    /// The cache with `k` and `v` (`[batch, heads, t, head_dim]`) after its positions, concatenated
    /// rather than written into room: under autodiff (a guided step reads its context after the
    /// prefix this way) a write into a buffer costs a zero fill and a write per tensor in each
    /// direction, where concatenation's backward only narrows the gradient.
    fn append(self, k: Tensor<4>, v: Tensor<4>) -> Self {
        if self.len == 0 {
            return Self::new(k, v);
        }
        Self::new(Tensor::cat(vec![self.keys(), k], 2), Tensor::cat(vec![self.values(), v], 2))
    }

    /// One decoding step: `qkv`, the fused projection of one new position (`[batch, 1, 3 d]`),
    /// attended against the cache and itself -> (`[batch, 1, d]`, the cache with it appended).
    fn attend_next(self, qkv: Tensor<3>, heads: usize, scale: f32) -> (Tensor<3>, Self) {
        let Self { k, v, len } = self.with_room(1);
        let (attended, k, v) = glimpse_kernels::decode_attention(qkv, heads, k, v, len, scale);
        (attended, Self { k, v, len: len + 1 })
    }

    /// The cache with buffers holding at least `t` more positions: a full one doubles, so the
    /// copy it costs is paid once per doubling, not per token.
    fn with_room(self, t: usize) -> Self {
        let [batch, heads, capacity, head_dim] = self.k.dims();
        let end = self.len + t;
        if end <= capacity {
            return self;
        }
        let room = end.max(2 * capacity) - self.len;
        let device = self.k.device();
        let grow =
            |filled: Tensor<4>| Tensor::cat(vec![filled, Tensor::zeros([batch, heads, room, head_dim], &device)], 2);
        Self { k: grow(self.keys()), v: grow(self.values()), len: self.len }
    }
}

/// Keys and values of everything the model has seen, for incremental decoding.
///
/// The cache is a plain value: cloning it is cheap (tensors are reference counted), so a search can
/// keep one per hypothesis.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// A cache made of given keys and values, one entry per layer (e.g. learnable prefixes).
    pub fn from_layers(layers: Vec<LayerKv>) -> Self {
        Self { layers }
    }

    pub fn layers(&self) -> &[LayerKv] {
        &self.layers
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::seq_len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the batch rows `rows` (e.g. the chosen candidate of a search step).
    pub fn select(&self, rows: Tensor<1, Int>) -> Self {
        let pick = |t: Tensor<4>| t.select(0, rows.clone());
        Self { layers: self.layers.iter().map(|kv| LayerKv::new(pick(kv.keys()), pick(kv.values()))).collect() }
    }

    /// Repeats every batch row `times` times (row-major: row 0 `times` times, then row 1, ...).
    pub fn repeat_rows(&self, times: usize) -> Self {
        let rep = |t: Tensor<4>| {
            let [b, h, s, d] = t.dims();
            t.unsqueeze_dim::<5>(1).expand([b, times, h, s, d]).reshape([b * times, h, s, d])
        };
        Self { layers: self.layers.iter().map(|kv| LayerKv::new(rep(kv.keys()), rep(kv.values()))).collect() }
    }
}

/// GPT-2 language model. Build it with [`Gpt2Config::init`] (random) or [`Gpt2::load`].
#[derive(Module, Debug)]
pub struct Gpt2 {
    wte: ShardedTable,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// Only for checkpoints with `tie_word_embeddings = false`: `[vocab, n_embd]`.
    lm_head: Option<ShardedTable>,
    #[module(skip)]
    n_head: usize,
    #[module(skip)]
    activation: Activation,
}

/// Elements of the LM head and the token embedding compared at a time.
const COMPARED_AT_ONCE: usize = 1 << 20;

/// A tied checkpoint may store `lm_head.weight` too, as long as it is the token `embedding`:
/// where the two differ, transformers 5 computes with the stored head and earlier versions with
/// the embedding, so the checkpoint means two models and is refused. (8-bit ones are not
/// compared: glimpse's conversion never stores a tied head.)
fn check_tied_head(file: &WeightFile, embedding: &str) -> Result<(), ModelError> {
    const HEAD: &str = "lm_head.weight";
    let (Some(head_shape), Some(embedding_shape)) = (file.shape(HEAD), file.shape(embedding)) else { return Ok(()) };
    if file.is_quantized(HEAD) || file.is_quantized(embedding) {
        return Ok(());
    }
    let refuse = |how: &str| {
        ModelError::InvalidConfig(format!(
            "tie_word_embeddings is true, but model.safetensors stores a `{HEAD}` {how} `{embedding}`: transformers \
             5 computes with the stored head there and earlier versions with the embedding. Set tie_word_embeddings \
             to false to use the stored head, or remove `{HEAD}` from the file to use the embedding"
        ))
    };
    if head_shape != embedding_shape {
        return Err(refuse(&format!("of shape {head_shape:?}, unlike the {embedding_shape:?} of")));
    }
    let unreadable = |problem| ModelError::WeightMismatch { problems: vec![problem], unexpected: Vec::new() };
    let count: usize = head_shape.iter().product();
    for start in (0..count).step_by(COMPARED_AT_ONCE) {
        let range = start..count.min(start + COMPARED_AT_ONCE);
        let head = file.read_f32_range(HEAD, range.clone()).map_err(unreadable)?;
        let embedding_values = file.read_f32_range(embedding, range).map_err(unreadable)?;
        // Bit for bit: a NaN in both is the same value here, and refused as not finite later.
        if head.iter().zip(&embedding_values).any(|(a, b)| a.to_bits() != b.to_bits()) {
            return Err(refuse("whose values differ from those of"));
        }
    }
    Ok(())
}

impl Gpt2 {
    /// Builds the model from `model.safetensors` bytes. Accepts both key forms of the hub
    /// (`h.0...` and `transformer.h.0...`), ignores the causal-mask buffers and, for tied
    /// checkpoints, a stored `lm_head.weight` that equals `wte` (one that differs is refused:
    /// [`check_tied_head`]).
    pub fn load(config: &Gpt2Config, safetensors: &[u8], device: &Device) -> Result<Self, ModelError> {
        Self::load_weights(config, &WeightFile::parse(safetensors)?, device)
    }

    /// As [`Gpt2::load`], from a parsed (or opened) weight file; tensors are read one at a time.
    pub fn load_weights(config: &Gpt2Config, file: &WeightFile, device: &Device) -> Result<Self, ModelError> {
        config.validate()?;
        let loader = Loader::new(file, device);
        // By every name, not one: a file missing `transformer.wte.weight` names that one tensor.
        let lm_head_model = file.names().iter().any(|name| name.starts_with("transformer."));
        let prefix = if lm_head_model { "transformer." } else { "" };
        if config.tie_word_embeddings {
            check_tied_head(file, &format!("{prefix}wte.weight"))?;
        }
        let mut model = config.init(device);
        model.walk(&loader, prefix);
        let tied = config.tie_word_embeddings;
        loader.finish(|name| {
            name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || (tied && name == "lm_head.weight")
        })?;
        Ok(model)
    }

    /// The model as `model.safetensors` bytes in `GPT2LMHeadModel`'s naming (`transformer.*`, and
    /// `lm_head.weight` only when untied): the inverse of [`Gpt2::load`].
    pub async fn to_safetensors(&self) -> Result<Vec<u8>, ModelError> {
        self.to_safetensors_as(WeightFormat::F32).await
    }

    /// As [`Self::to_safetensors`], stored in `format` (`glimpse models convert`).
    pub async fn to_safetensors_as(&self, format: WeightFormat) -> Result<Vec<u8>, ModelError> {
        let saver = Saver::new(format);
        self.clone().walk(&saver, "transformer.");
        saver.to_safetensors(crate::weights::pytorch_metadata()).await
    }

    fn walk(&mut self, tensors: &impl Tensors, prefix: &str) {
        tensors.sharded(&format!("{prefix}wte.weight"), &mut self.wte);
        tensors.embedding(&format!("{prefix}wpe"), &mut self.wpe);
        for (i, block) in self.blocks.iter_mut().enumerate() {
            block.walk(tensors, &format!("{prefix}h.{i}."));
        }
        tensors.layer_norm(&format!("{prefix}ln_f"), &mut self.ln_f);
        if let Some(head) = self.lm_head.as_mut() {
            tensors.sharded("lm_head.weight", head);
        }
    }

    pub fn n_positions(&self) -> usize {
        self.wpe.weight.lazy_shape().dims::<2>()[0]
    }

    pub fn n_embd(&self) -> usize {
        self.wte.dim()
    }

    pub fn vocab_size(&self) -> usize {
        self.wte.rows()
    }

    /// Token embeddings without positions: `[batch, t]` -> `[batch, t, n_embd]`.
    pub fn embed_tokens(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.wte.lookup(ids)
    }

    /// [`Gpt2::embed_tokens`] of ids the host holds, laid out as `shape` (`[batch, t]`): fewer
    /// kernels where the token table spans several blocks (GPT-2 small's does on wgpu).
    pub fn embed_ids(&self, ids: &[u32], shape: [usize; 2], device: &Device) -> Tensor<3> {
        self.wte.lookup_ids(ids, shape, device)
    }

    /// Runs the decoder over input embeddings that follow the cached positions, and extends the
    /// cache. `embeds`: `[batch, t, n_embd]` -> last hidden state after `ln_f`, `[batch, t, n_embd]`.
    ///
    /// # Panics
    /// If the cache plus `t` exceeds `n_positions`; callers check lengths up front
    /// (see [`Gpt2::check_length`]).
    pub fn forward_embeds(&self, embeds: Tensor<3>, cache: &mut KvCache) -> Tensor<3> {
        let past = std::mem::take(cache);
        let (hidden, layers) = self.run(embeds, past, true);
        cache.layers = layers;
        hidden
    }

    /// [`Gpt2::forward_embeds`] after `past` without extending a cache: on wgpu each layer's
    /// attention then reads the cache where it lies, where keeping the cache would concatenate it
    /// with the new positions' keys and values (four launches per layer, and their gradients' under
    /// autodiff). For passes whose cache nobody reads again (a guided step's).
    pub fn forward_after(&self, embeds: Tensor<3>, past: &KvCache) -> Tensor<3> {
        self.run(embeds, past.clone(), false).0
    }

    /// The decoder over `embeds` after `past`: the last hidden state, and with `keep` the cache
    /// extended by them.
    fn run(&self, embeds: Tensor<3>, past: KvCache, keep: bool) -> (Tensor<3>, Vec<LayerKv>) {
        let [b, t, _] = embeds.dims();
        let past_len = past.len();
        assert!(past_len + t <= self.n_positions(), "sequence longer than n_positions");
        let device = embeds.device();
        let positions = Tensor::<1, Int>::arange(past_len as i64..(past_len + t) as i64, &device);
        let positions = positions.unsqueeze::<2>().expand([b, t]);
        let mut x = embeds + self.wpe.forward(positions);
        let mut layers = Vec::with_capacity(if keep { self.blocks.len() } else { 0 });
        let mut pasts = past.layers.into_iter();
        let causal = (t > 1).then(|| CausalMask::new(t, past_len, &device));
        let mask = causal.as_ref().map_or(Mask::All, Mask::Causal);
        for block in &self.blocks {
            let (next, kv) = block.forward(x, pasts.next(), keep, mask, (self.n_head, self.activation));
            x = next;
            layers.extend(kv);
        }
        (self.ln_f.forward(x), layers)
    }

    /// `ids`: `[batch, t]` -> last hidden state `[batch, t, n_embd]`, extending `cache`.
    pub fn forward_ids(&self, ids: Tensor<2, Int>, cache: &mut KvCache) -> Tensor<3> {
        self.forward_embeds(self.embed_tokens(ids), cache)
    }

    /// Next-token logits from hidden states: `[batch, t, n_embd]` -> `[batch, t, vocab]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.lm_head.as_ref().unwrap_or(&self.wte).project(hidden)
    }

    /// Logits for a whole sequence without a cache: `[batch, t]` -> `[batch, t, vocab]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.logits(self.forward_after(self.embed_tokens(ids), &KvCache::new()))
    }

    /// Checks that every id has a row in the token table (a gather beyond it panics in Burn).
    pub fn check_ids(&self, ids: &[u32]) -> Result<(), ModelError> {
        let vocab = self.vocab_size();
        match ids.iter().find(|&&id| id as usize >= vocab) {
            Some(id) => Err(ModelError::Input(format!("token id {id} is outside the vocabulary of {vocab}"))),
            None => Ok(()),
        }
    }

    /// Checks that `total` positions fit the position table, with an error a user can act on.
    pub fn check_length(&self, total: usize) -> Result<(), ModelError> {
        let max = self.n_positions();
        if total > max {
            return Err(ModelError::Input(format!(
                "prompt plus new tokens need {total} positions but the model has only {max} (n_positions); \
                 shorten the prompt or ask for fewer new tokens"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_token_ids_must_lie_in_the_vocabulary() {
        let json = |extra: &str| {
            format!(r#"{{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 1{extra}}}"#)
        };
        let ok =
            Gpt2Config::from_json(json(r#", "eos_token_id": 9, "bos_token_id": 9, "pad_token_id": null"#).as_bytes());
        assert!(ok.is_ok());
        for field in ["eos_token_id", "bos_token_id", "pad_token_id"] {
            let err = Gpt2Config::from_json(json(&format!(r#", "{field}": 10"#)).as_bytes()).unwrap_err().to_string();
            assert!(err.contains(&format!("{field} = 10 is outside the vocabulary")), "{err}");
        }
        // Ids read only to be checked are written back only when present.
        assert!(!Gpt2Config::gpt2_small().to_json().contains("bos_token_id"));
        // A value of another type is named by its field (serde alone gives a line and a column).
        let err = Gpt2Config::from_json(json(r#", "eos_token_id": "9""#).as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with(r#"config.json: eos_token_id: "9" is no token id"#), "{err}");
        // transformers' list of end tokens: one is read, several are refused with what to do.
        let one = Gpt2Config::from_json(json(r#", "eos_token_id": [9]"#).as_bytes()).unwrap();
        assert_eq!(one.eos_token_id, Some(9));
        let err = Gpt2Config::from_json(json(r#", "eos_token_id": [9, 8]"#).as_bytes()).unwrap_err().to_string();
        assert!(
            err.starts_with("config.json: eos_token_id: [9,8] names 2 end tokens") && err.contains("set it to"),
            "{err}"
        );
    }

    #[test]
    fn activations_are_read_by_their_hugging_face_names() {
        for (names, activation) in [
            (&["quick_gelu"][..], Activation::QuickGelu),
            (&["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu_python_tanh"], Activation::GeluTanh),
            (&["gelu", "gelu_python"], Activation::Gelu),
            (&["relu"], Activation::Relu),
            (&["silu", "swish"], Activation::Silu),
        ] {
            for name in names {
                let json = format!(
                    r#"{{"vocab_size": 10, "n_positions": 8, "n_embd": 4, "n_layer": 1, "n_head": 1, "activation_function": "{name}"}}"#
                );
                assert_eq!(Gpt2Config::from_json(json.as_bytes()).unwrap().activation_function, activation, "{name}");
            }
        }
    }

    #[test]
    fn attention_scales_as_the_config_says() {
        // head_dim 64: 1/8, divided by the layer's number under scale_attn_by_inverse_layer_idx.
        let mut config = Gpt2Config::gpt2_small();
        assert_eq!(config.attention_scale(5), 0.125);
        config.scale_attn_by_inverse_layer_idx = true;
        assert_eq!(config.attention_scale(0), 0.125);
        assert_eq!(config.attention_scale(3), 0.125 / 4.0);
        config.scale_attn_weights = false;
        assert_eq!(config.attention_scale(1), 0.5);
    }
}
