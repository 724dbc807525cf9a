//! Checkpoints in the Hugging Face layout plus `train_state.json`, which records a digest of the
//! weights saved with it. Every file is replaced atomically, but the set is not: the new state is
//! written first under a pending name, then the weights, then the state is moved into place. A
//! run stopped anywhere in between leaves a pair that goes together, the old state with the old
//! weights or the pending state with the new ones, and resuming takes whichever it is
//! ([`load_state`]); weights that match neither are refused, never trained on from the wrong step.

use std::path::Path;

use glimpse_media::untrusted::read_regular_file;
use serde::{Deserialize, Serialize};

use crate::TrainError;

pub const STATE_FILE: &str = "train_state.json";

/// The weights file a checkpoint holds.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The state of the checkpoint being saved, until its weights are in place (hidden: the folder
/// stays a model in the Hugging Face layout).
const PENDING_STATE_FILE: &str = ".train_state.json.pending";

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
    /// What the run was started with beside its steps and seed (batch size, learning rate, ...),
    /// which a resumed run must be given too; none in a state saved before they were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
}

impl TrainState {
    /// A run at step 0.
    pub fn new(kind: &str, steps: usize, seed: u64) -> Self {
        Self {
            kind: kind.into(),
            step: 0,
            steps,
            seed,
            losses: Vec::new(),
            weights_digest: String::new(),
            settings: None,
        }
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
        // One loss per checkpoint, in order: so at most one per step, and the file stays small.
        if let Some(pair) = self.losses.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
            return Err(TrainError::Config(format!(
                "losses has step {} after step {}: one loss per checkpoint, in order",
                pair[1].0, pair[0].0
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

/// Writes `files` (name, bytes) and `weights` into `dir` with the state and the weights' digest:
/// the state pending first, the weights, then the state in place (see the module's header).
pub fn save(dir: &Path, files: &[(&str, &[u8])], weights: &[u8], state: &mut TrainState) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    state.weights_digest = digest(weights);
    let state_json = serde_json::to_string_pretty(state).expect("state serialises");
    let pending = dir.join(PENDING_STATE_FILE);
    glimpse_media::write_atomically(&pending, state_json.as_bytes()).map_err(|e| io(&pending, e))?;
    for (name, bytes) in files.iter().copied().chain([(WEIGHTS_FILE, weights)]) {
        let path = dir.join(name);
        glimpse_media::write_atomically(&path, bytes).map_err(|e| io(&path, e))?;
    }
    let path = dir.join(STATE_FILE);
    std::fs::rename(&pending, &path).map_err(|e| io(&path, e))
}

/// The state in `dir`, if a run has left one there, checked ([`TrainState::validate`]). A state
/// left pending by a run stopped while saving replaces the one in place where the weights are
/// those it was saved with, and is removed where they are not.
pub(crate) fn load_state(dir: &Path) -> Result<Option<TrainState>, TrainError> {
    let pending = dir.join(PENDING_STATE_FILE);
    if std::fs::symlink_metadata(&pending).is_ok() {
        let saved = read_state(&pending).ok().filter(|state| weights_of(dir, state).is_ok());
        match saved {
            Some(_) => std::fs::rename(&pending, dir.join(STATE_FILE)),
            None => std::fs::remove_file(&pending),
        }
        .map_err(|e| io(&pending, e))?;
    }
    let path = dir.join(STATE_FILE);
    // A link to nothing is a state that cannot be read, not no state.
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    read_state(&path).map(Some)
}

fn read_state(path: &Path) -> Result<TrainState, TrainError> {
    let bytes = read_regular_file(path, MAX_STATE_BYTES)
        .map_err(|e| TrainError::Config(format!("{e}; delete it to start afresh")))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}; delete it to start afresh", path.display())))?;
    state.validate().map_err(|e| TrainError::Config(format!("{}: {e}; delete it to start afresh", path.display())))?;
    Ok(state)
}

/// The weights in `dir` that `state` was saved with.
pub(crate) fn load_weights(dir: &Path, state: &TrainState) -> Result<Vec<u8>, TrainError> {
    let path = dir.join(WEIGHTS_FILE);
    weights_of(dir, state)
        .map_err(|why| TrainError::Config(format!("{} {why}; pass --fresh to start over", path.display())))
}

/// [`load_weights`], in f32 or f16: 8-bit weights (`models convert --dtype q8`) are no training
/// checkpoint (the optimiser would step their bytes).
pub(crate) fn load_trainable_weights(dir: &Path, state: &TrainState) -> Result<Vec<u8>, TrainError> {
    let weights = load_weights(dir, state)?;
    let file = glimpse_models::weights::WeightFile::parse(&weights)?;
    let quantized = file.names().iter().any(|name| file.is_quantized(name));
    drop(file);
    if quantized {
        return Err(TrainError::Config(format!(
            "{} holds 8-bit weights, which cannot be trained; resume from the f32 checkpoint, or pass --fresh",
            dir.join(WEIGHTS_FILE).display()
        )));
    }
    Ok(weights)
}

/// Removes the temporary files (`glimpse_media::files::stale_temporary_of`) that writers now gone
/// left in `dir`: each run killed while saving leaves one, as large as the weights.
pub(crate) fn remove_stale_temporaries(dir: &Path) -> Result<(), TrainError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        if glimpse_media::files::stale_temporary_of(&entry.file_name().to_string_lossy()).is_some() {
            let path = entry.path();
            glimpse_media::files::remove_if_present(&path).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// The weights in `dir` if they are those `state` was saved with; why not otherwise. The digest
/// holds the length, which is checked before anything is read.
fn weights_of(dir: &Path, state: &TrainState) -> Result<Vec<u8>, String> {
    let path = dir.join(WEIGHTS_FILE);
    let length = std::fs::metadata(&path).map_err(|e| format!("cannot be read ({e})"))?.len();
    let saved_length = state.weights_digest.rsplit(':').next().and_then(|n| n.parse::<u64>().ok());
    let not_saved = || format!("is not the file {STATE_FILE} was saved with");
    if saved_length != Some(length) {
        return Err(not_saved());
    }
    let weights = read_regular_file(&path, MAX_WEIGHTS_BYTES).map_err(|e| e.to_string())?;
    if digest(&weights) != state.weights_digest {
        return Err(not_saved());
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
            TrainState { losses: vec![(4, 1.0), (4, 1.0)], ..state.clone() },
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
        // Weights of no checkpoint of the run (another file put in their place).
        glimpse_media::write_atomically(&dir.join(WEIGHTS_FILE), b"weights of step 4").unwrap();
        let err = load_weights(&dir, &loaded).unwrap_err().to_string();
        assert!(err.contains("is not the file train_state.json was saved with"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A folder whose weights were converted to q8 (with a state made to match) is not trained:
    /// the optimiser would step their bytes.
    #[test]
    fn eight_bit_weights_are_no_checkpoint() {
        use glimpse_models::weights::{Q8_SCHEME, QUANTIZATION_KEY};
        let dir = std::env::temp_dir().join(format!("glimpse-checkpoint-q8-{}", std::process::id()));
        let header = serde_json::json!({
            "__metadata__": {QUANTIZATION_KEY: Q8_SCHEME},
            "w": {"dtype": "I8", "shape": [1, 32], "data_offsets": [0, 32]},
        })
        .to_string();
        let file = [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &[1u8; 32]].concat();
        let mut state = TrainState::new("lm", 4, 0);
        save(&dir, &[], &file, &mut state).unwrap();
        assert_eq!(load_weights(&dir, &state).unwrap(), file);
        let err = load_trainable_weights(&dir, &state).unwrap_err().to_string();
        assert!(err.contains("holds 8-bit weights, which cannot be trained"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A run stopped at any point of a save resumes from a pair that goes together: stopped
    /// after the pending state, the old pair; after the weights too, the new pair.
    #[test]
    fn a_save_stopped_midway_leaves_a_pair_to_resume_from() {
        let dir = std::env::temp_dir().join(format!("glimpse-checkpoint-midway-{}", std::process::id()));
        let mut state = TrainState::new("lm", 4, 0);
        state.step = 2;
        save(&dir, &[], b"weights of step 2", &mut state).unwrap();
        let mut next = TrainState { step: 4, ..state.clone() };
        next.weights_digest = digest(b"weights of step 4");
        let pending = serde_json::to_string(&next).unwrap();

        // Stopped before the weights: the pending state is dropped.
        std::fs::write(dir.join(PENDING_STATE_FILE), &pending).unwrap();
        let loaded = load_state(&dir).unwrap().unwrap();
        assert_eq!((loaded.step, load_weights(&dir, &loaded).unwrap()), (2, b"weights of step 2".to_vec()));
        assert!(!dir.join(PENDING_STATE_FILE).exists());

        // Stopped after the weights, before the state was moved into place: the new pair.
        std::fs::write(dir.join(PENDING_STATE_FILE), &pending).unwrap();
        glimpse_media::write_atomically(&dir.join(WEIGHTS_FILE), b"weights of step 4").unwrap();
        let loaded = load_state(&dir).unwrap().unwrap();
        assert_eq!((loaded.step, load_weights(&dir, &loaded).unwrap()), (4, b"weights of step 4".to_vec()));
        assert!(!dir.join(PENDING_STATE_FILE).exists());

        // A stale temporary of a writer gone is removed; one of this process stays (where `/proc`
        // tells them apart).
        #[cfg(target_os = "linux")]
        {
            let (gone, live) =
                (".model.safetensors.4194304.0.tmp", format!(".model.safetensors.{}.0.tmp", std::process::id()));
            for name in [gone, live.as_str()] {
                std::fs::write(dir.join(name), b"partial").unwrap();
            }
            remove_stale_temporaries(&dir).unwrap();
            assert!(!dir.join(gone).exists() && dir.join(&live).exists());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
