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
// The engine's limit (glimpse_media::video::MAX_FRAMES).
const MAX_FRAMES = 10000;

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
    return this._call('embedImage', imageRequest(image, this.imageSize));
  }

  /** Unit-norm CLIP embedding of a text. */
  async embedText(text) {
    if (typeof text !== 'string' || text.length === 0) throw new InputError('embedText needs a non-empty string');
    return this._call('embedText', async () => ({ args: { text } }));
  }

  /** CLIP-guided zero-shot caption of an image: `{caption, score}`. */
  async captionImage(image, options = {}) {
    const { signal, onStep, ...guidance } = options;
    return this._call('captionImage', imageRequest(image, this.imageSize, { options: guidance }), { signal, onStep });
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
    // Frames are read inside the queue, so two calls never seek the same <video> at once.
    const request = async () => {
      const frames = Array.isArray(source) ? framesFromImages(source, this.imageSize) : await framesFromVideo(source, fps, this.imageSize, signal);
      return { args: { ...frames, fps, events, seed, options: guidance }, transfer: [frames.frames.buffer] };
    };
    return new DenseCaptions(await this._call('denseCaption', request, { signal, onStep }));
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
    let info;
    try {
      info = await this._send('load', this._loadArgs, { onProgress });
    } catch (error) {
      this._restart(null);
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
    const { signal } = handlers;
    const job = this._queue.then(async () => {
      signal?.throwIfAborted();
      if (!this._worker) await this._start();
      const { args, transfer } = await request();
      signal?.throwIfAborted();
      return this._send(type, args, handlers, transfer);
    });
    this._queue = job.catch(() => {});
    // A call still waiting its turn rejects as soon as its signal aborts.
    return signal ? Promise.race([job, aborted(signal)]) : job;
  }

  _send(type, args, { signal, onStep, onProgress } = {}, transfer = []) {
    return new Promise((resolve, reject) => {
      if (!this._worker) return reject(new GlimpseError('the engine stopped; call again to restart it'));
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

function aborted(signal) {
  return new Promise((_, reject) => {
    const fail = () => reject(signal.reason ?? new DOMException('the operation was aborted', 'AbortError'));
    if (signal.aborted) fail();
    else signal.addEventListener('abort', fail, { once: true });
  });
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

// URLs are resolved against the page: the worker's own base is the package's folder.
function absolute(source) {
  const resolve = (value) => (typeof value === 'string' || value instanceof URL ? new URL(value, globalThis.location?.href).href : value);
  if (source && typeof source === 'object' && !(source instanceof URL)) {
    return Object.fromEntries(Object.entries(source).map(([field, value]) => [field, resolve(value)]));
  }
  return resolve(source);
}

// Frames are scaled down on the page until their shorter side is CLIP's input (but not below
// 128 px); the engine then applies CLIP's own preprocessing. This keeps a long video's frames in
// memory: 1,000 frames of 16:9 at 224 px take 360 MB.
const MIN_SENT_SIDE = 128;
// RGBA bytes one call may send to the engine (the engine holds about twice that while it works).
const MAX_FRAME_BYTES = 1 << 30;

function targetSize(width, height, imageSize) {
  if (!width || !height) throw new InputError(`an image of ${width} x ${height} pixels cannot be captioned`);
  const cap = Math.max(imageSize, MIN_SENT_SIDE);
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
  try {
    return context.getImageData(0, 0, w, h);
  } catch (error) {
    if (error.name !== 'SecurityError') throw error;
    throw new InputError('the image or video comes from another origin without CORS: serve it with CORS headers and set crossOrigin = "anonymous" on the element');
  }
}

function imageDataBitmapSource(data) {
  const canvas = new OffscreenCanvas(data.width, data.height);
  canvas.getContext('2d').putImageData(data, 0, 0);
  return canvas;
}

function framesFromImages(images, imageSize) {
  if (images.length === 0) throw new InputError('no frames to caption');
  const size = targetSize(...naturalSize(images[0]), imageSize);
  const packed = frameBuffer(images.length, size);
  images.forEach((image, i) => packed.put(i, toImageData(image, imageSize, size)));
  return packed.frames;
}

// One buffer for all frames, filled in place.
function frameBuffer(count, [width, height]) {
  const frameBytes = width * height * 4;
  if (count * frameBytes > MAX_FRAME_BYTES) {
    throw new InputError(`${count} frames of ${width} x ${height} need ${Math.round((count * frameBytes) / 2 ** 20)} MiB; the limit is ${MAX_FRAME_BYTES / 2 ** 20} MiB: lower fps or caption a shorter part`);
  }
  const bytes = new Uint8Array(count * frameBytes);
  return { put: (i, frame) => bytes.set(frame.data, i * frameBytes), frames: { frames: bytes, width, height } };
}

/** Samples a `<video>` at `fps`: frame `i` is the picture shown at `(i + 0.5) / fps` seconds. */
async function framesFromVideo(video, fps, imageSize, signal) {
  if (!(video instanceof HTMLVideoElement)) throw new InputError('denseCaption takes an HTMLVideoElement or an array of frames');
  if (video.networkState === HTMLMediaElement.NETWORK_EMPTY && !video.currentSrc && !video.src) throw new InputError('the <video> has no source');
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) await once(video, 'loadedmetadata');
  if (!Number.isFinite(video.duration) || video.duration <= 0) throw new InputError('the video has no finite duration');
  const count = Math.max(1, Math.round(video.duration * fps));
  if (count > MAX_FRAMES) throw new InputError(`${count} frames at ${fps} fps; the limit is ${MAX_FRAMES}`);
  const size = targetSize(video.videoWidth, video.videoHeight, imageSize);
  const packed = frameBuffer(count, size);
  const wasPaused = video.paused, time = video.currentTime;
  video.pause();
  try {
    for (let i = 0; i < count; i++) {
      signal?.throwIfAborted();
      await seek(video, Math.min((i + 0.5) / fps, video.duration));
      packed.put(i, toImageData(video, imageSize, size));
    }
  } finally {
    await seek(video, time).catch(() => {});
    if (!wasPaused) video.play().catch(() => {});
  }
  return packed.frames;
}

// `seeked` can fire before the new picture reaches the element (Chromium with GPU video paths drew
// the previous seek's frame): wait for the frame to be presented too, where the browser says so,
// but not for long (no new frame is presented when two samples fall on the same video frame).
async function seek(video, time) {
  const seeked = once(video, 'seeked');
  let presented = null;
  if (video.requestVideoFrameCallback) {
    presented = new Promise((resolve) => {
      const handle = video.requestVideoFrameCallback(() => { clearTimeout(timer); resolve(); });
      const timer = setTimeout(() => { video.cancelVideoFrameCallback(handle); resolve(); }, 500);
    });
  }
  video.currentTime = time;
  await seeked;
  await presented;
}

// Resolves on `event`, rejects when the media fails; the listeners go away either way.
function once(target, event) {
  const failure = () => new InputError(`the video cannot be read (${target.error?.message || 'unsupported or corrupt'})`);
  return new Promise((resolve, reject) => {
    if (target.error) return reject(failure());
    const settle = (ok) => (value) => {
      target.removeEventListener(event, onEvent);
      target.removeEventListener('error', onError);
      if (ok) resolve(value); else reject(failure());
    };
    const onEvent = settle(true), onError = settle(false);
    target.addEventListener(event, onEvent);
    target.addEventListener('error', onError);
  });
}
