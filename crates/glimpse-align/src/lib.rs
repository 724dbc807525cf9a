//! Test-time alignment: small parameters optimised with Burn autodiff at inference time, on
//! whatever device the user has. Backend-agnostic; every readback is awaited, so it runs in the
//! browser as well.

pub mod grounding;
pub mod guided;
pub mod magic;
pub mod moment;
pub mod prefix;
pub mod projector;
pub mod scenes;
pub mod zerota;

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    /// A setting outside its range: the caller's configuration, named by its field.
    #[error("{0}")]
    Settings(String),
    /// Inputs the pipeline cannot use: no frames, frames of different sizes, a projector that does
    /// not fit the models.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Model(#[from] glimpse_models::ModelError),
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),
}

impl AlignError {
    /// Whether the caller can fix this by changing what it passed (settings, frames, texts), as
    /// opposed to a failure of the models or the device.
    pub fn is_callers(&self) -> bool {
        match self {
            Self::Settings(_) | Self::Input(_) | Self::Media(_) => true,
            Self::Model(error) => error.is_callers(),
        }
    }
}
