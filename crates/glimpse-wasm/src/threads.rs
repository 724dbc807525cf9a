//! The threaded engine's pool (built with `atomics`, for cross-origin isolated pages): rayon's
//! global pool, each of its threads a Web Worker that runs this module on the same shared memory.
//!
//! A worker that creates another cannot block until that one has started (the browser starts it
//! from the creator's event loop), so the engine's worker (`web/package/src/worker.js`) starts
//! them first: it makes a [`ThreadPool`], starts one worker per thread (`threads.js`), each of
//! which instantiates the module and waits in [`run_thread`], and once all of them wait it calls
//! [`ThreadPool::start`], which hands them rayon's threads. Nothing may use rayon before: it would
//! start a default pool, whose threads wasm cannot spawn.

use std::sync::{Arc, Mutex, mpsc};

use wasm_bindgen::prelude::*;

use crate::errors::{ENGINE, js_error};

/// Where the workers take rayon's threads from.
type Handoff = Mutex<mpsc::Receiver<rayon::ThreadBuilder>>;

/// rayon's global pool, before its threads run.
#[wasm_bindgen]
pub struct ThreadPool {
    threads: usize,
    sender: mpsc::Sender<rayon::ThreadBuilder>,
    handoff: Arc<Handoff>,
}

#[wasm_bindgen]
impl ThreadPool {
    #[wasm_bindgen(constructor)]
    pub fn new(threads: usize) -> Result<ThreadPool, JsValue> {
        if threads == 0 {
            return Err(js_error(ENGINE, "a thread pool needs a thread"));
        }
        let (sender, receiver) = mpsc::channel();
        Ok(ThreadPool { threads, sender, handoff: Arc::new(Mutex::new(receiver)) })
    }

    /// What one worker passes to [`run_thread`]: the hand-off's address, counted as one reference.
    pub fn handoff(&self) -> usize {
        Arc::into_raw(Arc::clone(&self.handoff)) as usize
    }

    /// Makes this rayon's global pool; call once every worker waits in [`run_thread`].
    pub fn start(self) -> Result<(), JsValue> {
        let sender = self.sender;
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .spawn_handler(move |thread| sender.send(thread).map_err(|_| std::io::Error::other("no worker waits")))
            .build_global()
            .map_err(|e| js_error(ENGINE, format!("the thread pool could not start: {e}")))
    }
}

/// Runs one of rayon's threads in this worker, once [`ThreadPool::start`] hands it one; returns
/// only when the pool ends.
///
/// `handoff` is a value of [`ThreadPool::handoff`], each used once.
#[wasm_bindgen(js_name = runThread)]
pub fn run_thread(handoff: usize) {
    // SAFETY: `handoff` came from `Arc::into_raw` in `ThreadPool::handoff`, which counted this
    // reference; it is given back here once.
    let handoff = unsafe { Arc::from_raw(handoff as *const Handoff) };
    let thread = handoff.lock().ok().and_then(|receiver| receiver.recv().ok());
    drop(handoff);
    if let Some(thread) = thread {
        thread.run();
    }
}
