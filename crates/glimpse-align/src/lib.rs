//! Test-time alignment: small parameters optimised with Burn autodiff at inference time, on
//! whatever device the user has. Backend-agnostic; every readback is awaited, so it runs in the
//! browser as well.

pub mod guided;
pub mod magic;
pub mod moment;
pub mod prefix;
pub mod projector;
pub mod zerota;

#[derive(Debug, thiserror::Error)]
pub enum AlignError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] glimpse_models::ModelError),
    #[error(transparent)]
    Media(#[from] glimpse_media::MediaError),
    #[error(transparent)]
    Hub(#[from] glimpse_hub::HubError),
}
