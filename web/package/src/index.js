// glimpse in the browser: CLIP and GPT-2 with test-time optimisation, on WebGPU or the CPU, in a
// Web Worker so the page never freezes. See ../README.md for the API.

/** Base class of every error glimpse raises. */
export class GlimpseError extends Error {
  constructor(message) { super(message); this.name = 'GlimpseError'; }
}
/** WebGPU was required (`device: 'webgpu'`) but the browser has none or gave no adapter. */
export class NoAdapterError extends GlimpseError {
  constructor(message) { super(message); this.name = 'NoAdapterError'; }
}
/** A model file is missing, unreachable or malformed; the message names the file or tensor. */
export class ModelLoadError extends GlimpseError {
  constructor(message) { super(message); this.name = 'ModelLoadError'; }
}
/** The GPU device was lost or the engine stopped on it; the next call starts a fresh engine. */
export class DeviceLostError extends GlimpseError {
  constructor(message) { super(message); this.name = 'DeviceLostError'; }
}
/** Frames, images or options the engine cannot use. */
export class InputError extends GlimpseError {
  constructor(message) { super(message); this.name = 'InputError'; }
}

const ERRORS = { NoAdapterError, ModelLoadError, DeviceLostError, InputError, GlimpseError };
const DEVICES = ['auto', 'webgpu', 'cpu'];

/** A dense-captioning result: events in seconds plus subtitles. */
export class DenseCaptions {
  constructor({ duration, events, srt, vtt }) {
    this.duration = duration;
    this.events = events;
    this._srt = srt;
    this._vtt = vtt;
  }
  toSRT() { return this._srt; }
  toVTT() { return this._vtt; }
  toJSON() { return { duration: this.duration, events: this.events }; }
}

export class Glimpse {
  /**
   * Starts the engine and loads a CLIP and a GPT-2.
   * @param {import('./index').LoadOptions} options
   */
  static async load(options = {}) {
    const { clip, lm, device = 'auto', onProgress } = options;
    if (!DEVICES.includes(device)) throw new InputError(`device must be one of ${DEVICES.join(', ')}, not ${device}`);
    const glimpse = new Glimpse({ clip: absolute(clip), lm: absolute(lm), device });
    await glimpse._start(onProgress);
    return glimpse;
  }

  constructor(loadArgs) {
    this._loadArgs = loadArgs;
    this._worker = null;
    this._jobs = new Map();
    this._nextId = 1;
    this._queue = Promise.resolve();
    /** `{kind: 'webgpu' | 'cpu', description, fallbackReason?, maxStorageBinding?}` */
    this.device = null;
    this.imageSize = 0;
  }

  /** Unit-norm CLIP embedding of an image (`ImageData`, `ImageBitmap`, `<img>`, `<canvas>`, `<video>`). */
  async embedImage(image) {
    const pixels = toImageData(image, this.imageSize);
    return this._call('embedImage', { image: pixels }, {}, [pixels.data.buffer]);
  }

  /** Unit-norm CLIP embedding of a text. */
  async embedText(text) {
    if (typeof text !== 'string' || text.length === 0) throw new InputError('embedText needs a non-empty string');
    return this._call('embedText', { text });
  }

  /** CLIP-guided zero-shot caption of an image: `{caption, score}`. */
  async captionImage(image, options = {}) {
    const { signal, onStep, ...guidance } = options;
    const pixels = toImageData(image, this.imageSize);
    return this._call('captionImage', { image: pixels, options: guidance }, { signal, onStep }, [pixels.data.buffer]);
  }

  /**
   * Zero-shot dense video captioning (ZeroTA): `events` moments, each with a sentence.
   * `source` is an `HTMLVideoElement` (sampled at `fps`) or an array of frames taken `1 / fps` apart.
   * Resolves to a {@link DenseCaptions}; `onStep` sees every step's spans (seconds) and captions.
   */
  async denseCaption(source, options = {}) {
    const { events = 3, fps = 2, seed = 0, signal, onStep, ...guidance } = options;
    if (!(fps > 0 && fps <= 60)) throw new InputError(`fps = ${fps} must be in (0, 60]`);
    if (!Number.isInteger(events) || events < 1 || events > 32) throw new InputError(`events = ${events} must be an integer in 1..32`);
    if (!Number.isInteger(seed) || seed < 0) throw new InputError(`seed = ${seed} must be a non-negative integer`);
    signal?.throwIfAborted();
    const frames = source instanceof Array ? framesFromImages(source, this.imageSize) : await framesFromVideo(source, fps, this.imageSize, signal);
    const args = { ...frames, fps, events, seed, options: guidance };
    return new DenseCaptions(await this._call('denseCaption', args, { signal, onStep }, [frames.frames.buffer]));
  }

  /** Stops the engine; the object cannot be used afterwards. */
  dispose() {
    this._worker?.terminate();
    this._worker = null;
    this._loadArgs = null;
    this._failAll(new GlimpseError('glimpse was disposed'));
  }

  async _start(onProgress) {
    if (!this._loadArgs) throw new GlimpseError('glimpse was disposed');
    this._worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this._worker.onmessage = ({ data }) => this._receive(data);
    this._worker.onerror = (event) => {
      event.preventDefault();
      this._restart(new GlimpseError(`the engine's worker failed: ${event.message ?? 'unknown error'}`));
    };
    const info = await this._send('load', this._loadArgs, { onProgress });
    this.imageSize = info.imageSize;
    delete info.imageSize;
    this.device = info;
  }

  // Jobs run one after another; a cancelled or crashed job takes the worker with it, and the
  // next call starts a fresh one (model files come from the Cache API the second time).
  _call(type, args, handlers = {}, transfer = []) {
    const job = this._queue.then(async () => {
      handlers.signal?.throwIfAborted();
      if (!this._worker) await this._start();
      return this._send(type, args, handlers, transfer);
    });
    this._queue = job.catch(() => {});
    return job;
  }

  _send(type, args, { signal, onStep, onProgress } = {}, transfer = []) {
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      const onAbort = () => {
        this._jobs.delete(id);
        this._restart(null);
        reject(signal.reason ?? new DOMException('the operation was aborted', 'AbortError'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this._jobs.set(id, { resolve: (v) => { done(); resolve(v); }, reject: (e) => { done(); reject(e); }, onStep, onProgress });
      this._worker.postMessage({ id, type, args }, transfer);
    });
  }

  _receive({ id, type, value, step, progress, error }) {
    const job = this._jobs.get(id);
    if (!job) return;
    if (type === 'step') return callSafely(job.onStep, step);
    if (type === 'progress') return callSafely(job.onProgress, progress);
    this._jobs.delete(id);
    if (type === 'result') return job.resolve(value);
    job.reject(new (ERRORS[error.name] ?? GlimpseError)(error.message));
    if (error.fatal) this._restart(null);
  }

  _restart(reason) {
    this._worker?.terminate();
    this._worker = null;
    if (reason) this._failAll(reason);
  }

  _failAll(reason) {
    for (const job of this._jobs.values()) job.reject(reason);
    this._jobs.clear();
  }
}

function callSafely(callback, value) {
  try { callback?.(value); } catch (e) { console.error('glimpse: a callback threw', e); }
}

function absolute(source) {
  if (typeof source === 'string') return new URL(source, globalThis.location?.href).href;
  if (source && typeof source === 'object' && !(source instanceof ArrayBuffer)) {
    return Object.fromEntries(Object.entries(source).map(([k, v]) => [k, typeof v === 'string' ? new URL(v, globalThis.location?.href).href : v]));
  }
  return source;
}

// Frames larger than twice CLIP's input are scaled down on the page: the engine resizes them
// again (bicubic, as CLIP's preprocessing does), so nothing is lost but transfer time.
function targetSize(width, height, imageSize) {
  if (!width || !height) throw new InputError(`an image of ${width} x ${height} pixels cannot be captioned`);
  const cap = 2 * imageSize;
  const scale = Math.min(1, cap / Math.min(width, height));
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

function naturalSize(image) {
  return [image.naturalWidth ?? image.videoWidth ?? image.displayWidth ?? image.width,
          image.naturalHeight ?? image.videoHeight ?? image.displayHeight ?? image.height];
}

function toImageData(image, imageSize, size) {
  if (typeof ImageData !== 'undefined' && image instanceof ImageData && !size) {
    const [w, h] = targetSize(image.width, image.height, imageSize);
    if (w === image.width && h === image.height) return new ImageData(new Uint8ClampedArray(image.data), w, h);
  }
  const [w, h] = size ?? targetSize(...naturalSize(image), imageSize);
  const canvas = new OffscreenCanvas(w, h);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.imageSmoothingQuality = 'high';
  context.drawImage(image instanceof ImageData ? imageDataBitmapSource(image) : image, 0, 0, w, h);
  return context.getImageData(0, 0, w, h);
}

function imageDataBitmapSource(data) {
  const canvas = new OffscreenCanvas(data.width, data.height);
  canvas.getContext('2d').putImageData(data, 0, 0);
  return canvas;
}

function framesFromImages(images, imageSize) {
  if (images.length === 0) throw new InputError('no frames to caption');
  const size = targetSize(...naturalSize(images[0]), imageSize);
  return pack(images.map((image) => toImageData(image, imageSize, size)), size);
}

/** Samples a `<video>` at `fps`: frame `i` is the picture shown at `(i + 0.5) / fps` seconds. */
async function framesFromVideo(video, fps, imageSize, signal) {
  if (!(video instanceof HTMLVideoElement)) throw new InputError('denseCaption takes an HTMLVideoElement or an array of frames');
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) await once(video, 'loadedmetadata');
  if (!Number.isFinite(video.duration) || video.duration <= 0) throw new InputError('the video has no finite duration');
  const count = Math.max(1, Math.round(video.duration * fps));
  if (count > 10000) throw new InputError(`${count} frames at ${fps} fps; the limit is 10000`);
  const size = targetSize(video.videoWidth, video.videoHeight, imageSize);
  const wasPaused = video.paused, time = video.currentTime;
  video.pause();
  const frames = [];
  for (let i = 0; i < count; i++) {
    signal?.throwIfAborted();
    await seek(video, Math.min((i + 0.5) / fps, video.duration));
    frames.push(toImageData(video, imageSize, size));
  }
  video.currentTime = time;
  if (!wasPaused) video.play().catch(() => {});
  return pack(frames, size);
}

// `seeked` can fire before the new picture reaches the element (Chromium with GPU video paths drew
// the previous seek's frame): wait for the frame to be presented too, where the browser says so.
async function seek(video, time) {
  const seeked = once(video, 'seeked');
  const presented = video.requestVideoFrameCallback
    ? new Promise((resolve) => { video.requestVideoFrameCallback(() => resolve()); setTimeout(resolve, 500); })
    : null;
  video.currentTime = time;
  await seeked;
  await presented;
}

function pack(frames, [width, height]) {
  const bytes = new Uint8Array(frames.length * width * height * 4);
  frames.forEach((frame, i) => bytes.set(frame.data, i * width * height * 4));
  return { frames: bytes, width, height };
}

function once(target, event) {
  return new Promise((resolve, reject) => {
    const onError = () => reject(new InputError(`the video cannot be read (${target.error?.message ?? 'unsupported or corrupt'})`));
    target.addEventListener(event, resolve, { once: true });
    target.addEventListener('error', onError, { once: true });
  });
}
