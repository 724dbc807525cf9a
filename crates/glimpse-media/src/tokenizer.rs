//! Tokenizers from Hugging Face `tokenizer.json` files, through the `tokenizers` crate (its
//! `unstable_wasm` feature set, which builds natively and for wasm32).
//!
//! The crate panics on some malformed files instead of failing (a `Precompiled` normalizer whose
//! charsmap does not parse at load; one whose trie is corrupt at the first encode). The known
//! trigger is refused before the file reaches the crate, every call into it runs behind
//! [`decoding`], and a probe encode at load makes a broken tokenizer fail there, not mid-caption.

use serde_json::Value;
use tokenizers::normalizers::Precompiled;
use tokenizers::{PostProcessor, Tokenizer, TruncationParams};

use crate::MediaError;
use crate::untrusted::{check_json_object, decoding};

/// Runs a call into the `tokenizers` crate: `Ok` holds the crate's own result, `Err` a panic in it.
fn call<T>(f: impl FnOnce() -> tokenizers::Result<T>) -> Result<tokenizers::Result<T>, MediaError> {
    decoding("the tokenizers library", || Ok(f())).map_err(|_| {
        MediaError::Tokenizer(
            "the tokenizers library failed on it: the file is damaged or of a kind glimpse cannot read; \
             re-export it from the model's tokenizer"
                .into(),
        )
    })
}

/// [`call`] with the crate's errors as ours.
fn guarded<T>(f: impl FnOnce() -> tokenizers::Result<T>) -> Result<T, MediaError> {
    call(f)?.map_err(|e| MediaError::Tokenizer(e.to_string()))
}

/// The longest text tokenized: CLIP reads its first 77 tokens and GPT-2 at most its positions
/// (1024 for GPT-2 small, a few KiB of text), while tokenizing takes memory in proportion (a
/// 52 MB text held 3 GB).
pub const MAX_TEXT_BYTES: usize = 64 << 10;

/// The longest text a tokenizer's normalizer may make of one, in bytes. A normalizer multiplies
/// the text before any bound can be checked (forty `Replace`s of `a` by `aa` make 2^40 bytes of
/// one `a`), so each tokenizer takes a text shorter than [`MAX_TEXT_BYTES`] by the most its
/// normalizer can multiply it ([`normalizer_growth`]).
const MAX_NORMALIZED_BYTES: usize = 4 << 20;

/// The shortest text bound a tokenizer may leave: a few sentences.
const MIN_TEXT_BYTES: usize = 1 << 10;

/// The most times longer a tokenizer's decoder may make its tokens' text. A decoder runs on
/// generated ids, whose count the model bounds, but its steps multiply text as a normalizer's do
/// (forty `Replace`s of `a` by `aa` make 2^40 bytes of one token); a model's own decoder shortens
/// its tokens or adds a space between them (at most 3x, [`decoder_growth`]).
const MAX_DECODER_GROWTH: f64 = 16.0;

/// A parsed tokenizer and the longest text (in bytes) it takes.
struct BoundedTokenizer {
    tokenizer: Tokenizer,
    max_text_bytes: usize,
}

impl BoundedTokenizer {
    fn parse(json: &[u8]) -> Result<Self, MediaError> {
        let value: Value = serde_json::from_slice(json).map_err(|e| MediaError::Tokenizer(e.to_string()))?;
        check_json_object(&value).map_err(MediaError::Tokenizer)?;
        // Before the crate reads the file: the walk refuses what would make it panic.
        let growth = normalizer_growth(&value["normalizer"])?;
        let decoder_growth = decoder_growth(&value["decoder"])?;
        if decoder_growth > MAX_DECODER_GROWTH {
            return Err(MediaError::Tokenizer(format!(
                "its decoder can make a token's text {decoder_growth:.3e} times longer (Replace steps that add more \
                 than they take); no model's tokenizer does that: re-export tokenizer.json from the model's tokenizer"
            )));
        }
        let tokenizer = guarded(|| Tokenizer::from_bytes(json))?;
        let max_text_bytes = (MAX_NORMALIZED_BYTES as f64 / growth).min(MAX_TEXT_BYTES as f64) as usize;
        if max_text_bytes < MIN_TEXT_BYTES {
            return Err(MediaError::Tokenizer(format!(
                "its normalizer can make a text {growth:.3e} times longer (Replace or Prepend steps that add more \
                 than they take), which would leave glimpse {max_text_bytes} bytes of text to tokenize; no model's \
                 tokenizer does that: re-export tokenizer.json from the model's tokenizer"
            )));
        }
        Ok(Self { tokenizer, max_text_bytes })
    }

    /// Ids of `text` with the special tokens the file's post-processor adds.
    fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        if text.len() > self.max_text_bytes {
            let why = if self.max_text_bytes < MAX_TEXT_BYTES {
                "with this tokenizer, whose normalizer can make a text longer"
            } else {
                "(the models read a few hundred words at most)"
            };
            return Err(MediaError::Text(format!(
                "a text of {} bytes, more than the {} bytes glimpse tokenizes {why}; shorten it",
                text.len(),
                self.max_text_bytes
            )));
        }
        guarded(|| Ok(self.tokenizer.encode(text, true)?.get_ids().to_vec()))
    }
}

/// The most times longer, in bytes, `normalizer` (tokenizer.json's) can make a text: a sequence
/// multiplies its steps' bounds. A kind glimpse cannot bound is refused, and so is a `Precompiled`
/// normalizer whose charsmap does not parse, which the crate `expect`s to.
fn normalizer_growth(normalizer: &Value) -> Result<f64, MediaError> {
    let length = |field: &str| normalizer[field].as_str().map_or(0, str::len) as f64;
    Ok(match normalizer["type"].as_str() {
        None if normalizer.is_null() => 1.0,
        // The crate reads a step without a type by its fields (a Replace among them).
        None => return Err(untyped("normalizer")),
        Some("Sequence") => {
            let steps = normalizer["normalizers"].as_array().into_iter().flatten();
            steps.map(normalizer_growth).product::<Result<f64, _>>()?
        }
        Some("Replace") => replace_growth(normalizer),
        // Once before each piece of text between added tokens (a byte at the least).
        Some("Prepend") => 1.0 + length("prepend"),
        // Each byte becomes a character of at most two bytes.
        Some("ByteLevel") => 2.0,
        // UAX #15's bounds in UTF-8 bytes, 3x canonically and 11x by compatibility (U+FDFA),
        // rounded up; lowercasing makes at most 3 bytes of a byte.
        Some("NFC" | "NFD") => 4.0,
        Some("NFKC" | "NFKD") => 18.0,
        Some("Lowercase") => 3.0,
        // Spaces around each CJK character, accents stripped by decomposing, lowercase.
        Some("BertNormalizer") => 2.0 * 4.0 * 3.0,
        // Each character or grapheme becomes one of the charsmap's replacements.
        Some("Precompiled") => {
            // From text, as the crate parses it: the charsmap deserialises from a borrowed string.
            if let Err(e) = serde_json::from_str::<Precompiled>(&normalizer.to_string()) {
                return Err(MediaError::Tokenizer(format!(
                    "the Precompiled normalizer's precompiled_charsmap is unreadable ({e}); re-export tokenizer.json \
                     from the model's tokenizer"
                )));
            }
            precompiled_longest_replacement(normalizer)?.max(1) as f64
        }
        // They remove characters or put one no longer in their place.
        Some("Strip" | "StripAccents" | "Nmt") => 1.0,
        Some(other) => {
            return Err(MediaError::Tokenizer(format!(
                "its normalizer {} is of a kind glimpse cannot bound; re-export tokenizer.json from the model's tokenizer",
                crate::untrusted::quoted(other)
            )));
        }
    })
}

/// How many times longer a `Replace` step (of a normalizer or a decoder) can make a text: each
/// match of a string becomes `content`; a regex may also match the empty string before each byte
/// and at the end (a text of one byte gains `content` twice).
fn replace_growth(step: &Value) -> f64 {
    let content = step["content"].as_str().map_or(0, str::len) as f64;
    match step["pattern"]["String"].as_str() {
        Some(pattern) if !pattern.is_empty() => (content / pattern.len() as f64).max(1.0),
        _ => 1.0 + 2.0 * content,
    }
}

/// A normalizer's or decoder's step without a `type`, which glimpse cannot bound.
fn untyped(part: &str) -> MediaError {
    MediaError::Tokenizer(format!(
        "a step of its {part} has no type, so glimpse cannot bound it; re-export tokenizer.json from the model's \
         tokenizer"
    ))
}

/// The most times longer, in bytes, `decoder` (tokenizer.json's) can make the text of its tokens
/// (each at least a byte): a sequence multiplies its steps' bounds. A kind glimpse cannot bound is
/// refused.
fn decoder_growth(decoder: &Value) -> Result<f64, MediaError> {
    Ok(match decoder["type"].as_str() {
        None if decoder.is_null() => 1.0,
        None => return Err(untyped("decoder")),
        Some("Sequence") => {
            let steps = decoder["decoders"].as_array().into_iter().flatten();
            steps.map(decoder_growth).product::<Result<f64, _>>()?
        }
        Some("Replace") => replace_growth(decoder),
        // An empty suffix (BPE) or word delimiter (CTC) becomes a space between any two bytes.
        Some("BPEDecoder" | "CTC") => 3.0,
        // A space before each token; a lone byte of a byte-level token (a 2-byte character) may
        // become U+FFFD (3 bytes).
        Some("WordPiece" | "ByteLevel") => 2.0,
        // They join tokens, remove characters, or put one no longer in their place.
        Some("Metaspace" | "Fuse" | "Strip" | "ByteFallback") => 1.0,
        Some(other) => {
            return Err(MediaError::Tokenizer(format!(
                "its decoder {} is of a kind glimpse cannot bound; re-export tokenizer.json from the model's tokenizer",
                crate::untrusted::quoted(other)
            )));
        }
    })
}

/// The longest replacement of a `Precompiled` normalizer's charsmap, in bytes. The charsmap is
/// a little-endian u32 (the trie's size in bytes), the trie, then the replacements, each ended
/// by a NUL byte.
fn precompiled_longest_replacement(normalizer: &Value) -> Result<usize, MediaError> {
    use base64::Engine;
    let unreadable = || {
        MediaError::Tokenizer(
            "the Precompiled normalizer's precompiled_charsmap is unreadable; re-export tokenizer.json from the \
             model's tokenizer"
                .into(),
        )
    };
    let encoded = normalizer["precompiled_charsmap"].as_str().ok_or_else(unreadable)?;
    let charsmap = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| unreadable())?;
    let trie_bytes =
        charsmap.first_chunk::<4>().map(|size| u32::from_le_bytes(*size) as usize).ok_or_else(unreadable)?;
    let replacements = charsmap.get(4 + trie_bytes / 4 * 4..).ok_or_else(unreadable)?;
    Ok(replacements.split(|&byte| byte == 0).map(<[u8]>::len).max().unwrap_or(0))
}

/// What encoding tells of `tokenizer`: the largest id it can produce (its vocabulary with the
/// added tokens, and the special tokens its post-processor inserts, seen by encoding an empty
/// text), and the token its post-processor ends a text with, if any: the empty text's last special
/// token where a text's ids end with it too (a template that only puts tokens before the text ends
/// it with none). Encoding a text also makes a tokenizer that panics on any input fail here; its
/// `Err`s are ignored (a word-level vocabulary may refuse the probe's words).
fn probe(tokenizer: &Tokenizer) -> Result<(Option<u32>, Option<u32>), MediaError> {
    let specials = call(|| tokenizer.encode("", true))?.map(|e| e.get_ids().to_vec()).unwrap_or_default();
    let text = call(|| tokenizer.encode("A probe: 1 photo, two words.", true))?.ok().map(|e| e.get_ids().to_vec());
    let last = specials.last().copied();
    let end = match text {
        Some(ids) if ids.len() > specials.len() => last.filter(|id| ids.last() == Some(id)),
        _ => last,
    };
    Ok((tokenizer.get_vocab(true).into_values().chain(specials).max(), end))
}

/// The least share of a model's token table its tokenizer must name. A model's own tokenizer names
/// all of it, or nearly (a table padded to a multiple of 64 or 128 leaves a few rows unnamed); one
/// that names much less is another model's, whose ids decode to nothing (a caption of no words).
const MIN_VOCAB_COVERED: f64 = 0.9;

/// Refuses a tokenizer that can produce ids beyond the model's token table of `vocab_size` rows,
/// or that names too little of it ([`MIN_VOCAB_COVERED`]).
fn check_vocab(largest_id: Option<u32>, vocab_size: usize) -> Result<(), MediaError> {
    let named = largest_id.map_or(0, |id| id as usize + 1);
    if named > vocab_size {
        return Err(MediaError::Tokenizer(format!(
            "it produces token id {}, but the model's vocabulary has {vocab_size} entries (vocab_size in \
             config.json); tokenizer.json and config.json come from different models",
            named - 1
        )));
    }
    if (named as f64) < MIN_VOCAB_COVERED * vocab_size as f64 {
        return Err(MediaError::Tokenizer(format!(
            "its largest id is {}, of the model's {vocab_size} (vocab_size in config.json), where a model's own \
             tokenizer names all or nearly all of them; tokenizer.json and config.json come from different models",
            named.saturating_sub(1)
        )));
    }
    Ok(())
}

/// CLIP's tokenizer: start and end tokens as the file's post-processor defines them, truncated
/// to the context length with the end token kept.
pub struct ClipTokenizer {
    inner: BoundedTokenizer,
    largest_id: Option<u32>,
    /// The token the post-processor ends a text with, where CLIP pools.
    end_id: Option<u32>,
}

impl ClipTokenizer {
    pub fn from_json(json: &[u8], context_length: usize) -> Result<Self, MediaError> {
        let mut inner = BoundedTokenizer::parse(json)?;
        // Truncation keeps room for the special tokens; the crate subtracts them unchecked.
        let specials = inner.tokenizer.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if context_length <= specials {
            return Err(MediaError::Tokenizer(format!(
                "its post-processor adds {specials} special tokens, which leaves no room for text in the model's \
                 context of {context_length} (text_config.max_position_embeddings in config.json)"
            )));
        }
        let truncation = TruncationParams { max_length: context_length, ..Default::default() };
        guarded(|| inner.tokenizer.with_truncation(Some(truncation)).map(|_| ()))?;
        inner.tokenizer.with_padding(None);
        let (largest_id, end_id) = probe(&inner.tokenizer)?;
        Ok(Self { inner, largest_id, end_id })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        self.inner.encode(text)
    }

    /// Refuses a tokenizer that can produce ids beyond the model's `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), MediaError> {
        check_vocab(self.largest_id, vocab_size)
    }

    /// Refuses a tokenizer whose texts CLIP would pool at the wrong position. CLIP pools at the
    /// end token the post-processor appends: the one config.json's `text_config.eos_token_id`
    /// names, or, for the legacy value (`None`), the largest id. Another model's tokenizer, or one
    /// that appends no end token, gives every text much the same embedding.
    pub fn check_end_token(&self, eos_token_id: Option<u32>) -> Result<(), MediaError> {
        let Some(end) = self.end_id else {
            return Err(MediaError::Tokenizer(
                "its post-processor appends no end token, where CLIP reads a text's embedding; re-export \
                 tokenizer.json from the model's tokenizer"
                    .into(),
            ));
        };
        match eos_token_id {
            Some(eos) if eos != end => Err(MediaError::Tokenizer(format!(
                "it ends a text with token {end}, but config.json's text_config.eos_token_id = {eos}, the token \
                 CLIP reads a text's embedding at: tokenizer.json and config.json come from different models"
            ))),
            None if self.largest_id != Some(end) => Err(MediaError::Tokenizer(format!(
                "it ends a text with token {end}, but config.json's legacy text_config.eos_token_id = 2 reads a \
                 text's embedding at its largest id, {}: tokenizer.json and config.json come from different \
                 models (or set eos_token_id to {end})",
                self.largest_id.unwrap_or(0)
            ))),
            _ => Ok(()),
        }
    }
}

/// GPT-2's byte-level BPE tokenizer. Encoding adds exactly what the file says (for GPT-2: nothing,
/// as transformers' `generate` receives it).
pub struct Gpt2Tokenizer {
    inner: BoundedTokenizer,
    largest_id: Option<u32>,
}

impl Gpt2Tokenizer {
    pub fn from_json(json: &[u8]) -> Result<Self, MediaError> {
        let mut inner = BoundedTokenizer::parse(json)?;
        inner.tokenizer.with_padding(None);
        guarded(|| inner.tokenizer.with_truncation(None).map(|_| ()))?;
        let (largest_id, _) = probe(&inner.tokenizer)?;
        Ok(Self { inner, largest_id })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        self.inner.encode(text)
    }

    /// Text of `ids`, special tokens included (as transformers' `decode` by default).
    pub fn decode(&self, ids: &[u32]) -> Result<String, MediaError> {
        guarded(|| self.inner.tokenizer.decode(ids, false))
    }

    /// Refuses a tokenizer that can produce ids beyond the model's `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), MediaError> {
        check_vocab(self.largest_id, vocab_size)
    }

    /// Refuses a special token id (named by its config.json `field`) that is no token of this
    /// tokenizer: one from another model fits a vocabulary as large (CLIP's 49408 ids fit GPT-2's
    /// 50257) but lacks its special tokens.
    pub fn check_special_id(&self, field: &str, id: u32) -> Result<(), MediaError> {
        if self.inner.tokenizer.id_to_token(id).is_some() {
            return Ok(());
        }
        Err(MediaError::Tokenizer(format!(
            "it has no token {id}, which config.json's {field} names: the tokenizer belongs to another model"
        )))
    }

    /// A decoder for ids that arrive one at a time (streamed generation).
    pub fn stream(&self) -> TextStream<'_> {
        TextStream { tokenizer: self, ids: Vec::new(), context: 0, given: 0 }
    }
}

/// The text of ids that arrive one at a time, given out piece by piece: each id yields what it
/// adds to the decoded text. A byte-level token may end inside a UTF-8 character; its piece waits
/// until the character is whole. Each step decodes only the ids since the last piece given out
/// (and the piece before, for context), so a long generation costs no more per token than a short
/// one.
pub struct TextStream<'a> {
    tokenizer: &'a Gpt2Tokenizer,
    ids: Vec<u32>,
    /// `ids[context..given]` were given out with the last piece; `ids[given..]` are pending.
    context: usize,
    given: usize,
}

impl TextStream<'_> {
    /// The ids so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// What `id` adds to the text; empty while a character is incomplete.
    pub fn push(&mut self, id: u32) -> Result<String, MediaError> {
        self.ids.push(id);
        let piece = self.pending()?;
        if piece.is_empty() || piece.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        (self.context, self.given) = (self.given, self.ids.len());
        Ok(piece)
    }

    /// What of the whole text has not been given out yet.
    pub fn rest(&self) -> Result<String, MediaError> {
        self.pending()
    }

    /// The text of the pending ids: what they add after the last piece given out.
    fn pending(&self) -> Result<String, MediaError> {
        let before = self.tokenizer.decode(&self.ids[self.context..self.given])?;
        let text = self.tokenizer.decode(&self.ids[self.context..])?;
        Ok(text.strip_prefix(before.as_str()).unwrap_or("").to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer.json over `a b c` (ids 0-2, unknown words 3) with `normalizer` and
    /// `post_processor` as given.
    fn tokenizer_json(normalizer: &str, post_processor: &str) -> Vec<u8> {
        format!(
            r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
                "normalizer": {normalizer}, "pre_tokenizer": {{"type": "Whitespace"}},
                "post_processor": {post_processor}, "decoder": null,
                "model": {{"type": "WordLevel", "vocab": {{"a": 0, "b": 1, "c": 2, "<unk>": 3}}, "unk_token": "<unk>"}}}}"#
        )
        .into_bytes()
    }

    /// Start token 7 and end token 9, outside the vocabulary proper.
    const TEMPLATE: &str = r#"{"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "</s>", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [9], "tokens": ["</s>"]}}}"#;

    fn error(result: Result<impl Sized, MediaError>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn precompiled_normalizers_that_would_panic_are_errors() {
        // An empty charsmap does not parse: refused before the tokenizers crate `expect`s it.
        let empty = tokenizer_json(r#"{"type": "Precompiled", "precompiled_charsmap": ""}"#, "null");
        assert!(error(Gpt2Tokenizer::from_json(&empty)).contains("precompiled_charsmap is unreadable"));
        let nested = r#"{"type": "Sequence", "normalizers": [{"type": "Lowercase"},
                         {"type": "Precompiled", "precompiled_charsmap": "not base64!"}]}"#;
        assert!(error(ClipTokenizer::from_json(&tokenizer_json(nested, "null"), 8)).contains("unreadable"));
        // A charsmap with an empty trie parses, then panics on the first encode: the probe at load
        // turns that into an error.
        let empty_trie = tokenizer_json(r#"{"type": "Precompiled", "precompiled_charsmap": "AAAAAA=="}"#, "null");
        assert!(error(Gpt2Tokenizer::from_json(&empty_trie)).contains("the tokenizers library failed on it"));
    }

    #[test]
    fn clip_context_must_hold_the_special_tokens_and_some_text() {
        let json = tokenizer_json("null", TEMPLATE);
        assert!(error(ClipTokenizer::from_json(&json, 2)).contains("adds 2 special tokens"));
        let tokenizer = ClipTokenizer::from_json(&json, 3).unwrap();
        assert_eq!(tokenizer.encode("a b c").unwrap(), [7, 0, 9]);
        // A text past the bound is refused before it is tokenized; one at it is read.
        let longest = "a ".repeat(MAX_TEXT_BYTES / 2);
        assert_eq!(tokenizer.encode(&longest).unwrap().len(), 3);
        let err = error(tokenizer.encode(&format!("{longest}b")));
        assert!(
            err.contains(&format!("a text of {} bytes", MAX_TEXT_BYTES + 1)) && err.contains("shorten it"),
            "{err}"
        );
    }

    #[test]
    fn a_normalizer_that_multiplies_text_shortens_what_is_tokenized_or_is_refused() {
        let doubling = r#"{"type": "Replace", "pattern": {"String": "a"}, "content": "aa"}"#;
        let doublings =
            |n: usize| format!(r#"{{"type": "Sequence", "normalizers": [{}]}}"#, vec![doubling; n].join(","));
        // 2^40 bytes of one `a`: refused at load, before any text meets it.
        let err = error(Gpt2Tokenizer::from_json(&tokenizer_json(&doublings(40), "null")));
        assert!(err.contains("normalizer can make a text 1.100e12 times longer"), "{err}");
        assert!(error(ClipTokenizer::from_json(&tokenizer_json(&doublings(40), "null"), 8)).contains("times longer"));
        // 2^8: 4 MiB of normalized text is 16 KiB of input.
        let tokenizer = Gpt2Tokenizer::from_json(&tokenizer_json(&doublings(8), "null")).unwrap();
        let longest = "b ".repeat((MAX_NORMALIZED_BYTES >> 8) / 2);
        assert_eq!(tokenizer.encode(&longest).unwrap().len(), longest.len() / 2);
        let err = error(tokenizer.encode(&format!("{longest}b")));
        assert!(
            err.contains(&format!("more than the {} bytes glimpse tokenizes with this tokenizer", 16 << 10)),
            "{err}"
        );
        // A regex may match the empty string before every byte; Prepend adds before each piece.
        let inserting = r#"{"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": ""}, "content": "xyz"},
            {"type": "Prepend", "prepend": "____"}, {"type": "NFKC"}]}"#;
        let value: Value = serde_json::from_str(inserting).unwrap();
        assert_eq!(normalizer_growth(&value).unwrap(), 7.0 * 5.0 * 18.0);
        // A step without a type, which the crate would read by its fields, is refused.
        let untyped = r#"{"type": "Sequence", "normalizers": [{"pattern": {"String": "a"}, "content": "aa"}]}"#;
        let err = error(Gpt2Tokenizer::from_json(&tokenizer_json(untyped, "null")));
        assert!(err.contains("a step of its normalizer has no type"), "{err}");
        // A charsmap: the trie's size (one 4-byte unit), the trie, then its replacements.
        use base64::Engine;
        let charsmap = [&4u32.to_le_bytes()[..], &[0; 4], b"ab\0xyzxyz\0q\0"].concat();
        let encoded = base64::engine::general_purpose::STANDARD.encode(charsmap);
        let precompiled = serde_json::json!({"type": "Precompiled", "precompiled_charsmap": encoded});
        assert_eq!(normalizer_growth(&precompiled).unwrap(), 6.0);
        // CLIP's own (NFC, whitespace runs to one space, lowercase) leaves the whole bound.
        let clip = r#"{"type": "Sequence", "normalizers": [{"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}, {"type": "Lowercase"}]}"#;
        let tokenizer = Gpt2Tokenizer::from_json(&tokenizer_json(clip, "null")).unwrap();
        assert!(tokenizer.encode(&"a ".repeat(MAX_TEXT_BYTES / 2)).is_ok());
    }

    #[test]
    fn a_decoder_that_multiplies_text_is_refused() {
        let with_decoder = |decoder: &str| {
            let json = String::from_utf8(tokenizer_json("null", "null")).unwrap();
            json.replace(r#""decoder": null"#, &format!(r#""decoder": {decoder}"#)).into_bytes()
        };
        let doubling = r#"{"type": "Replace", "pattern": {"String": "a"}, "content": "aa"}"#;
        let doublings = |n: usize| format!(r#"{{"type": "Sequence", "decoders": [{}]}}"#, vec![doubling; n].join(","));
        // 2^40 bytes of one token: refused at load, before any id is decoded.
        let err = error(Gpt2Tokenizer::from_json(&with_decoder(&doublings(40))));
        assert!(err.contains("decoder can make a token's text 1.100e12 times longer"), "{err}");
        // 16x is within the bound and decodes; 32x is not.
        let tokenizer = Gpt2Tokenizer::from_json(&with_decoder(&doublings(4))).unwrap();
        assert_eq!(tokenizer.decode(&[0]).unwrap(), "a".repeat(16));
        let err = error(Gpt2Tokenizer::from_json(&with_decoder(&doublings(5))));
        assert!(err.contains("3.200e1 times longer"), "{err}");
        // GPT-2's, CLIP's, and a SentencePiece model's decoders.
        for decoder in [
            r#"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#,
            r#"{"type": "BPEDecoder", "suffix": "</w>"}"#,
            r#"{"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}"#,
        ] {
            assert!(Gpt2Tokenizer::from_json(&with_decoder(decoder)).is_ok(), "{decoder}");
        }
        let untyped = r#"{"type": "Sequence", "decoders": [{"pattern": {"String": "a"}, "content": "aa"}]}"#;
        assert!(error(Gpt2Tokenizer::from_json(&with_decoder(untyped))).contains("a step of its decoder has no type"));
        let unknown = r#"{"type": "Sequence", "decoders": [{"type": "Magic"}]}"#;
        assert!(error(Gpt2Tokenizer::from_json(&with_decoder(unknown))).contains("decoder Magic is of a kind"));
    }

    #[test]
    fn clip_pools_at_the_end_token_config_json_names() {
        let templated = ClipTokenizer::from_json(&tokenizer_json("null", TEMPLATE), 8).unwrap();
        assert!(templated.check_end_token(Some(9)).is_ok());
        // The legacy value pools at the largest id, which the end token is.
        assert!(templated.check_end_token(None).is_ok());
        let err = error(templated.check_end_token(Some(1)));
        assert!(err.contains("ends a text with token 9") && err.contains("eos_token_id = 1"), "{err}");
        // End token 2 below start token 7: the largest id is not where the text ends.
        let low_end = TEMPLATE.replace(r#""ids": [9]"#, r#""ids": [2]"#);
        let err = error(ClipTokenizer::from_json(&tokenizer_json("null", &low_end), 8).unwrap().check_end_token(None));
        assert!(err.contains("legacy") && err.contains("largest id, 7"), "{err}");
        let plain = ClipTokenizer::from_json(&tokenizer_json("null", "null"), 8).unwrap();
        assert!(error(plain.check_end_token(Some(2))).contains("appends no end token"));
        // A start token alone ends no text.
        let start_only = r#"{"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}}"#;
        let prepending = ClipTokenizer::from_json(&tokenizer_json("null", start_only), 8).unwrap();
        assert!(error(prepending.check_end_token(Some(7))).contains("appends no end token"));
    }

    #[test]
    fn ids_beyond_the_model_vocabulary_are_refused() {
        let plain = Gpt2Tokenizer::from_json(&tokenizer_json("null", "null")).unwrap();
        assert!(plain.check_vocab(4).is_ok());
        assert!(error(plain.check_vocab(3)).contains("produces token id 3"));
        // Ids 0 to 3 name 4 of 5 rows (80%): another model's tokenizer.
        let err = error(plain.check_vocab(5));
        assert!(err.contains("its largest id is 3, of the model's 5") && err.contains("different models"), "{err}");
        assert_eq!(check_vocab(Some(50256), 50304).map_err(|e| e.to_string()), Ok(()), "GPT-2 padded to 64s");
        assert!(check_vocab(Some(41), 80).is_err());
        // The post-processor's end token (9) counts too.
        let templated = ClipTokenizer::from_json(&tokenizer_json("null", TEMPLATE), 8).unwrap();
        assert!(templated.check_vocab(10).is_ok());
        assert!(error(templated.check_vocab(9)).contains("produces token id 9"));
    }
}
