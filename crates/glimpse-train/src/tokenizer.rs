//! Word-level tokenizers for the world's closed vocabulary, built with the `tokenizers` crate and
//! saved as ordinary `tokenizer.json` files. One token per word keeps the models tiny and makes
//! the ids the same on every build (a trained BPE breaks frequency ties by hash order).

use ahash::AHashMap;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::normalizers::utils::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::TrainError;

/// CLIP's start and end tokens; the end token's id is the text config's `eos_token_id`.
pub const CLIP_SPECIALS: [&str; 3] = ["<|startoftext|>", "<|endoftext|>", "<|unk|>"];
/// GPT-2's end-of-text token (id 0 here) and the unknown-word token.
pub const GPT2_SPECIALS: [&str; 2] = ["<|endoftext|>", "<|unk|>"];

/// Words that lead into a caption in prompts (the defaults of `glimpse-align`'s image and video
/// captioning), so the default prompts are in-vocabulary for the world's models.
pub const LEAD_INS: [&str; 2] = ["image of", "video showing"];

/// Every word the world's texts use: the caption templates' words, the lead-ins and punctuation.
pub fn words() -> Vec<String> {
    let mut words: Vec<String> = glimpse_world::scene::vocabulary().into_iter().map(str::to_string).collect();
    words.extend(LEAD_INS.iter().flat_map(|l| l.split(' ')).map(str::to_string));
    words.extend([",", "."].map(str::to_string));
    words.sort();
    words.dedup();
    words
}

fn wordlevel(tokens: impl IntoIterator<Item = String>, unk: &str) -> Result<WordLevel, TrainError> {
    let vocab: AHashMap<String, u32> = tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
    WordLevel::builder().vocab(vocab).unk_token(unk.into()).build().map_err(|e| TrainError::Tokenizer(e.to_string()))
}

fn save(tokenizer: &Tokenizer) -> Result<String, TrainError> {
    tokenizer.to_string(true).map_err(|e| TrainError::Tokenizer(e.to_string()))
}

/// CLIP's tokenizer over `words` (e.g. [`words`]): lowercase, split on whitespace and
/// punctuation, wrapped in start/end tokens.
pub fn clip_tokenizer_json(words: &[String]) -> Result<String, TrainError> {
    let tokens = CLIP_SPECIALS.iter().map(|s| s.to_string()).chain(words.iter().cloned());
    let mut tokenizer = Tokenizer::new(wordlevel(tokens, CLIP_SPECIALS[2])?);
    tokenizer.with_normalizer(Some(Lowercase)).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(Whitespace));
    let template = TemplateProcessing::builder()
        .try_single(format!("{} $A {}", CLIP_SPECIALS[0], CLIP_SPECIALS[1]))
        .map_err(TrainError::Tokenizer)?
        .special_tokens(vec![(CLIP_SPECIALS[0], 0), (CLIP_SPECIALS[1], 1)])
        .build()
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer.with_post_processor(Some(template));
    tokenizer
        .add_special_tokens(CLIP_SPECIALS.map(|s| AddedToken::from(s, true)))
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    save(&tokenizer)
}

/// GPT-2's tokenizer over `words` (e.g. [`words`]): byte-level pre-tokenisation and decoding as
/// GPT-2's own (a word after a space is `Ġword`), but one token per word: `2 + 2 words.len()` ids.
pub fn gpt2_tokenizer_json(words: &[String]) -> Result<String, TrainError> {
    let spaced = words.iter().map(|w| format!("\u{120}{w}"));
    let tokens = GPT2_SPECIALS.iter().map(|s| s.to_string()).chain(words.iter().cloned()).chain(spaced);
    let mut tokenizer = Tokenizer::new(wordlevel(tokens, GPT2_SPECIALS[1])?);
    tokenizer.with_normalizer(Some(Lowercase)).map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
        .add_special_tokens(GPT2_SPECIALS.map(|s| AddedToken::from(s, true)))
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    save(&tokenizer)
}

#[cfg(test)]
mod tests {
    use glimpse_media::rng::Rng;
    use glimpse_media::tokenizer::{ClipTokenizer, Gpt2Tokenizer};
    use glimpse_world::scene::{Attributes, TEMPLATE_COUNT, caption};

    use super::*;

    /// Every caption of the world is known word by word, and GPT-2's tokenizer gives the text back.
    #[test]
    fn world_captions_round_trip_without_unknown_words() {
        let clip = ClipTokenizer::from_json(clip_tokenizer_json(&words()).unwrap().as_bytes(), 32).unwrap();
        let gpt2 = Gpt2Tokenizer::from_json(gpt2_tokenizer_json(&words()).unwrap().as_bytes()).unwrap();
        let mut rng = Rng::new(7);
        for template in 0..TEMPLATE_COUNT {
            let text = format!("video showing {}.", caption(&Attributes::sample(&mut rng), template));
            let ids = clip.encode(&text).unwrap();
            assert_eq!((ids[0], *ids.last().unwrap()), (0, 1), "{text}: {ids:?}");
            assert!(!ids.contains(&2), "unknown word in {text}: {ids:?}");
            let ids = gpt2.encode(&text).unwrap();
            assert!(!ids.contains(&1), "unknown word in {text}: {ids:?}");
            let punctuation = text.matches([',', '.']).count();
            assert_eq!(ids.len(), text.split(' ').count() + punctuation, "one token per word and punctuation mark");
            assert_eq!(gpt2.decode(&ids).unwrap(), text);
        }
        assert_eq!(gpt2.encode("Image of").unwrap(), gpt2.encode("image of").unwrap());
    }
}
