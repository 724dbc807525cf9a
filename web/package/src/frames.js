// Pixels from the page: images and `<video>` frames scaled down and read as RGBA, and a video's
// frames in chunks for the engine (with the waits that reading them needs, abortable).
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

// `what` names the image in messages ("the image", "frame 3").
export function toImageData(image, imageSize, size, what = 'the image') {
  checkImage(image, what);
  return pixelsOf(image, imageSize, size);
}

// toImageData of an image checkImage has passed.
function pixelsOf(image, imageSize, size) {
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

// Refuses what cannot be drawn, as an InputError rather than the canvas's TypeError: no image at
// all, one without pixels (a closed ImageBitmap or VideoFrame has none), a <video> with no
// picture yet.
function checkImage(image, what) {
  if (image === null || typeof image !== 'object') throw new InputError(`${what} is ${image === null ? 'null' : typeof image}, not an image`);
  if (typeof HTMLVideoElement !== 'undefined' && image instanceof HTMLVideoElement && image.readyState < HTMLMediaElement.HAVE_CURRENT_DATA) {
    throw new InputError(`${what} is a <video> with no picture yet: wait for its 'loadeddata' event`);
  }
  const [width, height] = naturalSize(image);
  if (!(width > 0 && height > 0)) throw new InputError(`${what} has ${width ?? 0} x ${height ?? 0} pixels (a closed ImageBitmap or VideoFrame has none)`);
}

function imageDataBitmapSource(data) {
  const canvas = new OffscreenCanvas(data.width, data.height);
  canvas.getContext('2d').putImageData(data, 0, 0);
  return canvas;
}

// `count` frames of `width` x `height`, FRAMES_PER_MESSAGE to a buffer: `frameAt(i, reader)` gives
// frame `i` as `ImageData`. The frames of a buffer are shared out between `readers` (numbers
// 0..readers - 1: frame i to reader i % readers), each reading its own in turn, all at once.
// Reader 0 is the one that must work: when another fails, the others stop after their frame in
// hand, reader 0 reads what is missing and then reads alone; when reader 0 fails, the call does,
// once no reader is still reading.
async function* chunked(count, [width, height], frameAt, readers = 1) {
  const frameBytes = width * height * 4;
  for (let start = 0; start < count; start += FRAMES_PER_MESSAGE) {
    const n = Math.min(FRAMES_PER_MESSAGE, count - start);
    const frames = new Uint8Array(n * frameBytes);
    const read = new Array(n).fill(false);
    let stop = false;
    const settled = await Promise.allSettled(Array.from({ length: Math.min(readers, n) }, async (_, reader) => {
      for (let i = reader; i < n && !stop; i += readers) {
        try {
          frames.set((await frameAt(start + i, reader)).data, i * frameBytes);
          read[i] = true;
        } catch (error) {
          stop = true;
          throw error;
        }
      }
    }));
    if (settled[0].status === 'rejected') throw settled[0].reason;
    if (stop) {
      readers = 1;
      for (let i = 0; i < n; i++) if (!read[i]) frames.set((await frameAt(start + i, 0)).data, i * frameBytes);
    }
    yield { frames, width, height };
  }
}

// The frames of `source` (an array of images, or a `<video>` sampled at `fps`: frame `i` is the
// picture shown at `(i + 0.5) / fps` seconds), FRAMES_PER_MESSAGE at a time.
export async function* frameChunks(source, fps, imageSize, signal) {
  if (Array.isArray(source)) {
    if (source.length === 0) throw new InputError('no frames to caption');
    if (source.length > MAX_FRAMES) throw new InputError(`${source.length} frames; the limit is ${MAX_FRAMES}`);
    checkImage(source[0], 'frame 0');
    const first = naturalSize(source[0]);
    const size = targetSize(...first, imageSize);
    yield* chunked(source.length, size, (i) => {
      const [frame, what] = [source[i], `frame ${i}`];
      checkImage(frame, what);
      const [width, height] = naturalSize(frame);
      // Scaled to the first one's size, another size would be stretched.
      if (width !== first[0] || height !== first[1]) {
        throw new InputError(`${what} is ${width} x ${height} pixels and frame 0 ${first[0]} x ${first[1]}: the frames of a video have one size`);
      }
      return pixelsOf(frame, imageSize, size);
    });
    return;
  }
  const video = source;
  await videoLength(video, signal);
  const count = Math.max(1, Math.round(video.duration * fps));
  if (count > MAX_FRAMES) throw new InputError(`${count} frames at ${fps} fps; the limit is ${MAX_FRAMES}`);
  const size = targetSize(video.videoWidth, video.videoHeight, imageSize);
  const wasPaused = video.paused, time = video.currentTime;
  video.pause();
  // The element and copies of it seek at once: a seek waits for its frame to be presented, one
  // frame of the display, so one element reads about 60 frames a second and four read four times
  // as many. A copy must show each frame it seeks to within COPY_SEEK_MS, or the copies retire.
  const readers = [video];
  const src = video.currentSrc;
  try {
    readers.push(...await copiesOf(video, Math.min(READERS, count) - 1));
    yield* chunked(count, size, async (i, reader) => {
      signal?.throwIfAborted();
      const element = readers[reader];
      const at = Math.min((i + 0.5) / fps, video.duration);
      if (element === video) {
        if (await seek(video, at, SEEK_MS, signal, true) === 'late') {
          throw new InputError(`the video received nothing for ${SEEK_MS / 1000} s while seeking to ${at.toFixed(2)} s: its server stalled, or its source was taken away`);
        }
        const wrong = landing(video, at, fps, src);
        if (wrong) throw new InputError(wrong);
      } else if (await seek(element, at, COPY_SEEK_MS, signal) !== true || landing(element, at, fps, src)) {
        // The page's element reads the rest, and says what is wrong if it meets it too.
        throw new Error('a copy of the video did not show its frame');
      }
      return toImageData(element, imageSize, size, `the frame at ${at.toFixed(2)} s`);
    }, readers.length);
  } finally {
    readers.slice(1).forEach(release);
    // Not where the source was taken away: nothing would show.
    if (video.currentSrc === src) await seek(video, time, COPY_SEEK_MS).catch(() => {});
    if (!wasPaused) video.play().catch(() => {});
  }
}

// A <video>'s length in seconds once its metadata is in (within METADATA_MS; `signal` ends the
// wait): refuses a non-video, one without a source, one that cannot be read and a live stream.
export async function videoLength(video, signal) {
  if (!(typeof HTMLVideoElement !== 'undefined' && video instanceof HTMLVideoElement)) throw new InputError('a video is an HTMLVideoElement or an array of frames');
  if (video.networkState === HTMLMediaElement.NETWORK_EMPTY && !video.currentSrc && !video.src) throw new InputError('the <video> has no source');
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) {
    // An element told not to preload would never load its metadata by itself.
    if (video.preload === 'none') video.preload = 'metadata';
    if (await within(once(video, 'loadedmetadata'), METADATA_MS, signal) === 'late') throw new InputError(`the video's metadata did not arrive within ${METADATA_MS / 1000} s: its server stalled or it cannot be read`);
  }
  if (!Number.isFinite(video.duration) || video.duration <= 0) throw new InputError('the video has no finite duration');
  return video.duration;
}

// What is wrong after an element's seek to `at`, or null: where it cannot seek (a server that
// answers no byte ranges snaps every seek back to the start) or its source changed midway, the
// frames would be wrong without a word. A browser may report the time rounded to the file's
// timescale (Safari's 1/600 s): a quarter of a sampling step is far off still.
function landing(element, at, fps, src) {
  if (element.currentSrc !== src) return 'the video\'s source changed while its frames were read';
  if (Math.abs(element.currentTime - at) > Math.min(0.05, 0.25 / fps)) {
    return `the video cannot seek to ${at.toFixed(2)} s (it went to ${element.currentTime.toFixed(2)} s): serve it with byte-range requests (HTTP 206), or pass its frames`;
  }
  return null;
}

// Elements reading one video's frames at once, the page's own among them.
const READERS = 4;
// How long a copy may take to load before it is left out, and to show a frame it seeks to.
const COPY_LOAD_MS = 3000;
const COPY_SEEK_MS = 2000;
// How long the page's own element may take to load its metadata, and go without receiving
// anything while it seeks (a slow link that still delivers is waited for).
const METADATA_MS = 30000;
const SEEK_MS = 10000;

// Up to `n` muted copies of `video` playing its current source, on the page but invisible (a
// browser may not present the frames of an element outside it). A source that cannot be opened
// twice (a MediaStream, a MediaSource) gives none, and neither does one slow to load: the element
// then reads alone.
async function copiesOf(video, n) {
  if (n <= 0 || video.srcObject || !video.currentSrc) return [];
  const copies = Array.from({ length: n }, () => {
    const copy = document.createElement('video');
    copy.muted = true;
    copy.preload = 'metadata';
    copy.crossOrigin = video.crossOrigin;
    copy.src = video.currentSrc;
    copy.setAttribute('aria-hidden', 'true');
    copy.style.cssText = 'position: fixed; left: 0; top: 0; width: 1px; height: 1px; opacity: 0; pointer-events: none;';
    (document.body ?? document.documentElement).append(copy);
    return copy;
  });
  const loaded = await Promise.all(copies.map((copy) => Promise.race([
    once(copy, 'loadedmetadata').then(() => copy.videoWidth === video.videoWidth && copy.videoHeight === video.videoHeight, () => false),
    new Promise((resolve) => setTimeout(() => resolve(false), COPY_LOAD_MS)),
  ])));
  copies.filter((_, i) => !loaded[i]).forEach(release);
  return copies.filter((_, i) => loaded[i]);
}

// Removes a copy from the page and lets go of its decoder.
function release(copy) {
  copy.remove();
  copy.removeAttribute('src');
  copy.load();
}

// `seeked` can fire before the new picture reaches the element (Chromium with GPU video paths drew
// the previous seek's frame): wait for the frame to be presented too, where the browser says so,
// but not for long (no new frame is presented when two samples fall on the same video frame).
// Whether it was presented (or the browser cannot say), or 'late' when the seek itself takes
// longer than `limit` ms (`patient`: without the element receiving data); rejects when `signal`
// aborts.
async function seek(video, time, limit, signal, patient = false) {
  const seeked = once(video, 'seeked');
  let presented = Promise.resolve(true);
  if (video.requestVideoFrameCallback) {
    presented = new Promise((resolve) => {
      const handle = video.requestVideoFrameCallback(() => { clearTimeout(timer); resolve(true); });
      const timer = setTimeout(() => { video.cancelVideoFrameCallback(handle); resolve(false); }, 500);
    });
  }
  video.currentTime = time;
  if (await within(seeked, limit, signal, patient ? video : undefined) === 'late') return 'late';
  return presented;
}

// `promise`, or 'late' after `limit` ms (counted from the last 'progress' event of `media`,
// where given: data still arriving is no stall), or a rejection when `signal` aborts (with its
// reason); the timer and the listener go away either way.
async function within(promise, limit, signal, media) {
  let timer;
  let last = performance.now();
  const onProgress = () => { last = performance.now(); };
  media?.addEventListener('progress', onProgress);
  const late = new Promise((resolve) => {
    const check = () => {
      const quiet = performance.now() - last;
      if (quiet >= limit) resolve('late');
      else timer = setTimeout(check, limit - quiet);
    };
    timer = setTimeout(check, limit);
  });
  try {
    return await abortable(Promise.race([promise, late]), signal);
  } finally {
    clearTimeout(timer);
    media?.removeEventListener('progress', onProgress);
  }
}

// `job`, or a rejection (with the signal's reason) as soon as `signal` aborts; the listener goes
// away when `job` settles, so a long-lived signal does not gather one per call.
export function abortable(job, signal) {
  if (!signal) return job;
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(signal.reason ?? new DOMException('the operation was aborted', 'AbortError'));
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    // Even after an abort: a job that fails later is then handled, not reported as unhandled.
    job.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
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
