// The engine's thread: loads the wasm engine (the threaded one with its pool's workers, where the
// page allows; `startEngine`), fetches model files (Cache API, byte progress) and runs every call of
// the facade in `index.js`. One job at a time; replies carry the job's id.
import { CACHE, CLIP_FILES, ErrorName, LM_FILES, LoadStatus, MAX_THREADS, Reply, Request } from './protocol.js';

const OPTIONAL = new Set(['preprocessor', 'processor']);
const WEIGHTS = 'weights';

// The engine's JavaScript module (`Session` among its exports) and its WebAssembly instance's
// exports (its memory among them), once started.
let engineModule = null;
let wasmExports = null;
let session = null;
let deviceKind = null;
// The video being received, from `startVideo` through its `videoFrames` chunks to `denseCaption`
// or `findMoments`; kept (embedded) afterwards, so further calls on the same source and rate reuse
// it. `videoKey` names its source and rate; `videoComplete` is set once a call on it has succeeded
// (a video whose chunks stopped midway is never reused).
let video = null;
let videoKey = null;
let videoComplete = false;
// The job in progress: a panic inside the engine's async code surfaces as an uncaught error of
// the worker, not as a rejection, so it is reported against this id.
let currentJob = null;

self.onmessage = async ({ data: { id, type, args } }) => {
  const post = (message, transfer) => self.postMessage({ id, ...message }, transfer ?? []);
  currentJob = id;
  try {
    const value = await run(type, args, (step) => post({ type: Reply.step, step }), (progress) => post({ type: Reply.progress, progress }));
    post({ type: Reply.result, value }, value instanceof Float32Array ? [value.buffer] : []);
  } catch (error) {
    post({ type: Reply.error, error: describe(error) });
  } finally {
    currentJob = null;
  }
};

const reportCrash = (error) => {
  if (currentJob === null) return false;
  self.postMessage({ id: currentJob, type: Reply.error, error: describe(error) });
  currentJob = null;
  return true;
};
self.addEventListener('error', (event) => { if (reportCrash(event.error ?? new WebAssembly.RuntimeError(event.message))) event.preventDefault(); });
self.addEventListener('unhandledrejection', (event) => { if (reportCrash(event.reason)) event.preventDefault(); });

async function run(type, args, onStep, onProgress) {
  switch (type) {
    case Request.load: return load(args, onProgress);
    case Request.embedImage: return session.embedImage(new Uint8Array(args.image.data.buffer), args.image.width, args.image.height);
    case Request.embedText: return session.embedText(args.text);
    case Request.captionImage: {
      const { image, options } = args;
      return JSON.parse(await session.captionImage(new Uint8Array(image.data.buffer), image.width, image.height, toJson(options), stepHandler(onStep)));
    }
    case Request.startVideo: {
      const key = `${args.key}@${args.fps}`;
      if (video && videoComplete && args.key != null && key === videoKey) return { reused: true };
      video?.free();
      // Cleared first: a refused start must not leave the freed video in place.
      video = null;
      video = session.startVideo(args.fps, args.length, args.start);
      videoKey = key;
      videoComplete = false;
      return { reused: false };
    }
    case Request.check: return check(args.call, args.args);
    case Request.videoFrames: return receivingVideo().push(args.frames, args.width, args.height);
    case Request.denseCaption: {
      const { events, maxEvents, seed, options } = args;
      return onVideo((frames) => session.denseCaption(frames, eventCount(events), maxEvents, BigInt(seed), toJson(options), stepHandler(onStep)));
    }
    case Request.findMoments:
      return onVideo((frames) => session.findMoments(frames, toJson(args.queries), toJson(args.options)));
    // WebAssembly memory only grows: its size is the engine's high-water mark.
    case Request.memoryUsage: return { engineBytes: wasmExports.memory.buffer.byteLength };
    default: throw new Error(`unknown request ${type}`);
  }
}

const stepHandler = (onStep) => (json) => onStep(JSON.parse(json));

// JSON for the engine, which reads text as UTF-8: a string cut inside a character the page
// encodes in two halves (an emoji cut by `slice`) has its lone half replaced by U+FFFD, as
// the engine's texts passed directly are, rather than failing to parse.
const toJson = (value) => JSON.stringify(value, (_, v) => (typeof v === 'string' ? v.replace(/\p{Surrogate}/gu, '\uFFFD') : v));

// denseCaption's `events` as the engine takes it: a count, or none for one per scene.
const eventCount = (events) => (events === 'auto' ? undefined : events);

// Refuses what the call `type` would refuse of `args` only once its video's frames are in.
function check(type, args) {
  switch (type) {
    case Request.denseCaption:
      session.checkDenseCaption(eventCount(args.events), args.maxEvents, toJson(args.options));
      return {};
    case Request.findMoments:
      session.checkFindMoments(toJson(args.queries), toJson(args.options));
      return {};
    default: throw new Error(`no check for ${type}`);
  }
}

// Runs a call on the received video. The video counts as complete (reusable by the next call on
// the same source) once a call has succeeded; after a failure it is dropped, so the next call
// streams its frames afresh rather than meeting the same failure.
async function onVideo(call) {
  const frames = receivingVideo();
  try {
    const result = JSON.parse(await call(frames));
    videoComplete = true;
    return result;
  } catch (error) {
    frames.free();
    video = null;
    videoKey = null;
    videoComplete = false;
    throw error;
  }
}

function receivingVideo() {
  if (!video) throw new Error('no video started: startVideo comes first');
  return video;
}

async function load({ device, threads, crashChannel, clip, lm }, onProgress) {
  let kind = await resolveDevice(device);
  const progress = new Progress(onProgress);
  // The engine (and its threads) start while the files download.
  const [threading, clipFiles, lmFiles] = await Promise.all([
    startEngine(kind, threads, crashChannel),
    gather('CLIP', clip, CLIP_FILES, progress),
    gather('GPT-2', lm, LM_FILES, progress),
  ]);
  progress.phase(LoadStatus.building);
  // Each worker loads once (the facade starts a fresh worker for every load), so there is no
  // earlier session or video to free.
  try {
    ({ kind, session } = await startSession(kind, clipFiles, lmFiles));
  } catch (error) {
    // Files the engine refuses must not stay cached: the next load fetches them again (a file
    // fixed on the server, or one a connection cut short without saying so).
    if (error?.name === ErrorName.modelLoad) await forget(progress.files.keys());
    throw error;
  }
  if (deviceKind === 'webgpu') {
    progress.phase(LoadStatus.warmup);
    await warmUp(session);
  }
  progress.phase(LoadStatus.ready);
  // Threads are the CPU backend's.
  const { threads: count, fallbackReason: threadsFallbackReason } = deviceKind === 'cpu' ? threading : {};
  return {
    ...JSON.parse(session.device()),
    fallbackReason: kind.fallbackReason,
    threads: count,
    threadsFallbackReason,
    imageSize: session.imageSize(),
  };
}

// How long the threads' workers may take to start before the engine goes on without them: each
// instantiates a module already compiled, which takes milliseconds.
const THREADS_START_MS = 20_000;

// The engine for `kind`: on the CPU of a cross-origin isolated page (the only kind that has shared
// memory), the threaded one with a pool of `threads` (`'auto'`: one per core the browser reports);
// else, or if that one cannot start, the one for every page, on one thread. Resolves to
// `{threads, fallbackReason?}`, the reason why one thread where more were wanted.
async function startEngine(kind, threads, crashChannel) {
  const wanted = threads === 'auto' ? Math.min(self.navigator.hardwareConcurrency || 1, MAX_THREADS) : threads;
  let fallbackReason;
  if (wanted > 1) {
    if (!self.crossOriginIsolated) {
      fallbackReason = 'the page is not cross-origin isolated (see the package README: COOP and COEP headers), so it has no shared memory';
    } else if (kind.kind !== 'cpu') {
      // Said only where WebGPU fails after all and the CPU takes over in this engine.
      fallbackReason = 'the CPU took over from WebGPU in the engine started for WebGPU, which has one thread';
    } else {
      try {
        ({ module: engineModule, exports: wasmExports } = await startThreadedEngine(wanted, crashChannel));
        return { threads: wanted };
      } catch (error) {
        fallbackReason = `the threaded engine could not start (${error?.message ?? error})`;
      }
    }
  }
  engineModule = await import('../engine/glimpse_wasm.js');
  wasmExports = await engineModule.default();
  return { threads: 1, fallbackReason };
}

// The threaded engine with its rayon pool: one worker per thread, each instantiating the module
// compiled here on this one's shared memory, all started before anything computes
// (crates/glimpse-wasm/src/threads.rs). Resolves to the engine's module and its instance's exports.
// On failure the workers started are stopped. A module whose start failed is not started again
// (its pool's hand-off is spent): each load has a fresh worker.
async function startThreadedEngine(threads, crashChannel) {
  const module = await import('../engine-threads/glimpse_wasm.js');
  const exports = await module.default();
  const compiled = module.compiledModule();
  if (!(compiled instanceof WebAssembly.Module)) throw new Error('the engine gave no compiled module to share');
  const pool = new module.ThreadPool(threads);
  const workers = [];
  let timer;
  let started = false;
  try {
    const ready = Promise.all(Array.from({ length: threads }, () => new Promise((resolve, reject) => {
      const worker = new Worker(new URL('./threads.js', import.meta.url), { type: 'module' });
      workers.push(worker);
      worker.onmessage = ({ data }) => (data.ready ? resolve() : reject(new Error(data.error)));
      worker.onmessageerror = () => reject(new Error('a thread could not receive the engine'));
      worker.onerror = (event) => {
        // Not the engine's own error: the single-threaded engine takes over.
        event.preventDefault();
        reject(new Error(event.message || 'a thread\'s worker failed to start'));
      };
      worker.postMessage({ module: compiled, memory: exports.memory, crashChannel });
    })));
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`its threads did not start within ${THREADS_START_MS / 1000} s`)), THREADS_START_MS);
    });
    await Promise.race([ready, late]);
    // Returns once every thread runs: all of them wait for it. It consumes the pool.
    started = true;
    pool.start();
  } catch (error) {
    for (const worker of workers) worker.terminate();
    if (!started) pool.free();
    throw error;
  } finally {
    clearTimeout(timer);
  }
  for (const worker of workers) worker.onmessage = worker.onmessageerror = worker.onerror = null;
  return { module, exports };
}

// The engine on the device `kind` names, and the kind it ended on: `auto` promised a working
// device, so if WebGPU cannot be set up after all, the CPU.
async function startSession(kind, clipFiles, lmFiles) {
  try {
    deviceKind = kind.kind;
    return { kind, session: await engineModule.Session.load(kind.kind, clipFiles, lmFiles) };
  } catch (error) {
    if (!(kind.automatic && error?.name === ErrorName.noAdapter)) throw error;
    deviceKind = 'cpu';
    const cpu = { kind: 'cpu', fallbackReason: `WebGPU could not be set up (${error.message})` };
    return { kind: cpu, session: await engineModule.Session.load('cpu', clipFiles, lmFiles) };
  }
}

// WebGPU compiles each shader the first time it runs: run both towers and one caption token on a
// grey image now, so the first call does not pay for the compilation of what every call uses.
async function warmUp(session) {
  const size = session.imageSize();
  const grey = new Uint8Array(size * size * 4).fill(128);
  await session.embedText('warm up');
  await session.embedImage(grey, size, size);
  await session.captionImage(grey, size, size, toJson({ maxTokens: 1 }), () => {});
}

// wgpu aborts the module when the browser has no WebGPU, so ask the browser first.
async function resolveDevice(requested) {
  if (requested === 'cpu') return { kind: 'cpu' };
  const adapter = self.navigator.gpu ? await self.navigator.gpu.requestAdapter().catch(() => null) : null;
  if (requested === 'webgpu') {
    if (!self.navigator.gpu) throw named(ErrorName.noAdapter, 'this browser has no WebGPU (navigator.gpu is missing); use device: "cpu"');
    if (!adapter) throw named(ErrorName.noAdapter, 'WebGPU is present but the browser gave no adapter; use device: "cpu"');
    return { kind: 'webgpu' };
  }
  if (!self.navigator.gpu) return { kind: 'cpu', fallbackReason: 'this browser has no WebGPU' };
  if (!adapter) return { kind: 'cpu', fallbackReason: 'WebGPU gave no adapter' };
  const isFallback = adapter.isFallbackAdapter ?? adapter.info?.isFallbackAdapter;
  if (isFallback) return { kind: 'cpu', fallbackReason: 'the only WebGPU adapter is a software one; the CPU backend is faster' };
  return { kind: 'webgpu', automatic: true };
}

// One model's files: a folder URL (Hugging Face layout) or an object of URLs / bytes per file.
async function gather(what, source, names, progress) {
  if (source == null) throw named(ErrorName.modelLoad, `${what}: no model given`);
  const entries = Object.entries(names).map(([field, file]) => {
    const given = typeof source === 'string' ? new URL(file, source.endsWith('/') ? source : `${source}/`).href : source[field];
    return [field, file, given];
  });
  const files = {};
  await Promise.all(entries.map(async ([field, file, given]) => {
    if (given == null) {
      if (!OPTIONAL.has(field)) throw named(ErrorName.modelLoad, `${what}: ${file} is missing`);
      return;
    }
    const bytes = typeof given === 'string' ? await download(what, field, given, progress) : await asBytes(what, field, given);
    if (bytes) files[field] = bytes;
  }));
  return files;
}

// The engine reads the weights out of a Blob range by range (one of at most 64 MiB at once), so a
// picked file stays on disk.
async function asBytes(what, field, value) {
  const size = value?.byteLength ?? value?.size;
  if (size > MAX_FILE_BYTES) throw named(ErrorName.modelLoad, `${what}: ${tooLarge(`the ${field} given`)}`);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  // Blob: the page lets nothing else through (index.js).
  return field === WEIGHTS ? value : new Uint8Array(await value.arrayBuffer());
}

// Fetches with byte progress. Through the Cache API when the page may use it: a miss streams the
// network's response into the cache (the browser writes it to disk as it comes), and the weights
// are then handed to the engine as the cached Blob, which it reads tensor by tensor, so a 1.1 GB
// checkpoint is never held in memory as a file. Without a cache (or when it refuses the file: its
// quota, a private window) a file goes into one buffer of its size.
async function download(what, field, url, progress) {
  progress.initiate(url);
  // Reading back a file just stored reports nothing new: progress never goes below what it said.
  const onBytes = (loaded) => progress.update(url, loaded);
  const cache = await openCache();
  let stored = await cache?.match(url);
  if (stored) {
    progress.download(url, announcedLength(stored));
  } else {
    const response = await fetchModelFile(what, url);
    // A development server answers a missing file with its page (Vite's fallback does, and a
    // single-page app's server): that is no model file, and for an optional one the same as a 404.
    const page = response.ok && (response.headers.get('content-type') ?? '').includes('text/html');
    if (!response.ok || page) {
      response.body?.cancel().catch(() => {});
      if (OPTIONAL.has(field) && (response.status === 404 || page)) {
        progress.done(url);
        return null;
      }
      if (page) throw named(ErrorName.modelLoad, `${what}: ${url} answered a web page, not the model's file: the server has no such file`);
      throw named(ErrorName.modelLoad, `${what}: ${url} answered ${response.status} ${response.statusText}`);
    }
    const total = announcedLength(response);
    progress.download(url, total);
    stored = cache && await storeInCache(what, url, cache, response, total, onBytes);
    if (!stored) {
      // No cache, or one that refused the file (its quota, a private window): into a buffer, from
      // the network again in the second case.
      const bytes = await readBody(what, url, cache ? await fetchModelFile(what, url) : response, onBytes);
      progress.done(url);
      return bytes;
    }
  }
  let file;
  if (field === WEIGHTS) {
    file = await stored.blob();
    onBytes(file.size);
  } else {
    file = await readBody(what, url, stored, onBytes);
  }
  progress.done(url);
  return file;
}

// The model cache, or null where the page may not use the Cache API.
async function openCache() {
  return self.caches ? self.caches.open(CACHE).catch(() => null) : null;
}

async function forget(urls) {
  const cache = await openCache();
  if (cache) await Promise.all([...urls].map((url) => cache.delete(url).catch(() => false)));
}

// A server that sends nothing for this long, before its answer or within its body, fails the load
// rather than holding it for ever.
const STALL_MS = 60_000;

async function fetchModelFile(what, url) {
  const answer = new AbortController();
  const timer = setTimeout(() => answer.abort(), STALL_MS);
  try {
    return await fetch(url, { signal: answer.signal });
  } catch (e) {
    const why = answer.signal.aborted ? `no answer in ${STALL_MS / 1000} s; check the server` : e.message;
    throw named(ErrorName.modelLoad, `${what}: cannot fetch ${url}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

// The reader's next piece, or an error once nothing has come for STALL_MS.
function readWithin(reader) {
  let timer;
  const stalled = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`nothing arrived for ${STALL_MS / 1000} s`)), STALL_MS);
  });
  return Promise.race([reader.read(), stalled]).finally(() => clearTimeout(timer));
}

// The body's length in bytes, or 0 when the response does not say. A compressed response
// announces its compressed length: no length then.
function announcedLength(response) {
  if (response.headers.get('content-encoding')) return 0;
  const length = Number(response.headers.get('content-length'));
  return Number.isSafeInteger(length) && length > 0 ? length : 0;
}

// Puts the response into the cache as it streams in, counting the bytes; returns the cached copy,
// or null when the cache would not take it. A broken or oversized download is a ModelLoadError.
async function storeInCache(what, url, cache, response, total, onBytes) {
  refuseAnnouncedOverLimit(what, url, response, total);
  const reader = response.body.getReader();
  let loaded = 0;
  // Why the download failed, as the message to give; null while it goes well.
  let failure = null;
  const fail = (message) => {
    failure = message;
    reader.cancel(message).catch(() => {});
    throw new Error(message);
  };
  const counted = new ReadableStream({
    async pull(controller) {
      let step;
      try {
        step = await readWithin(reader);
      } catch (error) {
        fail(`the download of ${url} broke off after ${loaded} bytes: ${error.message}`);
      }
      if (step.done) {
        if (total && loaded < total) fail(`${url} ended after ${loaded} of ${total} bytes`);
        controller.close();
        return;
      }
      loaded += step.value.length;
      const problem = overrun(url, loaded, total);
      if (problem) fail(problem);
      onBytes(loaded);
      controller.enqueue(step.value);
    },
    cancel(reason) { return reader.cancel(reason); },
  });
  try {
    await cache.put(url, new Response(counted, { headers: total ? { 'content-length': String(total) } : {} }));
  } catch {
    if (failure) throw named(ErrorName.modelLoad, `${what}: ${failure}`);
    reader.cancel().catch(() => {});
    return null;
  }
  return (await cache.match(url)) ?? null;
}

// A file bigger than a browser's ArrayBuffer (and the 4 GiB wasm address space) can never load.
const MAX_FILE_BYTES = 2 ** 32 - 1;
const tooLarge = (url) => `${url} is larger than 4 GiB, more than a browser can hold; use a smaller model or convert it (glimpse models convert --dtype q8)`;

function refuseAnnouncedOverLimit(what, url, response, total) {
  if (total <= MAX_FILE_BYTES) return;
  response.body?.cancel().catch(() => {});
  throw named(ErrorName.modelLoad, `${what}: ${tooLarge(url)}`);
}

// Why a body that has brought `loaded` bytes so far must stop, or null.
function overrun(url, loaded, total) {
  if (total && loaded > total) return `${url} sent more than the ${total} bytes it announced`;
  return loaded > MAX_FILE_BYTES ? tooLarge(url) : null;
}

// Reads a body into one buffer: of the announced length when there is one, else grown as the
// bytes come (ArrayBuffer.transfer resizes in place where the browser can).
async function readBody(what, url, response, onBytes) {
  const total = announcedLength(response);
  refuseAnnouncedOverLimit(what, url, response, total);
  const reader = response.body.getReader();
  let bytes = new Uint8Array(total || 1 << 16);
  let loaded = 0;
  for (;;) {
    let step;
    try {
      step = await readWithin(reader);
    } catch (error) {
      reader.cancel().catch(() => {});
      throw named(ErrorName.modelLoad, `${what}: the download of ${url} broke off after ${loaded} bytes: ${error.message}`);
    }
    if (step.done) break;
    const end = loaded + step.value.length;
    const problem = overrun(url, end, total);
    if (problem) {
      reader.cancel().catch(() => {});
      throw named(ErrorName.modelLoad, `${what}: ${problem}`);
    }
    if (end > bytes.length) bytes = resized(bytes, Math.min(MAX_FILE_BYTES, Math.max(2 * bytes.length, end)));
    bytes.set(step.value, loaded);
    loaded = end;
    onBytes(loaded);
  }
  if (total && loaded < total) throw named(ErrorName.modelLoad, `${what}: ${url} ended after ${loaded} of ${total} bytes`);
  return loaded === bytes.length ? bytes : resized(bytes, loaded);
}

function resized(bytes, length) {
  if (bytes.buffer.transfer) return new Uint8Array(bytes.buffer.transfer(length));
  const copy = new Uint8Array(length);
  copy.set(bytes.subarray(0, Math.min(length, bytes.length)));
  return copy;
}

// The load's progress reports (protocol.js, `LoadProgress`), each with the sums over every file
// so far. A file whose size was not announced counts its bytes as they come, and its total once
// it is done.
class Progress {
  constructor(report) { this.report = report; this.files = new Map(); }
  initiate(url) { this.files.set(url, { loaded: 0, total: 0 }); this.send(LoadStatus.initiate, url); }
  download(url, total) { this.files.get(url).total = total; this.send(LoadStatus.download, url); }
  // A file fetched again (the cache refused it) reports nothing new until it passes its first try.
  update(url, loaded) {
    const file = this.files.get(url);
    file.loaded = Math.max(file.loaded, loaded);
    this.send(LoadStatus.progress, url);
  }
  done(url) {
    const file = this.files.get(url);
    file.total = file.loaded;
    this.send(LoadStatus.done, url);
  }
  phase(status) { this.send(status); }
  send(status, url) {
    let totalLoaded = 0, totalBytes = 0;
    for (const file of this.files.values()) {
      totalLoaded += file.loaded;
      totalBytes += Math.max(file.total, file.loaded);
    }
    const event = { status, totalLoaded, totalBytes };
    if (url) {
      const { loaded, total } = this.files.get(url);
      Object.assign(event, { file: url, loaded, total, progress: total ? (100 * loaded) / total : 0 });
    }
    this.report(event);
  }
}

function named(name, message) {
  const error = new Error(message);
  error.name = name;
  return error;
}

// A trap (a Rust panic, a lost GPU) leaves the module unusable: say so, with the panic's message.
function describe(error) {
  if (error instanceof WebAssembly.RuntimeError) {
    const panic = self.__glimpsePanic ?? error.message;
    session = null;
    const name = deviceKind === 'webgpu' ? ErrorName.deviceLost : ErrorName.engine;
    return { name, message: `the engine stopped: ${panic}`, fatal: true };
  }
  return { name: error?.name ?? ErrorName.engine, message: error?.message ?? String(error) };
}
