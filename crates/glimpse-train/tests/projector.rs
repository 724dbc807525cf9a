//! Projector training on the GPT-2 fixture.

use burn::prelude::*;
use glimpse_align::projector::ProjectorConfig;
use glimpse_models::{Gpt2Bundle, ModelFiles, Weights};
use glimpse_tests::{block_on, fixture, rewrite_safetensors, weight_bytes};
use glimpse_train::projector::{Example, TrainConfig, train};

/// Four one-hot embeddings, each with a one-token caption. A random (untrained) LM copies its
/// previous token into the next prediction and a prefix reaches later positions only through
/// attention, so longer captions have a loss floor no projector can cross; the first caption
/// token is decided at the last prefix position, which the projector controls entirely.
fn examples(clip_dim: usize) -> Vec<Example> {
    [17u32, 64, 150, 333]
        .iter()
        .enumerate()
        .map(|(i, &token)| Example {
            embedding: (0..clip_dim).map(|j| if j == i { 1.0 } else { 0.0 }).collect(),
            caption: vec![token],
        })
        .collect()
}

/// The GPT-2 fixture with `ln_f` scaled by 4, i.e. every logit scaled by 4. The fixture's random
/// unit-norm embeddings cap what any prefix can do to about p = 0.4 per token (a loss floor near
/// 1 nat against 6.8 at the start); sharper logits leave room to show a 90% fall.
fn sharpened_lm(device: &Device) -> Gpt2Bundle {
    let mut files = ModelFiles::from_dir(fixture("gpt2-lmhead")).unwrap();
    files.weights = Weights::Bytes(
        rewrite_safetensors(&weight_bytes(&files), |tensors| {
            for (name, _, values) in tensors.iter_mut().filter(|(n, _, _)| n.starts_with("transformer.ln_f.")) {
                values.iter_mut().for_each(|v| *v *= 4.0);
                assert!(name.ends_with("weight") || name.ends_with("bias"));
            }
        })
        .into(),
    );
    Gpt2Bundle::load(&files, device).unwrap()
}

#[test]
fn projector_overfits_a_small_set() {
    let device = Device::flex();
    let lm = sharpened_lm(&device);
    let config = ProjectorConfig { clip_dim: 12, lm_dim: lm.model.n_embd(), prefix_len: 4, hidden: Some(64) };
    let projector = config.init(&device.clone().autodiff());
    let train_config = TrainConfig { epochs: 150, lr: 1e-2, batch_size: 4 };
    let data = examples(12);
    let (_, losses) = block_on(train(projector, &lm.model, &data, &train_config, |_, _| {})).unwrap();
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last <= 0.1 * first, "loss fell from {first} to {last} only");
}
