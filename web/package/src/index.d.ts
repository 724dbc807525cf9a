// Types of glimpse's browser API (hand-written; the engine's own bindings are in engine/).

/** A model file: a URL (resolved against the page), bytes, or a `Blob` / `File`. */
export type FileSource = string | URL | ArrayBuffer | Uint8Array | Blob;

/** A model in the Hugging Face layout: a folder URL, or its files one by one. */
export type ModelSource =
  | string
  | URL
  | { config: FileSource; weights: FileSource; tokenizer: FileSource; preprocessor?: FileSource; processor?: FileSource };

/**
 * What a load is doing, in order (transformers.js' statuses): per file fetched, `initiate` (asked
 * for), `download` (the answer came, its size is known), `progress` (bytes), `done`; then
 * `building` (the engine makes the models' tensors), on WebGPU `warmup` (the shaders every call
 * uses are compiled, so the first call does not wait for them), and `ready`.
 */
export type LoadStatus = 'initiate' | 'download' | 'progress' | 'done' | 'building' | 'warmup' | 'ready';

export interface LoadProgress {
  status: LoadStatus;
  /** The file's URL (file events only). */
  file?: string;
  /** Bytes of this file received, and its size as announced (0 while unknown). */
  loaded?: number;
  total?: number;
  /** `loaded / total` in percent (0 while the size is unknown). */
  progress?: number;
  /** Bytes received over every file so far, and the sum of their sizes. */
  totalLoaded: number;
  totalBytes: number;
}

export interface LoadOptions {
  clip: ModelSource;
  lm: ModelSource;
  /** `auto` (default): WebGPU on a hardware adapter, otherwise the CPU backend. */
  device?: 'auto' | 'webgpu' | 'cpu';
  /**
   * Threads of the CPU backend, 1 to 16; `auto` (default): one per core the browser reports, up
   * to 16. More than one needs a cross-origin isolated page (the COOP and COEP headers: see the
   * README); elsewhere the CPU backend runs on one thread and `device.threadsFallbackReason` says why.
   */
  threads?: number | 'auto';
  onProgress?: (progress: LoadProgress) => void;
  /** Aborting it stops the load (a stalled download, a long build) with an AbortError. */
  signal?: AbortSignal;
}

export interface DeviceInfo {
  kind: 'webgpu' | 'cpu';
  description: string;
  /** Why `auto` chose the CPU. */
  fallbackReason?: string;
  /** WebGPU's largest storage binding, in bytes. */
  maxStorageBinding?: number;
  /** The CPU backend's threads. */
  threads?: number;
  /** Why the CPU backend runs on one thread where more were asked for (or `auto` would take more). */
  threadsFallbackReason?: string;
}

/** Settings of the caption loop (defaults as in the desktop binary). */
export interface GuidanceOptions {
  /** Hard prompt the caption continues: "Image of" for images, "Video showing" for videos. */
  prompt?: string;
  maxTokens?: number;
  /** Candidates scored by CLIP per token. */
  topK?: number;
  stepsPerToken?: number;
  /** Learnable soft-prompt vectors (0: key/value offsets only). */
  softPromptLen?: number;
}

export interface Step {
  /** The token being chosen (0-based). */
  token: number;
  /** This step's index over the whole run, `0 .. totalSteps` (captions may finish early). */
  step: number;
  totalSteps: number;
  clipLoss: number;
  fluencyLoss: number;
  maskLoss: number;
  /** Current moment spans `[start, end]` in seconds (videos only). */
  spans: [number, number][] | null;
  /** Captions so far, one per image or event. */
  captions: string[];
}

export interface CallOptions {
  signal?: AbortSignal;
  onStep?: (step: Step) => void;
}

export interface DenseCaptionOptions extends GuidanceOptions, CallOptions {
  /** Number of events K, or `'auto'` (the default): one per scene of the video that is not blank. */
  events?: number | 'auto';
  /** The most events `'auto'` finds (default 10). */
  maxEvents?: number;
  /** Sampling rate of a video, or the rate of the given frames (default 2). */
  fps?: number;
  /** Seed of the masks' starting positions (default 0). */
  seed?: number;
}

export interface FindOptions {
  /** Moments per query, best first (default 1). */
  top?: number;
  /** Shortest moment in seconds (default 1). */
  minSeconds?: number;
  /** Gradient steps refining each moment as a soft mask (default 0: the training-free spans). */
  refineSteps?: number;
  /** Sampling rate of a video, or the rate of the given frames (default 2). */
  fps?: number;
  signal?: AbortSignal;
}

export interface Moment {
  start: number;
  end: number;
  /** How much more the moment matches the query than the rest of the video (difference of cosine similarities). */
  score: number;
}

export interface CaptionEvent {
  start: number;
  end: number;
  caption: string;
  /** Cosine similarity between the caption's and the moment's CLIP embeddings. */
  score: number;
}

export type ImageSource = ImageData | ImageBitmap | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas | HTMLVideoElement | VideoFrame;

export declare class DenseCaptions {
  /**
   * Where the video's first picture is on the `<video>`'s clock: 0 but for a file whose timestamps
   * begin later (then event times, SRT and WebVTT are on that clock, YouTube chapters from 00:00).
   */
  readonly start: number;
  /** Seconds from the first picture to the end. */
  readonly duration: number;
  readonly events: CaptionEvent[];
  toSRT(): string;
  toVTT(): string;
  /**
   * YouTube chapters: `MM:SS Title` lines from 00:00, at least three of 10 s or more (short
   * events merged into their neighbours). Throws InputError where the events make none.
   */
  toChapters(): string;
  toJSON(): { start: number; duration: number; events: CaptionEvent[] };
}

export declare class Glimpse {
  private constructor();
  static load(options: LoadOptions): Promise<Glimpse>;
  /** Empties the Cache API cache of fetched model files; `true` when there was one to delete. */
  static clearCache(): Promise<boolean>;
  readonly device: DeviceInfo;
  /** CLIP's input side in pixels. */
  readonly imageSize: number;
  embedImage(image: ImageSource): Promise<Float32Array>;
  embedText(text: string): Promise<Float32Array>;
  captionImage(image: ImageSource, options?: GuidanceOptions & CallOptions): Promise<{ caption: string; score: number }>;
  denseCaption(source: HTMLVideoElement | ImageSource[], options?: DenseCaptionOptions): Promise<DenseCaptions>;
  /** The best moments for a description; for several, one entry per query. Frames are embedded once per source and rate. */
  findMoments(source: HTMLVideoElement | ImageSource[], query: string, options?: FindOptions): Promise<Moment[]>;
  findMoments(source: HTMLVideoElement | ImageSource[], query: string[], options?: FindOptions): Promise<{ query: string; moments: Moment[] }[]>;
  /**
   * `engineBytes`: the engine's WebAssembly memory, which only grows, so the most it has held at
   * once (models included). GPU buffers on WebGPU are not in it.
   */
  memoryUsage(): Promise<{ engineBytes: number }>;
  dispose(): void;
}

export declare class GlimpseError extends Error {}
export declare class NoAdapterError extends GlimpseError {}
export declare class ModelLoadError extends GlimpseError {}
export declare class DeviceLostError extends GlimpseError {}
export declare class InputError extends GlimpseError {}
