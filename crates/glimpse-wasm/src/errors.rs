//! Errors cross into JavaScript as `Error` objects whose `name` says what went wrong; the npm
//! package maps each name to its own class.

use std::fmt::Display;

use wasm_bindgen::JsValue;

/// A model's files are missing, malformed or do not fit the config; the message names the file
/// or tensor.
pub const MODEL_LOAD: &str = "ModelLoadError";
/// WebGPU was asked for but the browser gave no adapter or device.
#[cfg_attr(target_feature = "atomics", allow(dead_code))]
pub const NO_ADAPTER: &str = "NoAdapterError";
/// Frames, images, texts or options the engine cannot use.
pub const INPUT: &str = "InputError";
/// Anything else (a failed readback, an optimisation error).
pub const ENGINE: &str = "GlimpseError";

/// Where the panic hook leaves the last panic's message (read by the worker after a trap).
const PANIC_SLOT: &str = "__glimpsePanic";

pub fn js_error(name: &str, message: impl Display) -> JsValue {
    let error = js_sys::Error::new(&message.to_string());
    error.set_name(name);
    error.into()
}

/// `error` with its causes, `outer: inner: innermost`.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

pub fn engine(error: impl std::error::Error) -> JsValue {
    js_error(ENGINE, with_causes(&error))
}

/// Settings and inputs the pipeline refuses are the caller's to fix; anything else is the engine's.
pub fn align(error: glimpse_align::AlignError) -> JsValue {
    let name = if error.is_callers() { INPUT } else { ENGINE };
    js_error(name, with_causes(&error))
}

/// A model call after loading: texts and images it refuses are the caller's to fix.
pub fn model(error: glimpse_models::ModelError) -> JsValue {
    let name = if error.is_callers() { INPUT } else { ENGINE };
    js_error(name, with_causes(&error))
}

pub fn input(message: impl Display) -> JsValue {
    js_error(INPUT, message)
}

pub fn record_panic(message: &str) {
    let _ = js_sys::Reflect::set(&js_sys::global(), &PANIC_SLOT.into(), &message.into());
}
