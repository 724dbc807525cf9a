//! Moment masks: gradients against finite differences, and planted events recovered only with
//! the pairwise tIoU loss.

use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use glimpse_align::moment::{MomentMasks, TemperatureSchedule, pairwise_tiou, pool_with_contrast};
use glimpse_media::rng::Rng;
use glimpse_media::span::tiou;

fn device() -> Device {
    Device::flex().autodiff()
}

/// A uniform value in `[-1, 1)` with the 24 bits an `f32` holds exactly.
fn signed(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
}

/// A random unit vector of `d` dimensions.
fn unit_vector(rng: &mut Rng, d: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..d).map(|_| signed(rng)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// A scalar loss that uses every piece: pooling, the tIoU term and the contrast term.
fn loss(masks: &MomentMasks, frames: &Tensor<2>, target: &Tensor<2>) -> Tensor<1> {
    let m = masks.masks(frames.dims()[0], 0.05);
    let (moments, contrast) = pool_with_contrast(m.clone(), frames.clone());
    let sim = (moments * target.clone()).sum_dim(1).mean();
    sim.neg() + pairwise_tiou(m) * 0.7 + contrast * 0.3
}

#[test]
fn gradients_match_finite_differences() {
    let device = device();
    let mut rng = Rng::new(7);
    let (n, d, k) = (30, 8, 3);
    let frames = Tensor::<2>::from_data(
        TensorData::new((0..n).flat_map(|_| unit_vector(&mut rng, d)).collect::<Vec<_>>(), [n, d]),
        &device,
    );
    let target = Tensor::<2>::from_data(
        TensorData::new((0..k).flat_map(|_| unit_vector(&mut rng, d)).collect::<Vec<_>>(), [k, d]),
        &device,
    );
    let centre = vec![-0.8f32, 0.1, 0.9];
    let width = vec![0.2f32, -0.5, 0.4];
    let build = |c: &[f32], w: &[f32]| {
        MomentMasks::from_raw(
            Tensor::from_data(TensorData::new(c.to_vec(), [k]), &device),
            Tensor::from_data(TensorData::new(w.to_vec(), [k]), &device),
            0.05,
        )
    };
    let masks = build(&centre, &width);
    let grads = loss(&masks, &frames, &target).backward();
    let (c_raw, w_raw) = masks.raw();
    let analytic = [values(c_raw.grad(&grads).unwrap()), values(w_raw.grad(&grads).unwrap())];

    let eps = 1e-2f32;
    for (which, grad) in analytic.iter().enumerate() {
        for i in 0..k {
            let shifted = |delta: f32| {
                let (mut c, mut w) = (centre.clone(), width.clone());
                if which == 0 {
                    c[i] += delta
                } else {
                    w[i] += delta
                }
                values(loss(&build(&c, &w), &frames, &target))[0]
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
            let err = (numeric - grad[i]).abs();
            assert!(
                err <= 2e-3 + 2e-2 * numeric.abs(),
                "{} {i}: autodiff {} vs finite difference {numeric}",
                ["centre", "width"][which],
                grad[i]
            );
        }
    }
}

const FRAMES: usize = 60;
const SEGMENTS: [(usize, usize); 3] = [(5, 20), (25, 40), (43, 58)];

/// Frames of three planted events on a background, and one target embedding per event; the
/// middle event is the most distinct, so masks that start near the middle all like it best.
fn planted(device: &Device) -> (Tensor<2>, Tensor<2>) {
    let mut rng = Rng::new(11);
    let d = 16;
    let events: Vec<Vec<f32>> = (0..3).map(|_| unit_vector(&mut rng, d)).collect();
    let background = unit_vector(&mut rng, d);
    let mut frames = Vec::new();
    for t in 0..FRAMES {
        let base = SEGMENTS.iter().position(|&(s, e)| (s..e).contains(&t)).map_or(&background, |k| &events[k]);
        let noise = if base == &events[1] { 0.1 } else { 0.3 };
        let v: Vec<f32> = base.iter().map(|x| x + noise * signed(&mut rng) / (d as f32).sqrt()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        frames.extend(v.into_iter().map(|x| x / n));
    }
    let frames = Tensor::from_data(TensorData::new(frames, [FRAMES, d]), device);
    let targets = Tensor::from_data(TensorData::new(events.concat(), [3, d]), device);
    (frames, targets)
}

/// Optimises three masks that start overlapping in the middle; each wants to match *some* event
/// (a soft maximum over the targets, as a caption follows whatever its mask shows).
fn optimise(tiou_weight: f64) -> Vec<(f64, f64)> {
    let device = device();
    let (frames, targets) = planted(&device);
    let mut masks = MomentMasks::new(&[(0.42, 0.3), (0.5, 0.3), (0.58, 0.3)], 0.05, &device);
    let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
    let schedule = TemperatureSchedule { start: 0.05, end: 0.01 };
    let steps = 300;
    for step in 0..steps {
        let m = masks.masks(FRAMES, schedule.at(step, steps));
        let (moments, contrast) = pool_with_contrast(m.clone(), frames.clone());
        let sims = moments.matmul(targets.clone().transpose());
        let best_match = (sims / 0.05).exp().sum_dim(1).log().mean() * 0.05;
        let loss = best_match.neg() + contrast * 0.5 + pairwise_tiou(m) * tiou_weight;
        let grads = GradientsParams::from_grads(loss.backward(), &masks);
        masks = optim.step(0.05, masks, grads);
    }
    let (c, w) = masks.spans();
    let (c, w) = (values(c), values(w));
    c.iter()
        .zip(&w)
        .map(|(&c, &w)| (f64::from(c - w / 2.0) * FRAMES as f64, f64::from(c + w / 2.0) * FRAMES as f64))
        .collect()
}

#[test]
fn planted_events_are_recovered_with_the_pairwise_loss() {
    let found = optimise(1.0);
    for &(s, e) in &SEGMENTS {
        let best = found.iter().map(|&f| tiou(f, (s as f64, e as f64))).fold(0.0, f64::max);
        assert!(best >= 0.8, "event {s}..{e}: best tIoU {best:.3}; masks {found:?}");
    }
}

#[test]
fn without_the_pairwise_loss_masks_collapse() {
    let found = optimise(0.0);
    let overlapping = (0..3).flat_map(|i| (i + 1..3).map(move |j| (i, j))).any(|(i, j)| tiou(found[i], found[j]) > 0.5);
    assert!(overlapping, "expected two masks on one event; masks {found:?}");
}
