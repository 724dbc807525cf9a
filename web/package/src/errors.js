// The errors glimpse raises, one class per `name` the engine and the worker give (protocol.js).
import { ErrorName } from './protocol.js';

/** Base class of every error glimpse raises. */
export class GlimpseError extends Error {
  constructor(message) { super(message); this.name = ErrorName.engine; }
}
/** WebGPU was required (`device: 'webgpu'`) but the browser has none or gave no adapter. */
export class NoAdapterError extends GlimpseError {
  constructor(message) { super(message); this.name = ErrorName.noAdapter; }
}
/** A model file is missing, unreachable or malformed; the message names the file or tensor. */
export class ModelLoadError extends GlimpseError {
  constructor(message) { super(message); this.name = ErrorName.modelLoad; }
}
/** The GPU device was lost or the engine stopped on it; the next call starts a fresh engine. */
export class DeviceLostError extends GlimpseError {
  constructor(message) { super(message); this.name = ErrorName.deviceLost; }
}
/** Frames, images or options the engine cannot use. */
export class InputError extends GlimpseError {
  constructor(message) { super(message); this.name = ErrorName.input; }
}

/** The class of each error name; an unknown name is a GlimpseError. */
export const ERRORS = {
  [ErrorName.noAdapter]: NoAdapterError,
  [ErrorName.modelLoad]: ModelLoadError,
  [ErrorName.deviceLost]: DeviceLostError,
  [ErrorName.input]: InputError,
  [ErrorName.engine]: GlimpseError,
};
