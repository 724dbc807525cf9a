// Pixels from the page: images and `<video>` frames scaled down and read as RGBA, and a video's
// frames in chunks for the engine (with the waits that reading them needs, abortable).
import { InputError } from './errors.js';
import { FRAMES_PER_MESSAGE, MAX_FRAME_SIDE, MAX_FRAMES, MIN_FPS } from './protocol.js';
import { CutShort, Unsupported, keyFrameConfig, openWebm } from './webm.js';

// Frames are scaled down on the page until their shorter side is CLIP's input (but not below
// 128 px), and their longer side at most what the engine takes (a banner 100 px high and 5000
// wide); the engine then applies CLIP's own preprocessing.
const MIN_SENT_SIDE = 128;

function targetSize(width, height, imageSize) {
  if (!width || !height) throw new InputError(`an image of ${width} x ${height} pixels cannot be captioned`);
  const cap = Math.max(imageSize, MIN_SENT_SIDE);
  const scale = Math.min(1, cap / Math.min(width, height), MAX_FRAME_SIDE / Math.max(width, height));
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
// What the package draws: anything else (a plain object shaped like ImageData) is refused by
// name rather than failing inside the canvas.
const DRAWABLE = ['ImageData', 'ImageBitmap', 'HTMLImageElement', 'SVGImageElement', 'HTMLCanvasElement', 'OffscreenCanvas', 'HTMLVideoElement', 'VideoFrame'];

function checkImage(image, what) {
  if (image === null || typeof image !== 'object') throw new InputError(`${what} is ${image === null ? 'null' : typeof image}, not an image`);
  if (!DRAWABLE.some((name) => typeof globalThis[name] === 'function' && image instanceof globalThis[name])) {
    throw new InputError(`${what} is ${image.constructor?.name ?? 'an object'}, not an image: give an ImageData, ImageBitmap, <img>, <canvas>, OffscreenCanvas, <video> or VideoFrame`);
  }
  if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement && !image.complete) {
    throw new InputError(`${what} is an <img> still loading: wait for its 'load' event (or await img.decode())`);
  }
  // A loaded <img> without pixels is one whose source failed (missing, or no image), or an SVG
  // without a size of its own.
  if (typeof HTMLImageElement !== 'undefined' && image instanceof HTMLImageElement && !image.naturalWidth) {
    throw new InputError(`${what} is an <img> whose source failed to load or has no size of its own (${image.currentSrc || 'no src'}): check its address and that it is an image (an SVG needs a width and height)`);
  }
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
async function* chunked(count, [width, height], frameAt, readers = 1, from = 0) {
  const frameBytes = width * height * 4;
  for (let start = from; start < count; start += FRAMES_PER_MESSAGE) {
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
// picture shown `(i + 0.5) / fps` seconds after its first, on its `timeline` where the caller has
// it), FRAMES_PER_MESSAGE at a time. A `<video>` playing a WebM file is decoded from its file with
// WebCodecs where the browser can (`decode`: false never tries); any other, or one whose decoding
// fails, is read by seeking the element.
export async function* frameChunks(source, fps, imageSize, signal, { decode = true, timeline } = {}) {
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
  const { start, end } = timeline ?? await videoTimeline(video, signal);
  const count = Math.max(1, Math.round((end - start) * fps));
  if (count > MAX_FRAMES) {
    // To a hundredth, down.
    const fitting = Math.floor((MAX_FRAMES / (end - start)) * 100) / 100;
    const advice = fitting >= MIN_FPS ? `use fps: ${fitting} or lower, or caption a shorter part` : 'it is too long for any rate; caption it in parts';
    throw new InputError(`the video's ${Math.round(end - start)} s at ${fps} fps are ${count} frames, more than the ${MAX_FRAMES} glimpse reads; ${advice}`);
  }
  const size = targetSize(video.videoWidth, video.videoHeight, imageSize);
  const times = Array.from({ length: count }, (_, i) => Math.min(start + (i + 0.5) / fps, end));
  const src = video.currentSrc;
  let from = 0;
  const decoded = decode ? await decodedFrames(video, times.map((t) => t - start), size, imageSize, signal) : null;
  if (decoded) {
    try {
      const next = async () => {
        signal?.throwIfAborted();
        if (sourceChanged(video, src)) throw new InputError(SOURCE_CHANGED);
        return (await decoded.frames.next()).value;
      };
      for await (const chunk of chunked(count, size, next)) {
        yield chunk;
        from += FRAMES_PER_MESSAGE;
      }
      return;
    } catch (error) {
      if (signal?.aborted || error instanceof InputError) throw error;
      // The element would show the last picture there is at every later time, without a word.
      if (error instanceof CutShort) throw new InputError(`the video's file is cut short (${error.message}): download or copy it again`);
      // Seeking reads the rest, and says what is wrong with the video if it meets it too.
    } finally {
      await decoded.frames.return();
      decoded.close();
    }
  }
  const putBack = holdStill(video);
  // The element and copies of it seek at once: a seek waits for its frame to be presented, one
  // frame of the display, so one element reads about 60 frames a second and four read four times
  // as many. A copy must show each frame it seeks to within COPY_SEEK_MS, or the copies retire.
  const readers = [video];
  try {
    readers.push(...await copiesOf(video, Math.min(READERS, count) - 1));
    yield* chunked(count, size, async (i, reader) => {
      signal?.throwIfAborted();
      const element = readers[reader];
      const at = times[i];
      if (element === video) {
        if (await seek(video, at, SEEK_MS, signal, { patient: true }) === 'late') {
          throw new InputError(`the video received nothing for ${SEEK_MS / 1000} s while seeking to ${at.toFixed(2)} s: its server stalled, or its source was taken away`);
        }
        const wrong = landing(video, at, fps, src);
        if (wrong) throw new InputError(wrong);
      } else if (await seek(element, at, COPY_SEEK_MS, signal) !== true || landing(element, at, fps, src)) {
        // The page's element reads the rest, and says what is wrong if it meets it too.
        throw new Error('a copy of the video did not show its frame');
      }
      return toImageData(element, imageSize, size, `the frame at ${at.toFixed(2)} s`);
    }, readers.length, from);
  } finally {
    readers.slice(1).forEach(release);
    await putBack();
  }
}

// Pauses `video` for reading; the function returned puts it back where it stood, playing if it
// was (not where its source has changed meanwhile: nothing would show), also after an abort.
function holdStill(video) {
  const [time, paused, src] = [video.currentTime, video.paused, video.currentSrc];
  video.pause();
  return async () => {
    if (video.currentSrc !== src) return;
    if (video.currentTime !== time) await seek(video, time, COPY_SEEK_MS, undefined, { present: false }).catch(() => {});
    if (!paused) video.play().catch(() => {});
  };
}

// The frames of `video` shown at `times` (seconds from its first picture, ascending), decoded with WebCodecs from the file
// it plays: `{frames, close}`, where `frames` yields ImageData of `size` one at a time and in order,
// and `close` stops the download. null where that does not apply: no WebCodecs, a source that is
// not a file, a file that is not WebM or that the page may not fetch; a codec the browser does not
// decode is found at the first key frame, and `frames` throws Unsupported. Held meanwhile: the
// file's current element, the chunks waiting to be decoded, the frame last decoded and the
// frames not yet taken.
async function decodedFrames(video, times, size, imageSize, signal) {
  if (typeof VideoDecoder !== 'function' || video.srcObject || !video.currentSrc) return null;
  // Another origin's file can be fetched only with CORS, which an element without `crossOrigin`
  // does not ask for (its frames could not be read either way).
  if (video.crossOrigin === null && fromAnotherOrigin(video.currentSrc)) return null;
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  const ended = () => {
    stop.abort();
    signal?.removeEventListener('abort', onAbort);
  };
  let webm;
  try {
    const credentials = video.crossOrigin === 'use-credentials' ? 'include' : 'same-origin';
    const response = await within(fetch(video.currentSrc, { signal: stop.signal, credentials }), SEEK_MS, signal);
    if (response === 'late' || !response.ok || !response.body) throw new Unsupported('the file cannot be fetched');
    const reader = response.body.getReader();
    webm = await openWebm({
      read: async () => {
        const read = await within(reader.read(), SEEK_MS, signal);
        if (read === 'late') throw new Error(`the video's file sent nothing for ${SEEK_MS / 1000} s`);
        return read;
      },
    });
  } catch (error) {
    ended();
    if (signal?.aborted) throw signal.reason;
    return null;
  }
  // A generator that never started has nothing to end: `close` stops the download either way.
  return { frames: decodeFrames(webm, times.map((t) => Math.round(t * 1e6)), size, imageSize, ended), close: ended };
}

async function* decodeFrames({ config, blocks }, times, size, imageSize, ended) {
  const ready = [];
  let held = null, answered = 0, failure = null, wake = null;
  const decoder = new VideoDecoder({
    // Frames come in presentation order: the one held is shown at every time before this one's
    // (drawn once, however many times it answers: a still picture may last the whole video).
    output: (frame) => {
      try {
        let pixels = null;
        while (answered < times.length && times[answered] < frame.timestamp) {
          pixels ??= pixelsOf(held ?? frame, imageSize, size);
          ready.push(pixels);
          answered++;
        }
      } catch (error) {
        failure ??= error;
      } finally {
        held?.close();
        held = frame;
        wake?.();
      }
    },
    error: (error) => {
      failure = error;
      wake?.();
    },
  });
  // Only the pictures sampled times need are decoded: from a key frame (where decoding can start) up
  // to the picture shown at the last sampled time before the next key frame, as a seek would. A
  // chunk waits until a later one shows whether a time needs it (MAX_WAITING_BYTES of them at most);
  // `needed` is the first time whose picture may still be in a chunk not yet read.
  let waiting = [], waitingBytes = 0, needed = 0;
  const decode = (chunks) => chunks.forEach((chunk) => decoder.decode(chunk));
  // Decodes what the times before `time` (a chunk's, or Infinity at the end) need of the waiting chunks.
  const decodeBefore = (time) => {
    let last = 0;
    for (; needed < times.length && times[needed] < time; needed++) {
      while (last < waiting.length && waiting[last].timestamp <= times[needed]) last++;
    }
    const decoding = waiting.splice(0, last);
    waitingBytes -= decoding.reduce((bytes, chunk) => bytes + chunk.byteLength, 0);
    decode(decoding);
  };
  try {
    while (answered < times.length || ready.length > 0) {
      if (ready.length > 0) {
        yield ready.shift();
        continue;
      }
      if (failure) throw failure;
      let block, done;
      try {
        ({ value: block, done } = await blocks.next());
      } catch (error) {
        // The file breaks off (a dropped connection, a damaged element): the frames decoded from
        // what came before it are given first, up to the last one whose successor was seen.
        await decoder.flush().catch(() => {});
        while (ready.length > 0) yield ready.shift();
        throw error;
      }
      if (done) {
        if (decoder.state === 'unconfigured') throw new Error('the file holds no frame');
        decodeBefore(Infinity);
        await decoder.flush();
        if (failure) throw failure;
        if (!held) throw new Error('no frame could be decoded');
        const last = answered < times.length ? pixelsOf(held, imageSize, size) : null;
        for (; answered < times.length; answered++) ready.push(last);
        continue;
      }
      const chunk = new EncodedVideoChunk({ type: block.key ? 'key' : 'delta', timestamp: block.timestamp, data: block.data });
      if (decoder.state === 'unconfigured') {
        if (!block.key) throw new Error('the video does not start with a key frame');
        // The times count from the file's start, its first block of any track (where the element's
        // clock and ffmpeg's begin too): on the file's clock from here on.
        times = times.map((t) => t + block.first);
        const full = keyFrameConfig(config, block.data);
        if (!(await VideoDecoder.isConfigSupported(full)).supported) throw new Unsupported(full.codec);
        decoder.configure(full);
        // The first picture is shown at every time before it.
        decoder.decode(chunk);
        continue;
      }
      decodeBefore(chunk.timestamp);
      // What waits of the group before is shown at no sampled time.
      if (block.key) [waiting, waitingBytes] = [[], 0];
      waiting.push(chunk);
      waitingBytes += chunk.byteLength;
      if (waitingBytes > MAX_WAITING_BYTES) {
        decode(waiting.splice(0));
        waitingBytes = 0;
      }
      // Decoded pictures are waited for while they pile up, so that reading stays ahead by little.
      if (decoder.decodeQueueSize > 8) await new Promise((resolve) => { wake = resolve; decoder.addEventListener('dequeue', resolve, { once: true }); });
    }
  } finally {
    held?.close();
    if (decoder.state !== 'closed') decoder.close();
    ended();
  }
}

// A <video>'s timeline once its metadata is in (within METADATA_MS; `signal` ends the wait):
// `{start, end}`, in the element's seconds. `start` is its first picture's time: a file whose
// timestamps begin later (a stream's recording) is read from there, as the native CLI reads it.
// The element never stands before it, so one standing at 0 starts there; another goes to 0 to
// learn it. Where the header does not give the end (MediaRecorder's WebM) or may be wrong (for an
// MP4 that begins later Chromium gives its track's length), the element goes to its end to learn
// it. The element is put back where it stood. Refuses a non-video, one without a source or
// pictures, one that cannot be read and a live stream.
export async function videoTimeline(video, signal) {
  if (!(typeof HTMLVideoElement !== 'undefined' && video instanceof HTMLVideoElement)) throw new InputError('a video is an HTMLVideoElement or an array of frames');
  if (video.networkState === HTMLMediaElement.NETWORK_EMPTY && !video.currentSrc && !video.src) throw new InputError('the <video> has no source');
  if (video.readyState < HTMLMediaElement.HAVE_METADATA) {
    // An element told not to preload would never load its metadata by itself.
    if (video.preload === 'none') video.preload = 'metadata';
    if (await within(once(video, 'loadedmetadata'), METADATA_MS, signal) === 'late') throw new InputError(`the video's metadata did not arrive within ${METADATA_MS / 1000} s: its server stalled or it cannot be read`);
  }
  if (!video.videoWidth || !video.videoHeight) {
    throw new InputError('the file has no pictures this browser shows (only sound, or a video codec it does not play, such as HEVC on many systems: Chromium then plays the sound alone): give a video in H.264, VP9 or AV1, or caption it with the glimpse CLI');
  }
  const live = () => new InputError('the video has no finite duration (a live stream cannot be captioned)');
  if (video.srcObject && !Number.isFinite(video.duration)) throw live();
  let start = 0;
  if (video.currentTime > 0 || video.duration === Infinity) {
    const putBack = holdStill(video);
    try {
      if (video.currentTime > 0) {
        if (await seek(video, 0, SEEK_MS, signal, { patient: true, present: false }) === 'late') throw new InputError(`the video did not go to its start within ${SEEK_MS / 1000} s`);
        start = video.currentTime;
      }
      // Chromium's duration grows while a seek to the end reads on, and the seek lands where the
      // end was when it began: seek again until one stands at the end or leaves it where it was.
      for (let seeks = 0; video.duration === Infinity || start > 0; seeks++) {
        if (seeks === MAX_END_SEEKS) throw new InputError(`the video's end moved on at each of ${MAX_END_SEEKS} seeks to it: its length cannot be learnt`);
        const before = video.duration;
        if (await seek(video, Number.MAX_SAFE_INTEGER, SEEK_MS, signal, { patient: true, present: false }) === 'late') {
          throw new InputError(`the video did not reach its end within ${SEEK_MS / 1000} s to learn its length`);
        }
        if (video.duration === before || video.currentTime >= video.duration - END_EPSILON) break;
      }
    } finally {
      await putBack();
    }
  }
  if (!Number.isFinite(video.duration) || !(video.duration > start)) throw live();
  return { start, end: video.duration };
}

// What is wrong after an element's seek to `at`, or null: where it cannot seek (a server that
// answers no byte ranges snaps every seek back to the start) or its source changed midway, the
// frames would be wrong without a word. A browser may report the time rounded to the file's
// timescale (Safari's 1/600 s): a quarter of a sampling step is far off still.
function landing(element, at, fps, src) {
  if (sourceChanged(element, src)) return SOURCE_CHANGED;
  if (Math.abs(element.currentTime - at) > Math.min(0.05, 0.25 / fps)) {
    return `the video cannot seek to ${at.toFixed(2)} s (it went to ${element.currentTime.toFixed(2)} s): serve it with byte-range requests (HTTP 206), or pass its frames`;
  }
  return null;
}

// Whether `element` no longer plays `src`. A new `src` shows at once; `currentSrc` follows only once
// the browser has chosen the new source (and meanwhile the element already stands at 0 s).
function sourceChanged(element, src) {
  return element.currentSrc !== src || (element.src !== '' && element.src !== src);
}

const SOURCE_CHANGED = 'the video\'s source changed while its frames were read';

// Elements reading one video's frames at once, the page's own among them.
const READERS = 4;
// The encoded pictures held before they are decoded whatever the sampled times need.
const MAX_WAITING_BYTES = 32 << 20;
// How long a copy may take to load before it is left out, and to show a frame it seeks to.
const COPY_LOAD_MS = 3000;
const COPY_SEEK_MS = 2000;
// How long the page's own element may take to load its metadata, and go without receiving
// anything while it seeks (a slow link that still delivers is waited for).
const METADATA_MS = 30000;
const SEEK_MS = 10000;
// Seeks to the end that may find it further on each time, and how close to it counts as there.
const MAX_END_SEEKS = 20;
const END_EPSILON = 1e-3;

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
    once(copy, 'loadedmetadata', false).then(() => copy.videoWidth === video.videoWidth && copy.videoHeight === video.videoHeight, () => false),
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

// Sets `video` to `time` and waits for `seeked`. That can fire before the new picture reaches the
// element (Chromium with GPU video paths drew the previous seek's frame): where the picture matters
// (`present`), wait for it to be presented too, where the browser says so, but not for long (no new
// frame is presented when two samples fall on the same video frame). Whether it was presented (or
// the browser cannot say), or 'late' when the seek itself takes longer than `limit` ms (`patient`:
// without the element receiving data); rejects when `signal` aborts.
async function seek(video, time, limit, signal, { patient = false, present = true } = {}) {
  // Only the page's own element says why it failed: a copy retires, and putting back is quiet.
  const seeked = once(video, 'seeked', patient);
  let presented = Promise.resolve(true);
  if (present && video.requestVideoFrameCallback) {
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

// Resolves on `event`, rejects when the media fails (`explain`: with what it means, which may
// take a request; without, where the failure is not told); the listeners go away either way.
function once(target, event, explain = true) {
  const failure = () => (explain ? mediaFailure(target) : Promise.resolve(codeFailure(target)))
    .then((message) => new InputError(message), () => new InputError(codeFailure(target)));
  return new Promise((resolve, reject) => {
    if (target.error) return failure().then(reject);
    const settle = (ok) => (value) => {
      target.removeEventListener(event, onEvent);
      target.removeEventListener('error', onError);
      if (ok) resolve(value); else failure().then(reject);
    };
    const onEvent = settle(true), onError = settle(false);
    target.addEventListener(event, onEvent);
    target.addEventListener('error', onError);
  });
}

// What the failure of `video` means, and what to do: from its MediaError's code (the browser's
// own message in brackets) and, where the browser could not fetch or open the file, from asking
// for its first bytes once more, since to the element a wrong address, a damaged file and an
// unknown format fail alike.
async function mediaFailure(video) {
  const { code, message } = video.error ?? {};
  const said = message ? ` (${message})` : '';
  if (code !== MediaError.MEDIA_ERR_NETWORK && code !== MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED) return codeFailure(video);
  const url = video.currentSrc || video.src;
  const start = await firstBytes(url, video.crossOrigin);
  // A file of no bytes has no first ones to give.
  if (start?.status?.startsWith('416')) return `the video's file at ${url} is empty: download or copy it again`;
  if (start?.status) return `the video's server answered ${start.status} for ${url}: check the address, and that the file is still there`;
  if (code === MediaError.MEDIA_ERR_NETWORK) {
    return start
      ? `the video cannot be read to its end${said}, though its first bytes can: the file is damaged or cut short, or the connection dropped; call again, and if it fails again download or copy the file again`
      : codeFailure(video);
  }
  const container = start && containerOf(start.bytes);
  if (container) {
    return `this browser cannot open the video, ${container} file${said}: it is damaged or cut short (an MP4 keeps its index at its end unless written with \`-movflags +faststart\`), or its codec is not one this browser plays (H.264, VP8, VP9 and AV1 are the common ones); download or copy it again, convert it (e.g. \`ffmpeg -i IN -c:v libx264 -movflags +faststart OUT.mp4\`), or caption it with the glimpse CLI`;
  }
  // A server that refuses CORS to an element asking for it fails like an unknown format.
  const foreign = !start && video.crossOrigin !== null && fromAnotherOrigin(url);
  const cors = foreign ? 'its server does not allow this page to read it (it must send Access-Control-Allow-Origin), or ' : '';
  return `this browser cannot play the video${said}: ${cors}it is not a video file, or its format or codec is not one this browser plays (H.264, VP8, VP9 and AV1 are the common ones; convert it, e.g. \`ffmpeg -i IN -c:v libx264 OUT.mp4\`, or caption it with the glimpse CLI)`;
}

// What the failure of `video` means from its MediaError's code alone.
function codeFailure(video) {
  const { code, message } = video.error ?? {};
  const said = message ? ` (${message})` : '';
  switch (code) {
    case MediaError.MEDIA_ERR_DECODE:
      return `the video's data cannot be decoded${said}: the file is damaged or cut short; download or copy it again`;
    case MediaError.MEDIA_ERR_NETWORK:
      return `the video's download failed${said}: check the connection and its server, then call again`;
    case MediaError.MEDIA_ERR_SRC_NOT_SUPPORTED:
      return `this browser cannot play the video${said}`;
    default:
      return `the video cannot be read${said}`;
  }
}

// How long the failure's second look at a file may take.
const FIRST_BYTES_MS = 5000;
// Enough to tell the containers apart.
const SNIFFED_BYTES = 12;

// The first bytes of `url`, or `{ status }` where its server refuses them, or null where they
// cannot be had (another origin's file the element reads without CORS, no answer in time).
async function firstBytes(url, crossOrigin) {
  if (!url || (crossOrigin === null && fromAnotherOrigin(url))) return null;
  try {
    const response = await fetch(url, {
      headers: { range: `bytes=0-${SNIFFED_BYTES - 1}` },
      cache: 'no-store',
      credentials: crossOrigin === 'use-credentials' ? 'include' : 'same-origin',
      signal: AbortSignal.timeout(FIRST_BYTES_MS),
    });
    if (!response.ok) return { status: `${response.status} ${response.statusText}`.trim() };
    const reader = response.body.getReader();
    const bytes = [];
    while (bytes.length < SNIFFED_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      bytes.push(...value.subarray(0, SNIFFED_BYTES - bytes.length));
    }
    reader.cancel().catch(() => {});
    return { bytes };
  } catch {
    return null;
  }
}

// The container that `bytes`, a file's first, begin: 'an MP4 / MOV', 'a WebM / Matroska', or
// null for another.
function containerOf(bytes) {
  const box = String.fromCharCode(...bytes.slice(4, 8));
  if (['ftyp', 'moov', 'mdat', 'free', 'wide', 'skip'].includes(box)) return 'an MP4 / MOV';
  if (bytes.length >= 4 && [0x1a, 0x45, 0xdf, 0xa3].every((b, i) => bytes[i] === b)) return 'a WebM / Matroska';
  return null;
}

// Whether `url` (an element's source, maybe relative) is another origin's file; a `data:` one is
// the page's own.
function fromAnotherOrigin(url) {
  if (!url) return false;
  const parsed = new URL(url, location.href);
  return parsed.protocol !== 'data:' && parsed.origin !== location.origin;
}
