//! Projector persistence: saved and reloaded, foreign files refused.

use burn::prelude::*;
use glimpse_align::projector::{Projector, ProjectorConfig};
use glimpse_tests::{block_on, fixture};

#[test]
fn a_saved_projector_reloads_to_identical_output() {
    let device = Device::flex();
    for hidden in [None, Some(20)] {
        let config = ProjectorConfig { clip_dim: 12, lm_dim: 36, prefix_len: 3, hidden };
        let projector = config.init(&device);
        let input = Tensor::<2>::random([2, 12], burn::tensor::Distribution::Default, &device);
        let before = projector.forward(input.clone()).into_data();
        let bytes = block_on(projector.to_safetensors()).unwrap();
        let reloaded = Projector::from_safetensors(&bytes, &device).unwrap();
        assert_eq!(reloaded.config(), &config);
        assert_eq!(reloaded.forward(input).into_data(), before, "hidden = {hidden:?}");
    }
}

#[test]
fn foreign_files_are_not_projectors() {
    let device = Device::flex();
    let gpt2 = std::fs::read(fixture("gpt2-lmhead").join("model.safetensors")).unwrap();
    let err = Projector::from_safetensors(&gpt2, &device).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("not a glimpse projector"), "{err}");
    let err = Projector::from_safetensors(b"junk", &device).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("not a readable safetensors file"), "{err}");
}
