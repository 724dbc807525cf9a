//! Checkpoints in the Hugging Face layout plus `train_state.json`. Every file is replaced
//! atomically and the state is written last, recording a digest of the weights saved with it.
//! The set of files is not replaced atomically: a run stopped between the weights and the state
//! leaves weights one checkpoint ahead of the state, and resuming checks the digest so that such
//! a pair is refused instead of trained on from the wrong step.

use std::path::Path;

use glimpse_media::untrusted::read_regular_file;
use serde::{Deserialize, Serialize};

use crate::TrainError;

pub const STATE_FILE: &str = "train_state.json";

/// The weights file a checkpoint holds.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The most steps a run may be asked for.
pub const MAX_STEPS: usize = 1_000_000;

/// The most bytes read back as a state (a loss per step of the longest run fits).
const MAX_STATE_BYTES: u64 = 256 << 20;

/// The most bytes read back as weights: far beyond what `glimpse train` writes.
const MAX_WEIGHTS_BYTES: u64 = 16 << 30;

/// Where a training run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// `clip` or `lm`.
    pub kind: String,
    /// Steps done.
    pub step: usize,
    /// Steps the run was asked for.
    pub steps: usize,
    pub seed: u64,
    /// Mean loss over each checkpoint interval, `(last step, loss)`.
    pub losses: Vec<(usize, f32)>,
    /// [`digest`] of the weights saved with this state (set by [`save`]).
    pub weights_digest: String,
}

impl TrainState {
    /// A run at step 0.
    pub fn new(kind: &str, steps: usize, seed: u64) -> Self {
        Self { kind: kind.into(), step: 0, steps, seed, losses: Vec::new(), weights_digest: String::new() }
    }

    /// Checks a state read from disk: a step count beyond [`MAX_STEPS`] would train for days, a
    /// step beyond it means the file was edited or damaged.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(TrainError::Config(format!("steps = {} must be in 1..={MAX_STEPS}", self.steps)));
        }
        if self.step > self.steps {
            return Err(TrainError::Config(format!("step = {} is beyond steps = {}", self.step, self.steps)));
        }
        if let Some((step, loss)) = self.losses.iter().find(|(step, loss)| *step > self.step || !loss.is_finite()) {
            return Err(TrainError::Config(format!(
                "losses has ({step}, {loss}): a loss must be finite and recorded at a step already done"
            )));
        }
        Ok(())
    }
}

/// A 64-bit FNV-1a hash of `bytes` with their length: enough to tell the weights a state was
/// saved with from those of another checkpoint of the same run.
pub fn digest(bytes: &[u8]) -> String {
    format!("fnv1a64:{:016x}:{}", glimpse_media::files::fnv1a64(bytes), bytes.len())
}

fn io(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Io { path: path.display().to_string(), source }
}

/// Writes `files` (name, bytes) and `weights` into `dir`, then the state with the weights' digest.
pub fn save(dir: &Path, files: &[(&str, &[u8])], weights: &[u8], state: &mut TrainState) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    state.weights_digest = digest(weights);
    let state_json = serde_json::to_string_pretty(state).expect("state serialises");
    let all = files.iter().copied().chain([(WEIGHTS_FILE, weights), (STATE_FILE, state_json.as_bytes())]);
    for (name, bytes) in all {
        let path = dir.join(name);
        glimpse_media::write_atomically(&path, bytes).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The state in `dir`, if a run has left one there, checked ([`TrainState::validate`]).
pub(crate) fn load_state(dir: &Path) -> Result<Option<TrainState>, TrainError> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_regular_file(&path, MAX_STATE_BYTES)?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}; delete it to start afresh", path.display())))?;
    state.validate().map_err(|e| TrainError::Config(format!("{}: {e}; delete it to start afresh", path.display())))?;
    Ok(Some(state))
}

/// The weights in `dir` that `state` was saved with.
pub(crate) fn load_weights(dir: &Path, state: &TrainState) -> Result<Vec<u8>, TrainError> {
    let path = dir.join(WEIGHTS_FILE);
    let weights = read_regular_file(&path, MAX_WEIGHTS_BYTES)?;
    if digest(&weights) != state.weights_digest {
        return Err(TrainError::Config(format!(
            "{} is not the file {STATE_FILE} was saved with (a run stopped while saving a checkpoint); pass \
             --fresh to start over",
            path.display()
        )));
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_out_of_bounds_are_refused() {
        let state = TrainState { step: 10, ..TrainState::new("lm", 100, 0) };
        assert!(state.validate().is_ok());
        let bad = [
            TrainState { steps: usize::MAX, ..state.clone() },
            TrainState { steps: 0, step: 0, ..state.clone() },
            TrainState { step: 101, ..state.clone() },
            TrainState { losses: vec![(20, 1.0)], ..state.clone() },
        ];
        for state in bad {
            assert!(state.validate().is_err(), "{state:?}");
        }
    }

    #[test]
    fn weights_must_be_those_the_state_was_saved_with() {
        let dir = std::env::temp_dir().join(format!("glimpse-checkpoint-{}", std::process::id()));
        let mut state = TrainState::new("lm", 4, 0);
        save(&dir, &[("config.json", b"{}")], b"weights of step 2", &mut state).unwrap();
        let loaded = load_state(&dir).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert_eq!(load_weights(&dir, &loaded).unwrap(), b"weights of step 2");
        // Stopped after the weights of the next checkpoint, before its state.
        glimpse_media::write_atomically(&dir.join(WEIGHTS_FILE), b"weights of step 4").unwrap();
        let err = load_weights(&dir, &loaded).unwrap_err().to_string();
        assert!(err.contains("is not the file train_state.json was saved with"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
