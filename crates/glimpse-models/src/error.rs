//! Errors of model configuration and weight loading. Each says what is wrong and, where it can,
//! what to do about it.

use std::fmt;

/// A tensor the model expected but the file lacks, holds with the wrong shape or in a type glimpse
/// cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorProblem {
    Missing {
        name: String,
        expected: Vec<usize>,
    },
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    DType {
        name: String,
        dtype: String,
    },
    /// An 8-bit tensor the file's header does not account for, or its scales out of range.
    Quantization {
        name: String,
        why: String,
    },
    /// The file could not be read where the header says the tensor is (e.g. cut short since).
    Unreadable {
        name: String,
        why: String,
    },
    /// A value is NaN, infinite or beyond [`MAX_WEIGHT`](crate::weights::MAX_WEIGHT) (`value` as
    /// read): every output it reaches would be NaN, or may overflow to it.
    OutOfRange {
        name: String,
        index: usize,
        value: String,
    },
}

impl TensorProblem {
    /// Whether the tensor is where the config says, but its stored values are unusable.
    fn is_damage(&self) -> bool {
        matches!(self, Self::Quantization { .. } | Self::Unreadable { .. } | Self::OutOfRange { .. })
    }
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { name, expected } => {
                write!(f, "missing tensor `{name}` (expected shape {expected:?})")
            }
            Self::Shape { name, expected, found } => {
                write!(f, "tensor `{name}` has shape {found:?}, the config implies {expected:?}")
            }
            Self::DType { name, dtype } => {
                write!(
                    f,
                    "tensor `{name}` is stored as {dtype}; glimpse reads F32, F16, BF16 and F64 (and I8 for the \
                     dense weights and token embeddings of a q8 file)"
                )
            }
            Self::Quantization { name, why } => write!(f, "tensor `{name}` cannot be read as 8-bit weights: {why}"),
            Self::Unreadable { name, why } => write!(f, "tensor `{name}` cannot be read: {why}"),
            Self::OutOfRange { name, index, value } => write!(f, "tensor `{name}` holds {value} at element {index}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// `config.json` (or another JSON file) does not parse or misses a required field.
    #[error("{file}: {message}")]
    Config { file: &'static str, message: String },

    /// The config parses but describes a model glimpse cannot build.
    #[error("config.json: {0}")]
    InvalidConfig(String),

    /// The safetensors file itself is unreadable: truncated, corrupt header, bad offsets.
    #[error("model.safetensors is not a readable safetensors file ({0}); re-download or re-export it")]
    CorruptWeights(String),

    /// The file is readable but does not fit the config.
    #[error("model.safetensors does not fit config.json:\n{}", format_mismatch(.problems, .unexpected))]
    WeightMismatch { problems: Vec<TensorProblem>, unexpected: Vec<String> },

    /// A request the model cannot serve, e.g. a sequence longer than its position table.
    #[error("{0}")]
    Input(String),

    /// Tokenizer or preprocessing files, or a text or image they cannot take.
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),

    /// A checkpoint's folder lacks a file or holds one that cannot be read as given.
    #[error("{0}")]
    Layout(String),

    /// An error of one checkpoint's files, naming the checkpoint.
    #[error("{checkpoint}")]
    Checkpoint { checkpoint: String, source: Box<ModelError> },

    /// A tensor could not be read back from the device.
    #[error("reading a result back from the device failed: {0}")]
    Readback(String),
}

fn format_mismatch(problems: &[TensorProblem], unexpected: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut lines: Vec<String> = problems.iter().take(SHOWN).map(|p| format!("  - {p}")).collect();
    if problems.len() > SHOWN {
        lines.push(format!("  - ... and {} more problems", problems.len() - SHOWN));
    }
    if !unexpected.is_empty() {
        let shown: Vec<&str> = unexpected.iter().take(SHOWN).map(String::as_str).collect();
        let more = unexpected.len().saturating_sub(SHOWN);
        let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
        lines.push(format!("  - unexpected tensors (not used by this config): {}{tail}", shown.join(", ")));
    }
    if unexpected.is_empty() && problems.iter().all(TensorProblem::is_damage) {
        lines.push("  The file is damaged: re-download or re-export it.".into());
    } else {
        lines.push("  Check that config.json belongs to this model.safetensors.".into());
    }
    lines.join("\n")
}

impl ModelError {
    /// Whether a call on a loaded model failed on what the caller passed (a text or image it
    /// cannot take, a sequence too long), as opposed to the model or the device.
    pub fn is_callers(&self) -> bool {
        matches!(self, Self::Input(_) | Self::Media(_))
    }

    pub(crate) fn config(file: &'static str, err: impl fmt::Display) -> Self {
        Self::Config { file, message: err.to_string() }
    }
}
