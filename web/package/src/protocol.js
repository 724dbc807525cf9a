// What crosses between the facade (index.js, on the page) and the engine's worker (worker.js, which
// runs glimpse-wasm): the message types, the error names and the engine's limits, defined once for
// both sides. `tests/protocol.rs` checks the names and limits against the Rust side.

/**
 * A request, facade -> worker, as `{ id, type, args }`; the worker answers with replies carrying
 * the same `id`. A dense caption is three kinds of request in a row: `startVideo`, one
 * `videoFrames` per chunk, then `denseCaption`.
 * @typedef {{ id: number } & (
 *   | { type: 'load', args: { device: 'auto' | 'webgpu' | 'cpu', clip: ModelSource, lm: ModelSource } }
 *   | { type: 'embedImage', args: { image: ImageData } }
 *   | { type: 'embedText', args: { text: string } }
 *   | { type: 'captionImage', args: { image: ImageData, options: GuidanceOptions } }
 *   | { type: 'startVideo', args: { fps: number } }
 *   | { type: 'videoFrames', args: FrameChunk }
 *   | { type: 'denseCaption', args: { events: number, seed: number, options: GuidanceOptions } }
 * )} Request
 * @typedef {string | Record<string, string | ArrayBuffer | Uint8Array | Blob>} ModelSource
 *   a folder URL in the Hugging Face layout, or a URL or bytes per file
 * @typedef {{ prompt?: string, maxTokens?: number, topK?: number, stepsPerToken?: number, softPromptLen?: number }} GuidanceOptions
 *   glimpse_align::guided::GuidanceOptions; each one left out keeps the engine's default
 * @typedef {{ frames: Uint8Array, width: number, height: number }} FrameChunk
 *   up to FRAMES_PER_MESSAGE RGBA frames of `width` x `height`, one after another
 */
export const Request = Object.freeze({
  load: 'load',
  embedImage: 'embedImage',
  embedText: 'embedText',
  captionImage: 'captionImage',
  startVideo: 'startVideo',
  videoFrames: 'videoFrames',
  denseCaption: 'denseCaption',
});

/**
 * A reply, worker -> facade: any number of `step` / `progress`, then one `result` or `error`.
 * @typedef {{ id: number } & (
 *   | { type: 'result', value: unknown }
 *   | { type: 'error', error: { name: string, message: string, fatal?: boolean } }
 *   | { type: 'step', step: object }
 *   | { type: 'progress', progress: { file: string, loaded: number, total: number } }
 * )} Reply
 */
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
/** Highest sampling rate, frames per second (glimpse_media::video::MAX_FPS). */
export const MAX_FPS = 60;
/** Default sampling rate, frames per second (glimpse_media::video::DEFAULT_FPS). */
export const DEFAULT_FPS = 2;
/** Default events per dense caption (glimpse_align::zerota::ZeroTaConfig::default().events). */
export const DEFAULT_EVENTS = 3;
/** Most events per dense caption (glimpse_align::zerota::MAX_EVENTS). */
export const MAX_EVENTS = 32;
/** Frames per `videoFrames` message: one chunk's pixels are all a video ever has in flight. */
export const FRAMES_PER_MESSAGE = 16;
