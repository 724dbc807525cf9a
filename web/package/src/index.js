// glimpse in the browser: CLIP and GPT-2 with test-time optimisation, on WebGPU or the CPU, in a
// Web Worker so the page never freezes. See ../README.md for the API.
import { ERRORS, GlimpseError, InputError, ModelLoadError } from './errors.js';
import { abortable, frameChunks, toImageData, videoTimeline } from './frames.js';
import { CACHE, CLIP_FILES, DEFAULT_FPS, DEFAULT_MAX_EVENTS, MAX_EVENTS, MAX_FPS, MAX_QUERIES, MAX_THREADS, LM_FILES, MAX_TOP, MIN_FPS, Reply, Request } from './protocol.js';

export { DeviceLostError, GlimpseError, InputError, ModelLoadError, NoAdapterError } from './errors.js';

const DEVICES = ['auto', 'webgpu', 'cpu'];

/** A dense-captioning result: events in seconds plus subtitles. */
export class DenseCaptions {
  constructor({ start, duration, events, srt, vtt, chapters, chaptersError }) {
    this.start = start;
    this.duration = duration;
    this.events = events;
    this._srt = srt;
    this._vtt = vtt;
    this._chapters = chapters;
    this._chaptersError = chaptersError;
  }
  toSRT() { return this._srt; }
  toVTT() { return this._vtt; }
  /** YouTube chapters (`MM:SS Title` lines); throws InputError where the events make none. */
  toChapters() {
    if (this._chapters == null) throw new InputError(this._chaptersError);
    return this._chapters;
  }
  toJSON() { return { start: this.start, duration: this.duration, events: this.events }; }
}

export class Glimpse {
  /**
   * Starts the engine and loads a CLIP and a GPT-2.
   * @param {import('./index').LoadOptions} options
   */
  static async load(options) {
    const { clip, lm, device = 'auto', threads = 'auto', onProgress, signal } = optionsOf(options);
    if (!DEVICES.includes(device)) throw new InputError(`device must be one of ${DEVICES.join(', ')}, not ${device}`);
    if (threads !== 'auto' && !isCount(threads, MAX_THREADS)) throw new InputError(`threads = ${threads} must be 'auto' or an integer in 1..${MAX_THREADS}`);
    signal?.throwIfAborted();
    const glimpse = new Glimpse({ clip: modelSource('CLIP', clip, CLIP_FILES), lm: modelSource('GPT-2', lm, LM_FILES), device, threads });
    // An abort stops the worker, whatever it is doing (a download that stalls, a long build).
    // Listened for after `abortable`, whose rejection with the signal's reason must come first:
    // an abort the browser fires (AbortSignal.timeout) runs pending callbacks between listeners.
    const started = abortable(glimpse._start(onProgress), signal);
    const stop = () => glimpse.dispose();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      await started;
    } finally {
      signal?.removeEventListener('abort', stop);
    }
    return glimpse;
  }

  /**
   * Empties the Cache API cache of fetched model files (the next load fetches them again).
   * Resolves `true` when there was a cache to delete.
   */
  static async clearCache() {
    return globalThis.caches ? globalThis.caches.delete(CACHE) : false;
  }

  constructor(loadArgs) {
    this._loadArgs = loadArgs;
    this._engine = new Engine();
    unreachable.register(this, this._engine);
    this._queue = Promise.resolve();
    /** `{kind: 'webgpu' | 'cpu', description, fallbackReason?, maxStorageBinding?, threads?, threadsFallbackReason?}` */
    this.device = null;
    this.imageSize = 0;
  }

  /** Unit-norm CLIP embedding of an image (`ImageData`, `ImageBitmap`, `<img>`, `<canvas>`, `<video>`). */
  async embedImage(image) {
    return this._call(Request.embedImage, imageRequest(image, this.imageSize));
  }

  /** Unit-norm CLIP embedding of a text. */
  async embedText(text) {
    if (typeof text !== 'string' || text.length === 0) throw new InputError('embedText needs a non-empty string');
    return this._call(Request.embedText, async () => ({ args: { text } }));
  }

  /** CLIP-guided zero-shot caption of an image: `{caption, score}`. */
  async captionImage(image, options) {
    const { signal, onStep, ...guidance } = optionsOf(options);
    checkNumbers(guidance);
    return this._call(Request.captionImage, imageRequest(image, this.imageSize, { options: guidance }), { signal, onStep });
  }

  /**
   * Zero-shot dense video captioning (ZeroTA): `events` moments (default `'auto'`: one per scene
   * that is not blank, at most `maxEvents`), each with a sentence.
   * `source` is an `HTMLVideoElement` (sampled at `fps`) or an array of frames taken `1 / fps` apart.
   * Resolves to a {@link DenseCaptions}; `onStep` sees every step's spans (seconds) and captions.
   */
  async denseCaption(source, options) {
    const { events = 'auto', maxEvents = DEFAULT_MAX_EVENTS, fps = DEFAULT_FPS, seed = 0, signal, onStep, ...guidance } = optionsOf(options);
    checkFps(fps);
    if (events !== 'auto' && !isCount(events, MAX_EVENTS)) throw new InputError(`events = ${events} must be 'auto' or an integer in 1..${MAX_EVENTS}`);
    if (!isCount(maxEvents, MAX_EVENTS)) throw new InputError(`maxEvents = ${maxEvents} must be an integer in 1..${MAX_EVENTS}`);
    // Beyond 2^53 a number is no longer the integer it was written as.
    if (!Number.isSafeInteger(seed) || seed < 0) throw new InputError(`seed = ${seed} must be an integer in 0..2^53 - 1`);
    checkNumbers(guidance);
    const args = { events, maxEvents, seed, options: guidance };
    return new DenseCaptions(await this._onVideo(source, fps, signal, Request.denseCaption, args, { signal, onStep }));
  }

  /**
   * Where in a video something happens, zero-shot. `query` is a description or an array of them;
   * resolves to the best `top` moments `[{start, end, score}]` (seconds, best first, never
   * overlapping), or for an array to `[{query, moments}]`. The frames are embedded once per source
   * and rate: further calls on the same `<video>` (same `src`) or the same array, dense captions
   * included, reuse them.
   */
  async findMoments(source, query, options) {
    // Everything but the sampling and the signal goes to the engine, which refuses unknown options.
    const { fps = DEFAULT_FPS, signal, ...find } = optionsOf(options);
    checkFps(fps);
    const queries = Array.isArray(query) ? query : [query];
    if (queries.length === 0 || queries.length > MAX_QUERIES) throw new InputError(`give 1 to ${MAX_QUERIES} queries, not ${queries.length}`);
    const blank = queries.findIndex((q) => typeof q !== 'string' || q.trim() === '');
    if (blank >= 0) throw new InputError(`query ${blank + 1} is not a description: give a non-empty string`);
    if (find.top !== undefined && !isCount(find.top, MAX_TOP)) throw new InputError(`top = ${find.top} must be an integer in 1..${MAX_TOP}`);
    if (find.minSeconds !== undefined && !(Number.isFinite(find.minSeconds) && find.minSeconds > 0)) throw new InputError(`minSeconds = ${find.minSeconds} must be a positive number`);
    checkNumbers(find);
    const args = { queries, options: find };
    const answers = await this._onVideo(source, fps, signal, Request.findMoments, args, { signal });
    return Array.isArray(query) ? answers : answers[0].moments;
  }

  // Runs the call `type` with `args` on `source`'s frames in the engine, streaming them first
  // unless the engine still holds them; the engine checks the call's settings before a frame is
  // read. Frames are read inside the queue, so two calls never seek the same <video> at once.
  // They go in chunks, embedded as they arrive: the next chunk is read while the engine embeds
  // the one before, and no call ever holds a whole video's pixels.
  _onVideo(source, fps, signal, type, args, handlers) {
    return this._enqueue(async () => {
      await this._engine.send(this, Request.check, { call: type, args }, { signal });
      // A <video> lasts from its first picture to its end: the last sample ends there, not a
      // sampling step later.
      const timeline = Array.isArray(source) ? undefined : await videoTimeline(source, signal);
      const [length, start] = timeline ? [timeline.end - timeline.start, timeline.start] : [];
      const key = sourceKey(source, start);
      const { reused } = await this._engine.send(this, Request.startVideo, { fps, key, length, start }, { signal });
      if (!reused) {
        let embedding = null;
        for await (const chunk of frameChunks(source, fps, this.imageSize, signal, { timeline })) {
          await embedding;
          embedding = this._engine.send(this, Request.videoFrames, chunk, { signal }, [chunk.frames.buffer]);
          embedding.catch(() => {});
        }
        await embedding;
      }
      return this._engine.send(this, type, args, handlers);
    }, signal);
  }

  /**
   * The engine's memory: `{engineBytes}`, the size of its WebAssembly memory, which only grows, so
   * this is the most the engine has held at once (the models included). GPU buffers on WebGPU are
   * not in it.
   */
  async memoryUsage() {
    return this._call(Request.memoryUsage, async () => ({ args: {} }));
  }

  /** Stops the engine; the object cannot be used afterwards. */
  dispose() {
    this._loadArgs = null;
    this._engine.stop(new GlimpseError('glimpse was disposed'));
  }

  async _start(onProgress) {
    if (!this._loadArgs) throw new GlimpseError('glimpse was disposed');
    const crashChannel = this._engine.start();
    let info;
    try {
      info = await this._engine.send(this, Request.load, { ...this._loadArgs, crashChannel }, { onProgress });
    } catch (error) {
      this._engine.stop(null);
      throw error;
    }
    this.imageSize = info.imageSize;
    delete info.imageSize;
    this.device = info;
  }

  // Jobs run one after another; a cancelled or crashed job takes the worker with it, and the
  // next call starts a fresh one (model files come from the Cache API the second time).
  // `request` builds the message inside the queue: `{args, transfer}`.
  _call(type, request, handlers = {}) {
    return this._enqueue(async () => {
      const { args, transfer } = await request();
      handlers.signal?.throwIfAborted();
      return this._engine.send(this, type, args, handlers, transfer);
    }, handlers.signal);
  }

  // Runs `work` (which sends its own messages) when the jobs before it are done.
  _enqueue(work, signal) {
    const job = this._queue.then(async () => {
      signal?.throwIfAborted();
      if (!this._engine.worker) await this._start();
      return work();
    });
    this._queue = job.catch(() => {});
    // A call still waiting its turn rejects as soon as its signal aborts.
    return abortable(job, signal);
  }
}

// The engine's worker and the jobs it runs. Only a job in progress refers to the `Glimpse` that
// owns it (its `owner`): a running worker is never collected, nor anything its handlers reach, so
// a Glimpse they held would keep its worker and models for as long as the page lives. An idle
// Glimpse dropped without `dispose()` is collected instead, and its worker stopped
// (`unreachable`); one whose call is in progress lives until the call ends.
class Engine {
  constructor() {
    this.worker = null;
    // Where the worker's threads report a trap.
    this.crashes = null;
    this.jobs = new Map();
    this.nextId = 1;
  }

  // A new worker; returns the name of its threads' channel for traps (protocol.js), one per worker.
  start() {
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.worker.onmessage = ({ data }) => this.receive(data);
    const crashChannel = `glimpse-crash-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    this.crashes = new BroadcastChannel(crashChannel);
    this.crashes.onmessage = ({ data }) => this.stop(new GlimpseError(data.message));
    this.worker.onerror = (event) => {
      event.preventDefault();
      this.stop(new GlimpseError(`the engine's worker failed: ${event.message ?? 'unknown error'}`));
    };
    return crashChannel;
  }

  send(owner, type, args, { signal, onStep, onProgress } = {}, transfer = []) {
    return new Promise((resolve, reject) => {
      if (!this.worker) return reject(new GlimpseError('the engine stopped; call again to restart it'));
      const id = this.nextId++;
      const onAbort = () => {
        this.jobs.delete(id);
        this.stop(null);
        reject(signal.reason ?? new DOMException('the operation was aborted', 'AbortError'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.jobs.set(id, { owner, resolve: (v) => { done(); resolve(v); }, reject: (e) => { done(); reject(e); }, onStep, onProgress });
      this.worker.postMessage({ id, type, args }, transfer);
    });
  }

  receive({ id, type, value, step, progress, error }) {
    const job = this.jobs.get(id);
    if (!job) return;
    if (type === Reply.step) return callSafely(job.onStep, step);
    if (type === Reply.progress) return callSafely(job.onProgress, progress);
    this.jobs.delete(id);
    if (type === Reply.result) return job.resolve(value);
    job.reject(new (ERRORS[error.name] ?? GlimpseError)(error.message));
    if (error.fatal) this.stop(null);
  }

  // Stops the worker (the next call starts another); `reason` rejects the jobs in progress.
  stop(reason) {
    this.worker?.terminate();
    this.worker = null;
    this.crashes?.close();
    this.crashes = null;
    if (reason) {
      for (const job of this.jobs.values()) job.reject(reason);
      this.jobs.clear();
    }
  }
}

// Stops the worker of a Glimpse that was collected (see `Engine`).
const unreachable = new FinalizationRegistry((engine) => engine.stop(null));

function checkFps(fps) {
  if (typeof fps !== 'number' || !(fps >= MIN_FPS && fps <= MAX_FPS)) throw new InputError(`fps = ${fps} must be in [${MIN_FPS}, ${MAX_FPS}]`);
}

// Refuses a number option that is not finite: JSON would carry NaN and infinities as null, which
// the engine takes for "the default".
function checkNumbers(options) {
  for (const [name, value] of Object.entries(options)) {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new InputError(`${name} = ${value} must be a finite number`);
  }
}

function isCount(value, most) {
  return Number.isInteger(value) && value >= 1 && value <= most;
}

// A name for a video source that changes when its frames may: one id per `<video>` element (with
// its `src`, or the id of its `srcObject`, where its first picture is, and its duration) or array of frames (with its length
// and the ids of its first and last frames).
const sourceIds = new WeakMap();
let nextSourceId = 1;
function idOf(object) {
  if (typeof object !== 'object' || object === null) return String(object);
  if (!sourceIds.has(object)) sourceIds.set(object, nextSourceId++);
  return String(sourceIds.get(object));
}
function sourceKey(source, start) {
  if (Array.isArray(source)) return `frames ${idOf(source)} ${source.length} ${idOf(source[0])} ${idOf(source.at(-1))}`;
  if (typeof HTMLVideoElement !== 'undefined' && source instanceof HTMLVideoElement) {
    return `video ${idOf(source)} ${source.currentSrc} ${idOf(source.srcObject)} ${start} ${source.duration}`;
  }
  return null;
}

// A call's options: an object, or none (undefined or null); its signal an AbortSignal and its
// callbacks functions, refused here rather than failing later inside the browser's own calls.
function optionsOf(options) {
  if (options == null) return {};
  if (typeof options !== 'object') throw new InputError(`options must be an object, not ${typeof options}`);
  const { signal, onStep, onProgress } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new InputError('signal must be an AbortSignal');
  for (const [name, callback] of [['onStep', onStep], ['onProgress', onProgress]]) {
    if (callback !== undefined && typeof callback !== 'function') throw new InputError(`${name} must be a function, not ${typeof callback}`);
  }
  return options;
}

function imageRequest(image, imageSize, extra = {}) {
  return async () => {
    const pixels = toImageData(image, imageSize);
    return { args: { image: pixels, ...extra }, transfer: [pixels.data.buffer] };
  };
}

function callSafely(callback, value) {
  try { callback?.(value); } catch (e) { console.error('glimpse: a callback threw', e); }
}

// A model as the worker takes it: a folder's URL, or an object of its files (`files`' fields),
// each a URL, bytes or a Blob. URLs are resolved against the page (the worker's own base is the
// package's folder). Anything else is refused here, where the worker would be sent it in vain (a
// Response or a stream cannot be posted to it; JSON text would be fetched as an address).
function modelSource(what, source, files) {
  if (source == null) return source;
  const fields = `{ ${Object.keys(files).join(', ')} }`;
  if (isAddress(source)) {
    return address(source, `${what}: JSON text where the model's folder URL goes; give the folder's URL, or an object of its files (${fields})`);
  }
  if (typeof source !== 'object' || Array.isArray(source) || isFile(source) || (globalThis.Response && source instanceof Response)) {
    throw new ModelLoadError(`${what}: a model is its folder's URL or an object of its files (${fields}), not a value of type ${typeOf(source)}`);
  }
  return Object.fromEntries(Object.keys(files).filter((field) => field in source).map((field) => [field, modelFile(what, field, source[field])]));
}

const isFile = (value) => value instanceof Uint8Array || value instanceof ArrayBuffer || (globalThis.Blob && value instanceof Blob);
const isAddress = (value) => typeof value === 'string' || value instanceof URL;

// `value` resolved against the page; JSON text given for an address is refused with `refusal`.
function address(value, refusal) {
  if (/^\s*[{[]/.test(String(value))) throw new ModelLoadError(refusal);
  return new URL(value, globalThis.location?.href).href;
}

function modelFile(what, field, value) {
  // A buffer transferred away (to a worker, `structuredClone`) holds nothing.
  const buffer = ArrayBuffer.isView(value) ? value.buffer : value;
  if (buffer instanceof ArrayBuffer && buffer.detached) throw new ModelLoadError(`${what}: ${field} is ${buffer === value ? 'an ArrayBuffer' : 'a view of an ArrayBuffer'} that was transferred away and holds nothing; give the file's bytes again`);
  if (value == null || isFile(value)) return value;
  if (isAddress(value)) {
    return address(value, `${what}: ${field} is JSON text where its URL goes; give the URL, or the text's bytes (\`new TextEncoder().encode(text)\`)`);
  }
  const hint = globalThis.Response && value instanceof Response ? ' (for a Response, give `await response.blob()`)' : '';
  throw new ModelLoadError(`${what}: ${field} is of type ${typeOf(value)}; a model file is a URL, an ArrayBuffer, a Uint8Array or a Blob / File${hint}`);
}

function typeOf(value) {
  return value !== null && typeof value === 'object' ? value.constructor?.name ?? 'object' : typeof value;
}
