// One thread of the threaded engine's pool: instantiates the engine's compiled module on the shared
// memory of the engine's worker (worker.js), says so, then runs the rayon thread the pool hands it
// for as long as the page (crates/glimpse-wasm/src/threads.rs).
import init, { runThread } from '../engine-threads/glimpse_wasm.js';

self.onmessage = async ({ data: { module, memory, crashChannel } }) => {
  try {
    await init({ module_or_path: module, memory });
  } catch (error) {
    self.postMessage({ error: `a thread could not start the engine: ${error?.message ?? error}` });
    return;
  }
  self.postMessage({ ready: true });
  try {
    runThread();
  } catch (error) {
    // A trap here (a panic) leaves the engine's worker waiting for this thread's work for ever:
    // the page is told directly, and stops that worker.
    const panic = self.__glimpsePanic ?? error?.message ?? String(error);
    new BroadcastChannel(crashChannel).postMessage({ message: `the engine stopped on one of its threads: ${panic}` });
  }
};
