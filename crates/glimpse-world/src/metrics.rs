//! Evaluation metrics for dense video captioning.
//!
//! The segment metrics follow the ActivityNet Captions `densevid_eval` protocol, and the caption
//! metrics follow the definitions of `pycocoevalcap`'s `Bleu(4)` and `CiderD`, so that numbers
//! reported by glimpse can be read next to the published ones. They are written from those
//! definitions rather than ported, and every place where the reference behaviour is surprising
//! (strict versus inclusive thresholds, smoothing constants, what CIDEr-D calls "length") is
//! reproduced on purpose and says so where it happens.
//!
//! `densevid_eval` scores captions per video: for each video it pairs every predicted caption with
//! every ground-truth caption whose segment overlaps it enough ([`matched_pairs`]), scores those
//! pairs as one corpus ([`bleu4`], [`cider_d`]), and averages the per-video results. The functions
//! here take one such corpus at a time so that callers can reproduce that averaging.
//!
//! N-gram tables are `BTreeMap`s rather than `HashMap`s: floating-point sums over them then run in
//! a fixed order, so a score is bit-for-bit reproducible across runs, as everything else in this
//! crate is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use glimpse_media::span::{Segment, tiou};

/// The temporal-IoU thresholds `densevid_eval` averages over by default.
pub const TIOU_THRESHOLDS: [f64; 4] = [0.3, 0.5, 0.7, 0.9];

/// Longest n-gram both BLEU-4 and CIDEr-D count.
const MAX_N: usize = 4;

/// Width of CIDEr-D's Gaussian length penalty, pycocoevalcap's default.
const CIDER_SIGMA: f64 = 6.0;

/// Segment precision and recall of one video at one tIoU threshold, as `(precision, recall)`.
///
/// Precision is the fraction of predicted segments that overlap some ground-truth segment, and
/// recall the fraction of ground-truth segments that some prediction overlaps; several predictions
/// may claim the same truth segment, as in `densevid_eval` (no one-to-one assignment).
///
/// "Overlap" means a tIoU strictly greater than `threshold`: `densevid_eval`'s detection scores
/// use `>` while its caption pairing ([`matched_pairs`]) uses `>=`, and both are kept so results
/// stay comparable with published numbers.
///
/// With no predictions the precision is 0 (`densevid_eval` gives 0 to a video it has no
/// predictions for), and with no ground truth the recall is 0 (the reference would divide by
/// zero; 0 keeps the per-video average finite and does not reward an empty ground truth).
pub fn precision_recall(predicted: &[Segment], truth: &[Segment], threshold: f64) -> (f64, f64) {
    let hit = |p: Segment, t: Segment| tiou(p, t) > threshold;
    let covered_predictions = predicted.iter().filter(|&&p| truth.iter().any(|&t| hit(p, t))).count();
    let covered_truth = truth.iter().filter(|&&t| predicted.iter().any(|&p| hit(p, t))).count();
    (fraction(covered_predictions, predicted.len()), fraction(covered_truth, truth.len()))
}

/// `part / whole`, or 0 for an empty whole (see [`precision_recall`] for why 0).
fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// Every `(predicted index, truth index)` pair whose segments have a tIoU of at least `threshold`.
///
/// `densevid_eval` scores captions over all such pairs (a prediction overlapping two truth
/// segments is scored against both), with an inclusive `>=` unlike its detection scores. It also
/// scores each prediction that matches nothing against a random string, which adds a near-zero
/// item to the corpus; callers that want that penalty must add those items themselves, since the
/// captions are not known here. Pairs come out ordered by prediction, then by truth index.
pub fn matched_pairs(predicted: &[Segment], truth: &[Segment], threshold: f64) -> Vec<(usize, usize)> {
    predicted
        .iter()
        .enumerate()
        .flat_map(|(p, &pred)| {
            truth.iter().enumerate().filter(move |&(_, &t)| tiou(pred, t) >= threshold).map(move |(t, _)| (p, t))
        })
        .collect()
}

/// Splits a caption into tokens as pycocoevalcap's `PTBTokenizer` does before scoring: Stanford's
/// PTB tokenizer with `-lowerCase`, then the punctuation tokens pycocoevalcap drops.
///
/// Reproduced here (no Java): words are lowercased; punctuation at either end of a word is split
/// off (quotes become PTB's quote tokens, brackets `-lrb-` `-rrb-` and so on); clitics become
/// tokens of their own (`man's` gives `man`, `'s`; `doesn't` gives `does`, `n't`); hyphens,
/// periods and commas inside a word or number stay (`well-known`, `3.50`). Then
/// `'' ' `` ` . ? ! , : - -- ... ;` are dropped. pycocoevalcap's list also names `-LRB-` and
/// the like in capitals, which never match the lowercased tokens, so brackets stay: as there.
/// `tests/densevid.rs` checks this against the Java tokenizer's output.
pub fn tokenize(text: &str) -> Vec<String> {
    const DROPPED: [&str; 13] = ["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"];
    let mut tokens = Vec::new();
    for chunk in text.to_lowercase().split_whitespace() {
        ptb_chunk(chunk, &mut tokens);
    }
    tokens.retain(|t| !DROPPED.contains(&t.as_str()));
    tokens
}

/// The tokens of one whitespace-separated chunk, in order.
fn ptb_chunk(chunk: &str, tokens: &mut Vec<String>) {
    let chars: Vec<char> = chunk.chars().collect();
    let inner = |c: char| c.is_alphanumeric();
    let (Some(first), Some(last)) = (chars.iter().position(|&c| inner(c)), chars.iter().rposition(|&c| inner(c)))
    else {
        punctuation(&chars, true, tokens);
        return;
    };
    // `#tag` and `@user` are one token (`#1` two).
    let first = match first.checked_sub(1) {
        Some(before) if matches!(chars[before], '#' | '@') && chars[first].is_alphabetic() => before,
        _ => first,
    };
    punctuation(&chars[..first], true, tokens);
    let mut core: String = chars[first..=last].iter().collect();
    let mut rest = &chars[last + 1..];
    // An abbreviation (`u.s.`, `e.g.`) keeps its final period.
    let abbreviation = core.split('.').all(|part| part.chars().count() == 1) && core.contains('.');
    if abbreviation && rest.first() == Some(&'.') && rest.get(1) != Some(&'.') {
        core.push('.');
        rest = &rest[1..];
    }
    let mut trailing: Vec<String> = Vec::new();
    punctuation(rest, false, &mut trailing);
    let mut words = split_symbols(&core);
    let core = words.pop().expect("the core ends in a letter or digit");
    words.into_iter().for_each(|word| push_word(word, tokens));
    // A clitic on the core, or a plural possessive's apostrophe left in the trailing part.
    let clitics = ["n't", "'s", "'re", "'ve", "'ll", "'d", "'m"];
    match clitics.iter().find(|c| core.len() > c.len() && core.ends_with(*c)) {
        Some(clitic) => {
            tokens.push(core[..core.len() - clitic.len()].to_string());
            tokens.push(clitic.to_string());
        }
        None => push_word(core, tokens),
    }
    tokens.extend(trailing);
}

/// The words of a chunk's core and the symbols PTB splits off inside a word, in order: each `+`
/// and `=`, a run of `*`, and a run of two or more hyphens as `--` (`a+b=c`, `a**b`, `he---she`;
/// a single hyphen stays, as in `well-known`).
fn split_symbols(core: &str) -> Vec<String> {
    let mut pieces = vec![String::new()];
    let chars: Vec<char> = core.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|&&c| c == chars[i]).count();
        let (symbol, used) = match chars[i] {
            '+' | '=' => (chars[i].to_string(), 1),
            '*' => ("*".repeat(run), run),
            '-' if run > 1 => ("--".to_string(), run),
            c => {
                pieces.last_mut().expect("never empty").push(c);
                i += 1;
                continue;
            }
        };
        pieces.extend([symbol, String::new()]);
        i += used;
    }
    pieces.retain(|piece| !piece.is_empty());
    pieces
}

/// A word, split where PTB splits a fused pair (`cannot` gives `can`, `not`; `gonna` gives
/// `gon`, `na`).
fn push_word(word: String, tokens: &mut Vec<String>) {
    const FUSED: [(&str, usize); 6] =
        [("cannot", 3), ("gonna", 3), ("gotta", 3), ("wanna", 3), ("gimme", 3), ("lemme", 3)];
    match FUSED.iter().find(|(fused, _)| *fused == word) {
        Some(&(fused, at)) => tokens.extend([fused[..at].to_string(), fused[at..].to_string()]),
        None => tokens.push(word),
    }
}

/// Punctuation characters as PTB tokens: runs of `.` or `-` stay together, a double quote opens
/// (`` ` ` ``) at the start of a word and closes (`''`) elsewhere, brackets get PTB's names.
fn punctuation(chars: &[char], leading: bool, tokens: &mut Vec<String>) {
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = chars[i..].iter().take_while(|&&d| d == c).count();
        let (token, used) = match c {
            '.' | '-' => (c.to_string().repeat(run), run),
            '"' => ((if leading { "``" } else { "''" }).to_string(), 1),
            '(' => ("-lrb-".to_string(), 1),
            ')' => ("-rrb-".to_string(), 1),
            '[' => ("-lsb-".to_string(), 1),
            ']' => ("-rsb-".to_string(), 1),
            '{' => ("-lcb-".to_string(), 1),
            '}' => ("-rcb-".to_string(), 1),
            _ => (c.to_string(), 1),
        };
        tokens.push(token);
        i += used;
    }
}

/// Every n-gram of `tokens` for n = 1..=[`MAX_N`], each occurrence once, as token slices (the
/// slice length is the order, so n-grams of different orders never collide).
fn ngrams(tokens: &[String]) -> impl Iterator<Item = &[String]> {
    (1..=MAX_N).flat_map(move |n| tokens.windows(n))
}

/// Occurrence count of every n-gram of `tokens` (see [`ngrams`]).
fn ngram_counts(tokens: &[String]) -> BTreeMap<&[String], usize> {
    let mut counts = BTreeMap::new();
    for gram in ngrams(tokens) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// Corpus-level BLEU-1 to BLEU-4 of `(candidate, references)` items, as pycocoevalcap's `Bleu(4)`
/// computes them; captions are raw text and go through [`tokenize`] first. BLEU-n is the
/// geometric mean of the first n modified precisions times the brevity penalty.
///
/// Clipped n-gram matches (each candidate n-gram counted at most as often as it occurs in the
/// reference that contains it most) and candidate n-gram totals are summed over the whole corpus
/// before dividing, and so are the lengths behind the brevity penalty, where each item contributes
/// the length of its reference closest in length to the candidate (the shorter one on ties). Each
/// modified precision is `(matches + 1e-15) / (total + 1e-9)` as in pycocoevalcap, which keeps
/// the score defined (and near 0) when some order has no match, instead of smoothing it upwards.
///
/// An item without references contributes a reference length of 0 (pycocoevalcap rejects such
/// input).
pub fn bleu(pairs: &[(impl AsRef<str>, Vec<impl AsRef<str>>)]) -> [f64; MAX_N] {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let corpus = Corpus::new(pairs);
    let counts: Vec<BTreeMap<&[String], usize>> = corpus.tokens.iter().map(|t| ngram_counts(t)).collect();
    let mut matches = [0usize; MAX_N];
    let mut totals = [0usize; MAX_N];
    let (mut candidate_len, mut reference_len) = (0usize, 0usize);
    for (candidate, references) in &corpus.items {
        let most_in_a_reference = |gram: &[String]| references.iter().filter_map(|&r| counts[r].get(gram)).max();
        for (gram, &count) in &counts[*candidate] {
            matches[gram.len() - 1] += count.min(most_in_a_reference(gram).copied().unwrap_or(0));
        }
        let candidate_tokens = corpus.tokens[*candidate].len();
        for (n, total) in (1..=MAX_N).zip(&mut totals) {
            *total += (candidate_tokens + 1).saturating_sub(n);
        }
        candidate_len += candidate_tokens;
        reference_len += references
            .iter()
            .map(|&r| corpus.tokens[r].len())
            .min_by_key(|&len| (len.abs_diff(candidate_tokens), len))
            .unwrap_or(0);
    }
    let length_ratio = (candidate_len as f64 + TINY) / (reference_len as f64 + SMALL);
    let brevity_penalty = if length_ratio < 1.0 { (1.0 - 1.0 / length_ratio).exp() } else { 1.0 };
    let mut product = 1.0;
    std::array::from_fn(|k| {
        product *= (matches[k] as f64 + TINY) / (totals[k] as f64 + SMALL);
        product.powf(1.0 / (k + 1) as f64) * brevity_penalty
    })
}

/// A corpus of `(candidate, references)` items with each distinct caption tokenised once: a
/// video's pairs repeat its sentences (a prediction paired with every reference it overlaps, a
/// reference with every such prediction), up to a million pairs for one video.
struct Corpus {
    /// Tokens of each distinct caption.
    tokens: Vec<Vec<String>>,
    /// Items as indices into `tokens`.
    items: Vec<(usize, Vec<usize>)>,
}

impl Corpus {
    fn new<'a>(pairs: &'a [(impl AsRef<str>, Vec<impl AsRef<str>>)]) -> Self {
        let mut index: HashMap<&'a str, usize> = HashMap::new();
        let mut tokens = Vec::new();
        let mut id = |text: &'a str| {
            *index.entry(text).or_insert_with(|| {
                tokens.push(tokenize(text));
                tokens.len() - 1
            })
        };
        let items = pairs
            .iter()
            .map(|(candidate, references)| {
                (id(candidate.as_ref()), references.iter().map(|r| id(r.as_ref())).collect())
            })
            .collect();
        Self { tokens, items }
    }
}

/// Corpus CIDEr-D of `(candidate, references)` items: the mean of [`cider_d_scores`], 0 for an
/// empty corpus.
pub fn cider_d(pairs: &[(impl AsRef<str>, Vec<impl AsRef<str>>)]) -> f64 {
    let scores = cider_d_scores(pairs);
    if scores.is_empty() { 0.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 }
}

/// Per-item CIDEr-D of `(candidate, references)` items, as pycocoevalcap's `Cider` computes it
/// (pycocoevalcap 1.2's `Cider` is CIDEr-D: clipped and length-penalised; it is the scorer
/// `densevid_eval` runs and reports as "CIDEr"); captions are raw text and go through
/// [`tokenize`] first.
///
/// Each caption becomes one tf-idf vector per n-gram order 1..=4, weighting an n-gram's raw count
/// by `ln(items) - ln(max(1, df))`, where `df` is the number of items whose references contain it.
/// The idf therefore comes from this corpus alone: an n-gram every item's references share weighs
/// nothing, and a corpus of a single item scores 0 throughout, exactly as in pycocoevalcap. A
/// candidate is compared with each reference per order by a cosine whose numerator clips the
/// candidate's weights to the reference's (the "-D" that stops repetition from paying off),
/// damped by `exp(-delta^2 / (2 * 6^2))` where `delta` is the difference in length; the result is
/// averaged over orders and references and multiplied by 10.
///
/// pycocoevalcap measures that length as the number of bigrams, one less than the number of words,
/// and so does this; the two only differ when comparing an empty caption with a one-word one. An
/// item without references scores 0 (pycocoevalcap would divide by zero).
fn cider_d_scores(pairs: &[(impl AsRef<str>, Vec<impl AsRef<str>>)]) -> Vec<f64> {
    let corpus = Corpus::new(pairs);
    // Items with the same references add the same n-grams: each set of references is walked once.
    let mut items_by_references: HashMap<&[usize], usize> = HashMap::new();
    for (_, references) in &corpus.items {
        *items_by_references.entry(references).or_insert(0) += 1;
    }
    let mut document_frequency: BTreeMap<&[String], usize> = BTreeMap::new();
    for (references, items) in items_by_references {
        let grams: BTreeSet<&[String]> = references.iter().flat_map(|&r| ngrams(&corpus.tokens[r])).collect();
        for gram in grams {
            *document_frequency.entry(gram).or_insert(0) += items;
        }
    }
    let log_items = (corpus.items.len().max(1) as f64).ln();
    // Every distinct caption is some item's candidate or reference.
    let vectors: Vec<TfIdf> = corpus.tokens.iter().map(|t| TfIdf::new(t, &document_frequency, log_items)).collect();
    corpus
        .items
        .iter()
        .map(|(candidate, references)| {
            if references.is_empty() {
                return 0.0;
            }
            let total: f64 = references.iter().map(|&r| vectors[*candidate].similarity(&vectors[r])).sum();
            10.0 * total / references.len() as f64
        })
        .collect()
}

/// A caption's CIDEr-D representation: tf-idf weight per n-gram, the Euclidean norm of the
/// weights of each order, and the length the penalty compares.
struct TfIdf<'a> {
    weights: BTreeMap<&'a [String], f64>,
    norms: [f64; MAX_N],
    length: usize,
}

impl<'a> TfIdf<'a> {
    fn new(tokens: &'a [String], document_frequency: &BTreeMap<&[String], usize>, log_items: f64) -> Self {
        let mut weights: BTreeMap<&[String], f64> =
            ngram_counts(tokens).into_iter().map(|(gram, count)| (gram, count as f64)).collect();
        let mut norms = [0.0; MAX_N];
        for (gram, weight) in &mut weights {
            let df = document_frequency.get(gram).copied().unwrap_or(0).max(1);
            *weight *= log_items - (df as f64).ln();
            norms[gram.len() - 1] += *weight * *weight;
        }
        Self { weights, norms: norms.map(f64::sqrt), length: tokens.len().saturating_sub(1) }
    }

    /// Clipped, length-penalised cosine of `self` (the candidate) against `reference`, averaged
    /// over the n-gram orders. An order where either side has no weight keeps its raw (zero)
    /// numerator, as pycocoevalcap skips the division there.
    fn similarity(&self, reference: &TfIdf) -> f64 {
        let mut dots = [0.0; MAX_N];
        for (gram, &weight) in &self.weights {
            if let Some(&reference_weight) = reference.weights.get(gram) {
                dots[gram.len() - 1] += weight.min(reference_weight) * reference_weight;
            }
        }
        let mut cosines = 0.0;
        for ((dot, norm), reference_norm) in dots.into_iter().zip(self.norms).zip(reference.norms) {
            cosines += if norm != 0.0 && reference_norm != 0.0 { dot / (norm * reference_norm) } else { dot };
        }
        let delta = self.length as f64 - reference.length as f64;
        let penalty = (-(delta * delta) / (2.0 * CIDER_SIGMA * CIDER_SIGMA)).exp();
        cosines * penalty / MAX_N as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!((actual - expected).abs() <= tolerance, "got {actual}, expected {expected}");
    }

    fn bleu4(pairs: &[(String, Vec<String>)]) -> f64 {
        bleu(pairs)[MAX_N - 1]
    }

    fn item(candidate: &str, references: &[&str]) -> (String, Vec<String>) {
        (candidate.to_owned(), references.iter().map(|r| (*r).to_owned()).collect())
    }

    #[test]
    fn precision_recall_on_a_hand_made_video() {
        let truth = [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)];
        // tIoUs with their best truth segment: 9/10, 8/10, and nothing.
        let predicted = [(0.0, 9.0), (12.0, 20.0), (40.0, 50.0)];
        assert_eq!(precision_recall(&predicted, &truth, 0.5), (2.0 / 3.0, 2.0 / 3.0));
        assert_eq!(precision_recall(&predicted, &truth, 0.85), (1.0 / 3.0, 1.0 / 3.0));
        // The detection threshold is strict: a tIoU of exactly 0.9 does not count at 0.9 ...
        assert_eq!(precision_recall(&predicted, &truth, 0.9), (0.0, 0.0));
        // ... and caption pairing, inclusive, still misses it: densevid_eval adds 1e-8 to the union.
        assert!(matched_pairs(&predicted, &truth, 0.9).is_empty());
        assert_eq!(matched_pairs(&predicted, &truth, 0.85), vec![(0, 0)]);
        assert_eq!(precision_recall(&[], &truth, 0.5), (0.0, 0.0));
        assert_eq!(precision_recall(&predicted, &[], 0.5), (0.0, 0.0));
    }

    #[test]
    fn several_predictions_may_cover_one_truth_segment() {
        let truth = [(0.0, 10.0), (50.0, 60.0)];
        let predicted = [(0.0, 10.0), (1.0, 10.0)];
        assert_eq!(precision_recall(&predicted, &truth, 0.5), (1.0, 0.5));
        assert_eq!(matched_pairs(&predicted, &truth, 0.5), vec![(0, 0), (1, 0)]);
    }

    #[test]
    fn matched_pairs_lists_every_overlap() {
        let truth = [(0.0, 10.0), (5.0, 15.0)];
        let predicted = [(2.0, 12.0), (100.0, 110.0)];
        // (2, 12) has tIoU 8/12 with both truth segments.
        assert_eq!(matched_pairs(&predicted, &truth, 0.5), vec![(0, 0), (0, 1)]);
        assert!(matched_pairs(&predicted, &truth, 0.7).is_empty());
    }

    #[test]
    fn tokenize_lowercases_and_drops_punctuation() {
        assert_eq!(
            tokenize("  A red Circle, moving LEFT!\tthen-stops. "),
            ["a", "red", "circle", "moving", "left", "then-stops"]
        );
        assert_eq!(tokenize("3 blue squares."), ["3", "blue", "squares"]);
        assert!(tokenize(" ... ").is_empty());
        // As the Java tokenizer gives them (pycocoevalcap 1.2, stanford-corenlp 3.4.1).
        assert_eq!(
            tokenize("A man's well-known guitar (red) costs $3.50, doesn't it?"),
            [
                "a",
                "man",
                "'s",
                "well-known",
                "guitar",
                "-lrb-",
                "red",
                "-rrb-",
                "costs",
                "$",
                "3.50",
                "does",
                "n't",
                "it"
            ]
        );
        assert_eq!(
            tokenize("He said \"hi\" & left... 100% / 2"),
            ["he", "said", "hi", "&", "left", "100", "%", "/", "2"]
        );
    }

    #[test]
    fn bleu4_of_identical_captions_is_one() {
        let pairs = [item("A red circle moves left.", &["a red circle moves left"])];
        close(bleu4(&pairs), 1.0, 1e-8);
    }

    #[test]
    fn bleu4_of_a_hand_computed_example() {
        // Candidate and reference share everything but the last word, 7 tokens each. Matches /
        // totals per order: 6/7 unigrams, 5/6 bigrams ("the left" misses), 4/5 trigrams, 3/4
        // 4-grams. Equal lengths mean no brevity penalty, so BLEU-4 is the geometric mean
        // (6/7 * 5/6 * 4/5 * 3/4)^(1/4) = (3/7)^(1/4) ~ 0.8091.
        let pairs = [item("a red circle moves to the left", &["a red circle moves to the right"])];
        close(bleu4(&pairs), (3.0_f64 / 7.0).powf(0.25), 1e-8);
    }

    #[test]
    fn bleu4_clips_repeated_words() {
        // "the" counts at most twice (its count in the reference), so unigram precision is 2/4;
        // bigrams "the the" x3 match once (1/3); no 3- or 4-gram matches, so the score is ~0.
        let pairs = [item("the the the the", &["the the cat"])];
        let expected = (0.5_f64 * (1.0 / 3.0) * (1e-15 / 2.0) * (1e-15 / 1.0)).powf(0.25);
        close(bleu4(&pairs), expected, 1e-12);
    }

    #[test]
    fn bleu4_brevity_penalty() {
        // Every candidate n-gram is in the reference (precision 1), but 4 tokens against 7 give a
        // brevity penalty exp(1 - 7/4) = exp(-0.75).
        let pairs = [item("a red circle moves", &["a red circle moves to the left"])];
        close(bleu4(&pairs), (-0.75_f64).exp(), 1e-8);
    }

    #[test]
    fn bleu4_uses_the_closest_reference_length() {
        // 7 tokens; references of 3 and 8 tokens: 8 is closer, so the penalty is exp(1 - 8/7).
        let pairs = [item("a red circle moves to the left", &["a red circle", "a red circle moves to the left side"])];
        close(bleu4(&pairs), (-1.0_f64 / 7.0).exp(), 1e-8);
        // 5 tokens; references of 4 and 6 are equally close and the shorter wins: no penalty.
        let pairs = [item("a red circle moves left", &["a red circle moves", "a red circle moves left now"])];
        close(bleu4(&pairs), 1.0, 1e-8);
    }

    #[test]
    fn bleu4_pools_counts_over_the_corpus() {
        // Item 1 matches fully (4 tokens); item 2 is a 2-token candidate without any match. Pooled
        // precisions are 4/6, 3/4, 2/2, 1/1 with product 1/2, and lengths 6 vs 6 give no penalty,
        // so BLEU-4 = (1/2)^(1/4) ~ 0.841, not the ~0.5 mean of the per-item scores.
        let pairs = [item("a red circle moves", &["a red circle moves"]), item("w x", &["blue square"])];
        close(bleu4(&pairs), 0.5_f64.powf(0.25), 1e-8);
        assert_eq!(bleu4(&[]), 0.0);
    }

    #[test]
    fn cider_d_is_ten_for_identical_captions() {
        // No n-gram occurs in every item ("a" is in two of three), so every vector has weight and
        // each clipped cosine is 1 with no length penalty.
        let pairs = [
            item("a red circle moves left", &["a red circle moves left"]),
            item("a blue square jumps up", &["a blue square jumps up"]),
            item("the green triangle spins", &["the green triangle spins"]),
        ];
        for score in cider_d_scores(&pairs) {
            close(score, 10.0, 1e-9);
        }
        close(cider_d(&pairs), 10.0, 1e-9);
    }

    #[test]
    fn cider_d_is_zero_without_overlap() {
        let pairs = [item("a red circle", &["the blue square"]), item("green triangle spins", &["yellow star"])];
        assert_eq!(cider_d_scores(&pairs), [0.0, 0.0]);
        assert_eq!(cider_d(&pairs), 0.0);
        assert_eq!(cider_d(&[] as &[(&str, Vec<&str>)]), 0.0);
    }

    #[test]
    fn cider_d_of_a_single_item_corpus_is_zero() {
        // ln(1) = 0: every idf vanishes, as in pycocoevalcap.
        assert_eq!(cider_d(&[item("a red circle", &["a red circle"])]), 0.0);
    }

    #[test]
    fn cider_d_is_symmetric_when_captions_swap_roles() {
        // Item 2 is item 1 with candidate and reference exchanged, so both see the same document
        // frequencies; with equal lengths and no repeated words the clipped cosine is symmetric.
        // The third item keeps the shared words ("a red", "moves") out of some item, so that their
        // idf, and the score, is not 0.
        let x = "a red circle moves left";
        let y = "a red square moves right";
        let pairs = [item(x, &[y]), item(y, &[x]), item("the green triangle", &["the green star"])];
        let scores = cider_d_scores(&pairs);
        close(scores[0], scores[1], 1e-12);
        assert!(scores[0] > 0.0 && scores[0] < 10.0, "{scores:?}");
        // The corpus score does not depend on the order of its items.
        let reordered = [pairs[2].clone(), pairs[0].clone(), pairs[1].clone()];
        close(cider_d(&pairs), cider_d(&reordered), 1e-12);
    }

    #[test]
    fn cider_d_length_penalty() {
        // Two items, so idf = ln 2 - ln 1 = ln 2 for every reference n-gram (none is shared).
        // Item 1: "dog" vs "dog": unigram cosine 1, higher orders empty (0), lengths equal:
        //   10 * (1 + 0 + 0 + 0) / 4 = 2.5.
        // Item 2: "cat" vs seven "cat"s: unigram weights ln 2 and 7 ln 2, clipped dot
        //   ln 2 * 7 ln 2 over norms ln 2 * 7 ln 2 = 1; no higher orders in the candidate; lengths
        //   (bigram counts) 0 and 6 give the penalty exp(-36 / 72):  2.5 * exp(-0.5) ~ 1.516.
        let pairs = [item("dog", &["dog"]), item("cat", &["cat cat cat cat cat cat cat"])];
        let scores = cider_d_scores(&pairs);
        close(scores[0], 2.5, 1e-12);
        close(scores[1], 2.5 * (-0.5_f64).exp(), 1e-12);
        close(cider_d(&pairs), (2.5 + 2.5 * (-0.5_f64).exp()) / 2.0, 1e-12);
    }

    #[test]
    fn cider_d_clips_repetition_and_averages_references() {
        // Same corpus shape as above, but item 2's candidate repeats "cat" 7 times against a single
        // "cat": the clipped unigram dot is min(7, 1) ln 2 * ln 2 over norms 7 ln 2 * ln 2 = 1/7,
        // the other orders have no reference weight, and lengths 6 vs 0 give exp(-0.5).
        let pairs = [item("dog", &["dog"]), item("cat cat cat cat cat cat cat", &["cat"])];
        close(cider_d_scores(&pairs)[1], 10.0 / 7.0 / 4.0 * (-0.5_f64).exp(), 1e-12);
        // A second reference identical to the first leaves the average over references unchanged.
        let doubled = [item("dog", &["dog"]), item("cat cat cat cat cat cat cat", &["cat", "cat"])];
        close(cider_d_scores(&doubled)[1], cider_d_scores(&pairs)[1], 1e-12);
        assert_eq!(cider_d_scores(&[item("dog", &[]), item("cat", &["cat"])])[0], 0.0);
    }
}
