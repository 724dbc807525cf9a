//! Test-time alignment: small parameters optimised with Burn autodiff at inference time, on
//! whatever device the user has. Backend-agnostic; builds for wasm32.

pub mod moment;
