//! The threaded engine's pool (built with `atomics`, for cross-origin isolated pages): rayon's
//! global pool, each of its threads a Web Worker that runs this module on the same shared memory.
//!
//! A worker that creates another cannot block until that one has started (the browser starts it
//! from the creator's event loop), so the engine's worker (`web/package/src/worker.js`) starts
//! them first: it makes a [`ThreadPool`], starts one worker per thread (`threads.js`), each of
//! which instantiates the module (compiled once: [`compiled_module`]) and waits in [`run_thread`], and
//! once all of them wait it calls [`ThreadPool::start`], which hands them rayon's threads. Nothing
//! may use rayon before: it would start a default pool, whose threads wasm cannot spawn.

use std::sync::{Mutex, OnceLock, mpsc};

use wasm_bindgen::prelude::*;

use crate::errors::{ENGINE, js_error};

/// Where the workers take rayon's threads from: in the module's memory, which they all share.
static HANDOFF: OnceLock<Mutex<mpsc::Receiver<rayon::ThreadBuilder>>> = OnceLock::new();

/// rayon's global pool, before its threads run; one per module.
#[wasm_bindgen]
pub struct ThreadPool {
    threads: usize,
    sender: mpsc::Sender<rayon::ThreadBuilder>,
}

#[wasm_bindgen]
impl ThreadPool {
    #[wasm_bindgen(constructor)]
    pub fn new(threads: usize) -> Result<ThreadPool, JsValue> {
        if threads == 0 {
            return Err(js_error(ENGINE, "a thread pool needs a thread"));
        }
        let (sender, receiver) = mpsc::channel();
        HANDOFF.set(Mutex::new(receiver)).map_err(|_| js_error(ENGINE, "this engine has a thread pool already"))?;
        Ok(ThreadPool { threads, sender })
    }

    /// Makes this rayon's global pool. Returns once every thread runs, so call it when `threads`
    /// workers wait in [`run_thread`].
    pub fn start(self) -> Result<(), JsValue> {
        let sender = self.sender;
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .spawn_handler(move |thread| sender.send(thread).map_err(|_| std::io::Error::other("the hand-off is gone")))
            .build_global()
            .map_err(|e| js_error(ENGINE, format!("the thread pool could not start: {e}")))
    }
}

/// Runs one of rayon's threads in this worker once [`ThreadPool::start`] hands it one; the pool,
/// rayon's global one, runs as long as the page.
#[wasm_bindgen(js_name = runThread)]
pub fn run_thread() {
    let thread = HANDOFF.get().and_then(|handoff| handoff.lock().ok()?.recv().ok());
    if let Some(thread) = thread {
        thread.run();
    }
}

/// The compiled module, which each thread's worker instantiates on the shared memory rather than
/// fetching and compiling it again.
#[wasm_bindgen(js_name = compiledModule)]
pub fn compiled_module() -> JsValue {
    wasm_bindgen::module()
}
