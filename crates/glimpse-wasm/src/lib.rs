//! Browser bindings of glimpse (wasm-bindgen), the engine behind the npm package in `web/package`.
//!
//! No algorithm lives here. [`Session`] holds a CLIP and a GPT-2 that `glimpse-models` loads from
//! their Hugging Face files (JavaScript's buffers; weights read tensor by tensor from a buffer or a Blob) and forwards every call to
//! `glimpse-align`, as the desktop binary does. Everything that touches tensors is async and reads
//! values back with `into_data_async` only: a browser cannot block on the GPU.
//!
//! Built twice (`web/build.sh`): for every page, and with wasm's `atomics` for cross-origin isolated
//! ones, where it has the CPU backend alone and runs it on rayon's threads, each a Web Worker that
//! instantiates this module on the same memory (`threads`).
//!
//! The JavaScript side (`web/package/src/worker.js`) runs this module in a dedicated Web Worker,
//! checks `navigator.gpu` and the adapter before asking for WebGPU (wgpu aborts the module when
//! there is none) and turns errors into typed classes by their `name` (see [`errors`]).
#![cfg(target_family = "wasm")]

mod device;
mod errors;
mod session;
#[cfg(target_feature = "atomics")]
mod threads;

pub use session::{Session, Video};
#[cfg(target_feature = "atomics")]
pub use threads::{ThreadPool, compiled_module, run_thread};

use wasm_bindgen::prelude::*;

unsafe extern "C" {
    /// The module's static constructors (CubeCL registers its IR's operations in some), made by
    /// the linker.
    fn __wasm_call_ctors();
}

/// Runs when the module is instantiated: runs the static constructors, and keeps a Rust panic's
/// message where the worker can report it (a panic aborts the module with a bare
/// `RuntimeError: unreachable`). In the threaded engine wasm-bindgen runs it on the first instance
/// only, so the constructors run once on the memory the threads share.
#[wasm_bindgen(start)]
fn start() {
    // Called once here: without an explicit call, wasm-ld makes every export (each call from
    // JavaScript, each JavaScript value handed over) run all the constructors again first, which
    // was a seventh of the engine's time in the demo.
    unsafe { __wasm_call_ctors() };
    std::panic::set_hook(Box::new(|info| errors::record_panic(&info.to_string())));
}
