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

/// Ids of `text` with the special tokens the file's post-processor adds.
fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, MediaError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(MediaError::Text(format!(
            "a text of {} bytes, more than the {} KiB glimpse tokenizes (the models read a few hundred words at \
             most); shorten it",
            text.len(),
            MAX_TEXT_BYTES >> 10
        )));
    }
    guarded(|| Ok(tokenizer.encode(text, true)?.get_ids().to_vec()))
}

fn parse(json: &[u8]) -> Result<Tokenizer, MediaError> {
    refuse_known_panics(json)?;
    guarded(|| Tokenizer::from_bytes(json))
}

/// Refuses a `Precompiled` normalizer (at the top or inside a `Sequence`) whose charsmap does not
/// parse: the crate `expect`s it to.
fn refuse_known_panics(json: &[u8]) -> Result<(), MediaError> {
    let value: Value = serde_json::from_slice(json).map_err(|e| MediaError::Tokenizer(e.to_string()))?;
    check_json_object(&value).map_err(MediaError::Tokenizer)?;
    let mut pending = vec![&value["normalizer"]];
    while let Some(normalizer) = pending.pop() {
        match normalizer["type"].as_str() {
            Some("Sequence") => pending.extend(normalizer["normalizers"].as_array().into_iter().flatten()),
            Some("Precompiled") => {
                // From text, as the crate parses it: the charsmap deserialises from a borrowed string.
                if let Err(e) = serde_json::from_str::<Precompiled>(&normalizer.to_string()) {
                    return Err(MediaError::Tokenizer(format!(
                        "the Precompiled normalizer's precompiled_charsmap is unreadable ({e}); re-export tokenizer.json \
                         from the model's tokenizer"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The largest id `tokenizer` can produce: its vocabulary with the added tokens, and the special
/// tokens its post-processor inserts (seen by encoding an empty text). Encoding a text as well
/// makes a tokenizer that panics on any input fail here; its `Err`s are ignored (a word-level
/// vocabulary may refuse the probe's words).
fn probe(tokenizer: &Tokenizer) -> Result<Option<u32>, MediaError> {
    let specials = call(|| tokenizer.encode("", true))?.map(|e| e.get_ids().to_vec()).unwrap_or_default();
    let _ = call(|| tokenizer.encode("A probe: 1 photo, two words.", true))?;
    Ok(tokenizer.get_vocab(true).into_values().chain(specials).max())
}

/// Refuses a tokenizer that can produce ids beyond the model's token table of `vocab_size` rows.
fn check_vocab(largest_id: Option<u32>, vocab_size: usize) -> Result<(), MediaError> {
    match largest_id.filter(|&id| id as usize >= vocab_size) {
        Some(id) => Err(MediaError::Tokenizer(format!(
            "it produces token id {id}, but the model's vocabulary has {vocab_size} entries (vocab_size in \
             config.json); tokenizer.json and config.json come from different models"
        ))),
        None => Ok(()),
    }
}

/// CLIP's tokenizer: start and end tokens as the file's post-processor defines them, truncated
/// to the context length with the end token kept.
pub struct ClipTokenizer {
    inner: Tokenizer,
    largest_id: Option<u32>,
}

impl ClipTokenizer {
    pub fn from_json(json: &[u8], context_length: usize) -> Result<Self, MediaError> {
        let mut inner = parse(json)?;
        // Truncation keeps room for the special tokens; the crate subtracts them unchecked.
        let specials = inner.get_post_processor().map_or(0, |p| p.added_tokens(false));
        if context_length <= specials {
            return Err(MediaError::Tokenizer(format!(
                "its post-processor adds {specials} special tokens, which leaves no room for text in the model's \
                 context of {context_length} (text_config.max_position_embeddings in config.json)"
            )));
        }
        let truncation = TruncationParams { max_length: context_length, ..Default::default() };
        guarded(|| inner.with_truncation(Some(truncation)).map(|_| ()))?;
        inner.with_padding(None);
        let largest_id = probe(&inner)?;
        Ok(Self { inner, largest_id })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        encode(&self.inner, text)
    }

    /// Refuses a tokenizer that can produce ids beyond the model's `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), MediaError> {
        check_vocab(self.largest_id, vocab_size)
    }
}

/// GPT-2's byte-level BPE tokenizer. Encoding adds exactly what the file says (for GPT-2: nothing,
/// as transformers' `generate` receives it).
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
    largest_id: Option<u32>,
}

impl Gpt2Tokenizer {
    pub fn from_json(json: &[u8]) -> Result<Self, MediaError> {
        let mut inner = parse(json)?;
        inner.with_padding(None);
        guarded(|| inner.with_truncation(None).map(|_| ()))?;
        let largest_id = probe(&inner)?;
        Ok(Self { inner, largest_id })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        encode(&self.inner, text)
    }

    /// Text of `ids`, special tokens included (as transformers' `decode` by default).
    pub fn decode(&self, ids: &[u32]) -> Result<String, MediaError> {
        guarded(|| self.inner.decode(ids, false))
    }

    /// Refuses a tokenizer that can produce ids beyond the model's `vocab_size`.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<(), MediaError> {
        check_vocab(self.largest_id, vocab_size)
    }

    /// Refuses a special token id (named by its config.json `field`) that is no token of this
    /// tokenizer: one from another model fits a vocabulary as large (CLIP's 49408 ids fit GPT-2's
    /// 50257) but lacks its special tokens.
    pub fn check_special_id(&self, field: &str, id: u32) -> Result<(), MediaError> {
        if self.inner.id_to_token(id).is_some() {
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
    fn ids_beyond_the_model_vocabulary_are_refused() {
        let plain = Gpt2Tokenizer::from_json(&tokenizer_json("null", "null")).unwrap();
        assert!(plain.check_vocab(4).is_ok());
        assert!(error(plain.check_vocab(3)).contains("produces token id 3"));
        // The post-processor's end token (9) counts too.
        let templated = ClipTokenizer::from_json(&tokenizer_json("null", TEMPLATE), 8).unwrap();
        assert!(templated.check_vocab(10).is_ok());
        assert!(error(templated.check_vocab(9)).contains("produces token id 9"));
    }
}
