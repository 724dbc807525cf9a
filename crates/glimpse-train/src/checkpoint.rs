//! Checkpoints in the Hugging Face layout plus `train_state.json`. Every file is replaced
//! atomically and the state is written last, so the step it names always matches the weights
//! beside it, and an interrupted run resumes from the last complete checkpoint.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;

pub const STATE_FILE: &str = "train_state.json";

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
}

/// Writes `files` (name, bytes) into `dir`, then the state.
pub fn save(dir: &Path, files: &[(&str, &[u8])], state: &TrainState) -> Result<(), TrainError> {
    let io = |path: &Path, source| TrainError::Io { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let state_json = serde_json::to_string_pretty(state).expect("state serialises");
    for (name, bytes) in files.iter().copied().chain([(STATE_FILE, state_json.as_bytes())]) {
        let path = dir.join(name);
        glimpse_media::write_atomically(&path, bytes).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// The state in `dir`, if a run has left one there.
pub fn load_state(dir: &Path) -> Result<Option<TrainState>, TrainError> {
    let path = dir.join(STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TrainError::Config(format!("{}: {e}; delete it to start afresh", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::Io { path: path.display().to_string(), source: e }),
    }
}
