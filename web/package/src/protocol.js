// What crosses between the facade (index.js, on the page) and the engine's worker (worker.js, which
// runs glimpse-wasm): the message types, the error names and the engine's limits, defined once for
// both sides. `tests/protocol.rs` checks the names and limits against the Rust side.

/**
 * A request, facade -> worker, as `{ id, type, args }`; the worker answers with replies carrying
 * the same `id`. A call on a video is three kinds of request in a row: `startVideo` (answered
 * `{reused: true}` where the worker still holds that source's embedded frames at that rate: the
 * chunks are then skipped), one `videoFrames` per chunk, then `denseCaption` or `findMoments`; a
 * `check` of that call's arguments (answered `{}` or an InputError) comes before them all.
 * `startVideo`'s `length` is a `<video>`'s duration in seconds from its first picture, `start`
 * where that picture is on the element's clock (an array of frames has neither); results come
 * on that clock.
 * @typedef {{ id: number } & (
 *   | { type: 'load', args: { device: 'auto' | 'webgpu' | 'cpu', threads: number | 'auto', crashChannel: string, clip: ModelSource, lm: ModelSource } }
 *   | { type: 'embedImage', args: { image: ImageData } }
 *   | { type: 'embedText', args: { text: string } }
 *   | { type: 'captionImage', args: { image: ImageData, options: GuidanceOptions } }
 *   | { type: 'check', args: { call: 'denseCaption' | 'findMoments', args: object } }
 *   | { type: 'startVideo', args: { fps: number, key: string, length?: number, start?: number } }
 *   | { type: 'videoFrames', args: FrameChunk }
 *   | { type: 'denseCaption', args: { events: number | 'auto', maxEvents: number, seed: number, options: GuidanceOptions } }
 *   | { type: 'findMoments', args: { queries: string[], options: FindOptions } }
 *   | { type: 'memoryUsage', args: {} }
 * )} Request
 * @typedef {string | Record<string, string | ArrayBuffer | Uint8Array | Blob>} ModelSource
 *   a folder URL in the Hugging Face layout, or a URL or bytes per file
 * @typedef {{ prompt?: string, maxTokens?: number, topK?: number, stepsPerToken?: number, softPromptLen?: number }} GuidanceOptions
 *   glimpse_align::guided::GuidanceOptions; each one left out keeps the engine's default
 * @typedef {{ top?: number, minSeconds?: number, refineSteps?: number }} FindOptions
 *   glimpse_align::grounding::FindOptions; each one left out keeps the engine's default
 * @typedef {{ frames: Uint8Array, width: number, height: number }} FrameChunk
 *   up to FRAMES_PER_MESSAGE RGBA frames of `width` x `height`, one after another
 */
export const Request = Object.freeze({
  load: 'load',
  embedImage: 'embedImage',
  embedText: 'embedText',
  captionImage: 'captionImage',
  check: 'check',
  startVideo: 'startVideo',
  videoFrames: 'videoFrames',
  denseCaption: 'denseCaption',
  findMoments: 'findMoments',
  memoryUsage: 'memoryUsage',
});

/**
 * A reply, worker -> facade: any number of `step` / `progress`, then one `result` or `error`.
 * Besides, a thread of the threaded engine that traps posts `{message}` on the BroadcastChannel
 * named `crashChannel` in the load: the engine's worker then waits for it for ever, and the facade
 * stops it.
 * @typedef {{ id: number } & (
 *   | { type: 'result', value: unknown }
 *   | { type: 'error', error: { name: string, message: string, fatal?: boolean } }
 *   | { type: 'step', step: object }
 *   | { type: 'progress', progress: LoadProgress }
 * )} Reply
 * @typedef {{ status: LoadStatus, file?: string, loaded?: number, total?: number, progress?: number,
 *   totalLoaded: number, totalBytes: number }} LoadProgress
 *   transformers.js' shape: `file`, `loaded`, `total` (bytes; 0 while unknown) and `progress`
 *   (percent) for the file events, and the sums over every file so far in all of them
 */

/**
 * What a load is doing, in order: per file fetched, `initiate` (asked for), `download` (the answer
 * came, its size is known), `progress` (bytes), `done`; then `building` (the engine makes the
 * models' tensors), on WebGPU `warmup` (the shaders every call uses are compiled), and `ready`.
 * @typedef {'initiate' | 'download' | 'progress' | 'done' | 'building' | 'warmup' | 'ready'} LoadStatus
 */
export const LoadStatus = Object.freeze({
  initiate: 'initiate',
  download: 'download',
  progress: 'progress',
  done: 'done',
  building: 'building',
  warmup: 'warmup',
  ready: 'ready',
});

/** The Cache API cache the worker keeps fetched model files in (`Glimpse.clearCache()` empties it). */
export const CACHE = 'glimpse-models-v1';
// Each model's files as `Glimpse.load` takes them, by field: the file each is in a folder. A CLIP's
// image settings are in preprocessor_config.json, or (saved by transformers 5) in processor_config.json.
export const CLIP_FILES = Object.freeze({ config: 'config.json', weights: 'model.safetensors', tokenizer: 'tokenizer.json', preprocessor: 'preprocessor_config.json', processor: 'processor_config.json' });
export const LM_FILES = Object.freeze({ config: 'config.json', weights: 'model.safetensors', tokenizer: 'tokenizer.json' });
export const Reply = Object.freeze({ result: 'result', error: 'error', step: 'step', progress: 'progress' });

/** The `name` of each error the engine or the worker raises; the facade maps each to its class. */
export const ErrorName = Object.freeze({
  engine: 'GlimpseError',
  noAdapter: 'NoAdapterError',
  modelLoad: 'ModelLoadError',
  input: 'InputError',
  /** Raised by the worker only: the engine trapped on WebGPU. */
  deviceLost: 'DeviceLostError',
});

/** Most frames one video may have (glimpse_media::video::MAX_FRAMES). */
export const MAX_FRAMES = 10000;
/** Lowest sampling rate, frames per second (glimpse_media::video::MIN_FPS). */
export const MIN_FPS = 0.01;
/** Highest sampling rate, frames per second (glimpse_media::video::MAX_FPS). */
export const MAX_FPS = 60;
/** Default sampling rate, frames per second (glimpse_media::video::DEFAULT_FPS). */
export const DEFAULT_FPS = 2;
/** Most events a dense caption finds by default when it counts them (`events: 'auto'`, the
 * default: glimpse_align::zerota::ZeroTaConfig::default().max_events). */
export const DEFAULT_MAX_EVENTS = 10;
/** Most events per dense caption (glimpse_align::zerota::MAX_EVENTS). */
export const MAX_EVENTS = 32;
/** Most queries per findMoments call (glimpse_align::grounding::MAX_QUERIES). */
export const MAX_QUERIES = 256;
/** Most moments per query (glimpse_align::grounding::MAX_TOP). */
export const MAX_TOP = 32;
/** Longest side of a frame or image the engine takes (glimpse-wasm's session.rs MAX_SIDE); the
 * page scales a longer one down. */
export const MAX_FRAME_SIDE = 4096;
/** Frames per `videoFrames` message: one chunk's pixels are all a video ever has in flight. */
export const FRAMES_PER_MESSAGE = 16;
/** Most threads of the CPU engine (the `threads` load option; `'auto'` takes one per core up to it). */
export const MAX_THREADS = 16;
