//! Tokenizers from Hugging Face `tokenizer.json` files, through the `tokenizers` crate (its
//! `unstable_wasm` feature set, which builds natively and for wasm32).

use tokenizers::{Tokenizer, TruncationParams};

use crate::MediaError;

/// Ids of `text` with the special tokens the file's post-processor adds.
fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>, MediaError> {
    let encoding = tokenizer.encode(text, true).map_err(|e| MediaError::Tokenizer(e.to_string()))?;
    Ok(encoding.get_ids().to_vec())
}

fn parse(json: &[u8]) -> Result<Tokenizer, MediaError> {
    Tokenizer::from_bytes(json).map_err(|e| MediaError::Tokenizer(e.to_string()))
}

/// CLIP's tokenizer: start and end tokens as the file's post-processor defines them, truncated
/// to the context length with the end token kept.
pub struct ClipTokenizer {
    inner: Tokenizer,
}

impl ClipTokenizer {
    pub fn from_json(json: &[u8], context_length: usize) -> Result<Self, MediaError> {
        let mut inner = parse(json)?;
        let truncation = TruncationParams { max_length: context_length, ..Default::default() };
        inner.with_truncation(Some(truncation)).map_err(|e| MediaError::Tokenizer(e.to_string()))?;
        inner.with_padding(None);
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        encode(&self.inner, text)
    }
}

/// GPT-2's byte-level BPE tokenizer. Encoding adds exactly what the file says (for GPT-2: nothing,
/// as transformers' `generate` receives it).
pub struct Gpt2Tokenizer {
    inner: Tokenizer,
}

impl Gpt2Tokenizer {
    pub fn from_json(json: &[u8]) -> Result<Self, MediaError> {
        let mut inner = parse(json)?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| MediaError::Tokenizer(e.to_string()))?;
        Ok(Self { inner })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, MediaError> {
        encode(&self.inner, text)
    }

    /// Text of `ids`, special tokens included (as transformers' `decode` by default).
    pub fn decode(&self, ids: &[u32]) -> Result<String, MediaError> {
        self.inner.decode(ids, false).map_err(|e| MediaError::Tokenizer(e.to_string()))
    }
}
