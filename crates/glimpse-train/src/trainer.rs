//! The optimisation loop shared by every model glimpse trains: AdamW with a linear warm-up and a
//! cosine decay, one step per call, on a module that lives on an autodiff device.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use glimpse_models::tensor::read;

use crate::TrainError;

/// The learning-rate schedule of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub lr: f64,
    pub warmup: usize,
    /// Total steps of the run.
    pub steps: usize,
    /// The fraction of `lr` the cosine decays to (1: no decay).
    pub floor: f64,
}

impl Schedule {
    /// Linear warm-up over `warmup` steps, then cosine decay to 10 % at `steps`.
    pub fn cosine(lr: f64, warmup: usize, steps: usize) -> Self {
        Self { lr, warmup, steps, floor: 0.1 }
    }

    /// `lr` throughout `steps`.
    pub fn constant(lr: f64, steps: usize) -> Self {
        Self { lr, warmup: 0, steps, floor: 1.0 }
    }

    /// Learning rate at `step`.
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.lr * (step + 1) as f64 / self.warmup as f64;
        }
        let progress = (step - self.warmup) as f64 / (self.steps.saturating_sub(self.warmup)).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
        self.lr * (self.floor + (1.0 - self.floor) * cosine)
    }
}

/// A model under training with its optimiser state and the steps done.
pub struct Trainer<M: Module> {
    pub model: M,
    /// Steps done.
    pub step: usize,
    optim: ModuleOptimizer,
    schedule: Schedule,
}

impl<M: Module> Trainer<M> {
    /// Continues from `step` (AdamW's moment estimates start afresh).
    pub fn new(model: M, step: usize, weight_decay: f32, schedule: Schedule) -> Self {
        let optim = AdamWConfig::new().with_weight_decay(weight_decay).init();
        Self { model, step, optim, schedule }
    }

    /// Whether the run has steps left before `until` (capped at the run's total).
    pub fn before(&self, until: usize) -> bool {
        self.step < until.min(self.schedule.steps)
    }

    /// One optimiser step down `loss` (computed from `self.model`); returns the loss's value.
    pub async fn step(&mut self, loss: Tensor<1>) -> Result<f32, TrainError> {
        let value = read::<1, Float, f32>(loss.clone().detach()).await?[0];
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.model = self.optim.step(self.schedule.at(self.step), self.model.clone(), grads);
        self.step += 1;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_cosine_decay_to_a_tenth() {
        let schedule = Schedule::cosine(1.0, 10, 110);
        assert_eq!(schedule.at(0), 0.1);
        assert_eq!(schedule.at(9), 1.0);
        assert_eq!(schedule.at(10), 1.0);
        assert!((schedule.at(60) - 0.55).abs() < 1e-12);
        assert!((schedule.at(110) - 0.1).abs() < 1e-12);
        assert!((schedule.at(500) - 0.1).abs() < 1e-12, "stays at the floor after the run");
        let constant = Schedule::constant(0.5, 10);
        assert!((0..20).all(|step| constant.at(step) == 0.5));
    }
}
