//! CLIP-guided captioning and dense captioning end to end on the parity fixtures (tiny random
//! models: the captions are noise, but the optimisation and its bookkeeping are real).

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use glimpse_align::guided::{self, GuidanceConfig, Targets};
use glimpse_align::prefix::Prefix;
use glimpse_align::zerota::{EmbeddedVideo, FrameEmbedder, ZeroTaConfig, dense_caption, embed_frames};
use glimpse_media::decode_image;
use glimpse_media::image::Resize;
use glimpse_media::resample::Filter;
use glimpse_media::video::Sample;
use glimpse_models::generation::{Decoding, GenerationConfig, generate};
use glimpse_models::tensor::ids_tensor;
use glimpse_models::{ClipBundle, Gpt2Bundle, KvCache, ModelFiles, l2_normalize};
use glimpse_tests::{block_on, fixture};

fn models(device: &Device) -> (ClipBundle, Gpt2Bundle) {
    let clip = ClipBundle::load(&ModelFiles::from_dir(fixture("clip-a")).unwrap(), device).unwrap();
    let lm = Gpt2Bundle::load(&ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap(), device).unwrap();
    (clip, lm)
}

fn images() -> Vec<image::RgbImage> {
    ["rgb_45x38.png", "rgba_30x61.png", "gray_64x64.png"]
        .iter()
        .map(|f| decode_image(&std::fs::read(fixture("images").join(f)).unwrap()).unwrap())
        .collect()
}

/// Every float parameter of a module, as raw bits.
#[derive(Default)]
struct Snapshot(Vec<Vec<u32>>);
impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let values = param.val().into_data().try_into_vec_as::<f32>().unwrap();
        self.0.push(values.iter().map(|v| v.to_bits()).collect());
    }
}
fn snapshot<M: Module>(module: &M) -> Vec<Vec<u32>> {
    let mut s = Snapshot::default();
    module.visit(&mut s);
    s.0
}

/// A fresh prefix (zero offsets) reads as the frozen cache it was made from, every layer's keys and
/// values in their places, so its next-token logits are the LM's own after the whole sequence; and
/// the pass without autodiff (which chooses each token) gives the tracked pass's logits.
#[test]
fn a_fresh_prefix_reads_as_the_frozen_cache() {
    for selected in glimpse_tests::devices() {
        let device = &selected.device;
        let (_, lm) = models(device);
        let ids = lm.tokenizer.encode(" a photo of two red circles").unwrap();
        assert!(ids.len() > 3, "the prompt must leave a context after the dummy prefix");
        let (dummy, context) = ids.split_at(3);
        let mut base = KvCache::new();
        lm.model.forward_ids(ids_tensor(dummy, device), &mut base);
        let base = base.repeat_rows(2);
        let prefix = Prefix::new(&base, None, &device.clone().autodiff());
        for (ours, frozen) in prefix.cache().layers().iter().zip(base.layers()) {
            assert_eq!(read_values(ours.keys()), read_values(frozen.keys()), "keys on {}", selected.info);
            assert_eq!(read_values(ours.values()), read_values(frozen.values()), "values on {}", selected.info);
        }
        let embeds = lm.model.embed_ids(&[context, context].concat(), [2, context.len()], device);
        let tracked = read_values(prefix.next_logits(&lm.model, embeds.clone()));
        let plain = read_values(prefix.valid().next_logits(&lm.model, embeds));
        let full = read_values(lm.model.forward(ids_tensor(&ids, device)).narrow(1, ids.len() - 1, 1));
        let vocab = full.len();
        for (what, logits) in [("tracked", &tracked), ("without autodiff", &plain)] {
            for row in logits.chunks(vocab) {
                let error = row.iter().zip(&full).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(error <= 1e-4, "{what} pass on {}: logits differ from the LM's by {error}", selected.info);
            }
        }
    }
}

fn read_values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// Guided decoding (with key/value offsets and a soft prompt) gives captions CLIP finds closer to
/// their images than greedy decoding of the same prompt, and no frozen weight moves.
#[test]
fn prefix_optimisation_raises_the_clip_score_and_keeps_weights_frozen() {
    for selected in glimpse_tests::devices() {
        guided_beats_greedy(&selected.device);
    }
}

fn guided_beats_greedy(device: &Device) {
    let device = device.clone();
    let (clip, lm) = models(&device);
    let (lm_before, clip_before) = (snapshot(&lm.model), snapshot(&clip.model));
    let targets = l2_normalize(clip.encode_images(&images()).unwrap());
    let config = GuidanceConfig {
        max_tokens: 6,
        top_k: 8,
        steps_per_token: 2,
        soft_prompt_len: 2,
        stop_at_sentence_end: false,
        ..GuidanceConfig::default()
    };
    let outcome = block_on(guided::caption(&clip, &lm, Targets::Fixed(targets.clone()), &config, |_| {})).unwrap();

    let eos = lm.config.eos_token_id.unwrap();
    let prompt = [vec![eos], lm.tokenizer.encode(&config.prompt).unwrap()].concat();
    let greedy = GenerationConfig { max_new_tokens: config.max_tokens, decoding: Decoding::Greedy, stop_at: None };
    let ids = block_on(generate(&lm.model, &prompt, &greedy, |_| {}, &device)).unwrap();
    let greedy_text = lm.tokenizer.decode(&ids).unwrap().trim().to_string();
    let greedy_texts = vec![greedy_text; 3];
    let greedy_scores = block_on(guided::score_texts(&clip, &greedy_texts, targets)).unwrap();

    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let guided_scores: Vec<f32> = outcome.captions.iter().map(|c| c.score).collect();
    assert!(
        mean(&guided_scores) > mean(&greedy_scores) + 0.05,
        "guided {guided_scores:?} ({:?}) vs greedy {greedy_scores:?} ({:?})",
        outcome.captions,
        greedy_texts[0]
    );
    assert_eq!(snapshot(&lm.model), lm_before, "an LM weight changed");
    assert_eq!(snapshot(&clip.model), clip_before, "a CLIP weight changed");
}

fn clip_frames(clip: &ClipBundle) -> EmbeddedVideo {
    // Three scenes of ten frames each.
    let frames: Vec<image::RgbImage> = images().into_iter().flat_map(|im| std::iter::repeat_n(im, 10)).collect();
    embed_frames(clip, &frames).unwrap()
}

#[test]
fn dense_captioning_is_well_formed_and_deterministic() {
    let device = Device::flex();
    let (clip, lm) = models(&device);
    let frames = clip_frames(&clip);
    let config = ZeroTaConfig {
        events: Some(3),
        guidance: GuidanceConfig { max_tokens: 4, top_k: 6, steps_per_token: 2, ..ZeroTaConfig::default().guidance },
        warmup_steps: 60,
        seed: 3,
        ..ZeroTaConfig::default()
    };
    let mut steps = 0;
    let run = |steps: &mut usize| {
        block_on(dense_caption(&clip, &lm, &frames, 15.0, &config, |s| {
            *steps += 1;
            assert_eq!(s.spans.as_ref().map(Vec::len), Some(3));
        }))
        .unwrap()
    };
    let first = run(&mut steps);
    assert!(steps >= 2, "progress reported {steps} steps");
    assert!(!first.is_empty());
    for (i, e) in first.iter().enumerate() {
        assert!(0.0 <= e.start && e.start < e.end && e.end <= 15.0, "{e:?}");
        assert!(!e.caption.is_empty(), "{e:?}");
        if i > 0 {
            assert!(first[i - 1].end <= e.start, "events overlap: {first:?}");
        }
    }
    assert_eq!(run(&mut steps), first, "same seed, different events");
}

/// MAGIC with beta = 0 is contrastive search; with CLIP's term on, its captions score higher.
#[test]
fn magic_adds_clip_to_contrastive_search() {
    use glimpse_align::magic::{MagicConfig, magic_captions};
    let device = Device::flex();
    let (clip, lm) = models(&device);
    let targets = l2_normalize(clip.encode_images(&images()).unwrap());
    let config = MagicConfig { max_tokens: 6, top_k: 8, alpha: 0.1, ..MagicConfig::default() };
    let plain =
        block_on(magic_captions(&clip, &lm, targets.clone(), &MagicConfig { beta: 0.0, ..config.clone() })).unwrap();

    let eos = lm.config.eos_token_id.unwrap();
    let prompt = [vec![eos], lm.tokenizer.encode(&config.prompt).unwrap()].concat();
    let contrastive = GenerationConfig {
        max_new_tokens: config.max_tokens,
        decoding: Decoding::Contrastive { top_k: config.top_k, alpha: config.alpha },
        stop_at: Some(eos),
    };
    let ids = block_on(generate(&lm.model, &prompt, &contrastive, |_| {}, &device)).unwrap();
    let expected = lm.tokenizer.decode(&ids).unwrap().trim().to_string();
    assert!(plain.iter().all(|c| c.text == expected), "{plain:?} vs {expected:?}");

    let guided = block_on(magic_captions(&clip, &lm, targets, &MagicConfig { beta: 5.0, ..config })).unwrap();
    let mean = |c: &[glimpse_align::guided::Caption]| c.iter().map(|c| c.score).sum::<f32>() / c.len() as f32;
    assert!(mean(&guided) > mean(&plain) + 0.05, "MAGIC {guided:?} vs contrastive {plain:?}");
}

/// Captions of one batch may end at different tokens: here the first target is CLIP's embedding
/// of "." itself, so its caption ends with the first token while the image's goes on.
#[test]
fn captions_that_finish_early_leave_the_others_running() {
    let device = Device::flex();
    let (clip, lm) = models(&device);
    let period = l2_normalize(clip.encode_texts(&["."]).unwrap());
    let image = l2_normalize(clip.encode_images(&images()[..1]).unwrap());
    let targets = Tensor::cat(vec![period, image], 0);
    let config = GuidanceConfig {
        max_tokens: 5,
        top_k: 256,
        steps_per_token: 1,
        clip_weight: 20.0,
        stop_at_sentence_end: true,
        ..GuidanceConfig::default()
    };
    let outcome = block_on(guided::caption(&clip, &lm, Targets::Fixed(targets), &config, |_| {})).unwrap();
    assert_eq!(outcome.captions[0].text, ".", "{:?}", outcome.captions);
    assert!(outcome.captions[1].text.len() > 1, "{:?}", outcome.captions);
    assert!(outcome.captions.iter().all(|c| !c.text.contains("<|endoftext|>")));
}

/// A preprocessor that resizes without cropping fits square images only: a frame of another shape
/// is refused by what to change, before anything is encoded; square frames go through.
#[test]
fn uncropped_preprocessing_refuses_frames_that_are_not_square() {
    let device = Device::flex();
    let (mut clip, _) = models(&device);
    // As `"do_center_crop": false, "size": {"shortest_edge": 30}` reads (the fixture's image size).
    clip.preprocess.center_crop = None;
    clip.preprocess.resize = Some((Resize::ShortestEdge(30), Filter::Bicubic));
    let [wide, _, square] = <[_; 3]>::try_from(images()).unwrap();
    let err = embed_frames(&clip, &[square.clone(), wide]).unwrap_err().to_string();
    assert!(err.contains("do_center_crop is false") && err.contains("crop the image square"), "{err}");
    assert_eq!(embed_frames(&clip, &[square.clone(), square]).unwrap().frames(), 2);
}

/// A sample that repeats the frame before (an animation's long delay) is not encoded again, and
/// stands for the frame as if it had been.
#[test]
fn repeated_samples_embed_as_their_frame() {
    let device = Device::flex();
    let (clip, _) = models(&device);
    let [first, _, last] = <[_; 3]>::try_from(images()).unwrap();
    let whole = embed_frames(&clip, &[first.clone(), first.clone(), first.clone(), last.clone()]).unwrap();
    let mut embedder = FrameEmbedder::new(&clip);
    for sample in [Sample::Frame(first), Sample::Again, Sample::Again, Sample::Frame(last)] {
        embedder.push_sample(sample).unwrap();
    }
    assert_eq!(embedder.frames(), 4);
    let repeated = embedder.finish().unwrap();
    assert_eq!(repeated.blank(), whole.blank());
    assert_eq!(repeated.embeddings().dims(), whole.embeddings().dims());
    let (a, b) = (read_values(repeated.embeddings().clone()), read_values(whole.embeddings().clone()));
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6), "{a:?} against {b:?}");
    assert!(FrameEmbedder::new(&clip).push_sample(Sample::Again).is_err(), "no frame to repeat");
}

/// No more events than frames: five asked of a two-frame video give at most two, optimised as two
/// masks.
#[test]
fn no_more_events_than_frames() {
    let device = Device::flex();
    let (clip, lm) = models(&device);
    let [first, _, last] = <[_; 3]>::try_from(images()).unwrap();
    let frames = embed_frames(&clip, &[first, last]).unwrap();
    let config = ZeroTaConfig {
        events: Some(5),
        guidance: GuidanceConfig { max_tokens: 2, top_k: 4, steps_per_token: 1, ..ZeroTaConfig::default().guidance },
        ..ZeroTaConfig::default()
    };
    let mut masks = Vec::new();
    let events =
        block_on(dense_caption(&clip, &lm, &frames, 1.0, &config, |s| masks.extend(s.spans.as_ref().map(Vec::len))))
            .unwrap();
    assert!(!masks.is_empty() && masks.iter().all(|&n| n == 2), "{masks:?}");
    assert!((1..=2).contains(&events.len()), "{events:?}");
}
