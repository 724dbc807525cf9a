// Pixels from the page: images and `<video>` frames scaled down and read as RGBA, and a video's
// frames in chunks for the engine.
import { InputError } from './errors.js';
import { FRAMES_PER_MESSAGE, MAX_FRAMES } from './protocol.js';

// Frames are scaled down on the page until their shorter side is CLIP's input (but not below
// 128 px); the engine then applies CLIP's own preprocessing.
const MIN_SENT_SIDE = 128;

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

export function toImageData(image, imageSize, size) {
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

// `count` frames of `width` x `height`, FRAMES_PER_MESSAGE to a buffer: `frameAt(i)` gives frame
// `i` as `ImageData`.
async function* chunked(count, [width, height], frameAt) {
  const frameBytes = width * height * 4;
  for (let start = 0; start < count; start += FRAMES_PER_MESSAGE) {
    const n = Math.min(FRAMES_PER_MESSAGE, count - start);
    const frames = new Uint8Array(n * frameBytes);
    for (let i = 0; i < n; i++) frames.set((await frameAt(start + i)).data, i * frameBytes);
    yield { frames, width, height };
  }
}

// The frames of `source` (an array of images, or a `<video>` sampled at `fps`: frame `i` is the
// picture shown at `(i + 0.5) / fps` seconds), FRAMES_PER_MESSAGE at a time.
export async function* frameChunks(source, fps, imageSize, signal) {
  if (Array.isArray(source)) {
    if (source.length === 0) throw new InputError('no frames to caption');
    if (source.length > MAX_FRAMES) throw new InputError(`${source.length} frames; the limit is ${MAX_FRAMES}`);
    const size = targetSize(...naturalSize(source[0]), imageSize);
    yield* chunked(source.length, size, (i) => toImageData(source[i], imageSize, size));
    return;
  }
  const video = source;
  if (!(video instanceof HTMLVideoElement)) throw new InputError('a video is an HTMLVideoElement or an array of frames');
  if (video.networkState === HTMLMediaElement.NETWORK_EMPTY && !video.currentSrc && !video.src) throw new InputError('the <video> has no source');
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) await once(video, 'loadedmetadata');
  if (!Number.isFinite(video.duration) || video.duration <= 0) throw new InputError('the video has no finite duration');
  const count = Math.max(1, Math.round(video.duration * fps));
  if (count > MAX_FRAMES) throw new InputError(`${count} frames at ${fps} fps; the limit is ${MAX_FRAMES}`);
  const size = targetSize(video.videoWidth, video.videoHeight, imageSize);
  const wasPaused = video.paused, time = video.currentTime;
  video.pause();
  try {
    yield* chunked(count, size, async (i) => {
      signal?.throwIfAborted();
      await seek(video, Math.min((i + 0.5) / fps, video.duration));
      return toImageData(video, imageSize, size);
    });
  } finally {
    await seek(video, time).catch(() => {});
    if (!wasPaused) video.play().catch(() => {});
  }
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
