// Uses the package the way a web app would; the test reads `window.consumer`.
import { Glimpse, InputError, ModelLoadError } from '@glimpse-rs/glimpse';

const TEXTS = ['two large red squares in the middle', 'one small blue circle on the left', 'three large green triangles on the right'];
const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);

async function main() {
  const image = document.getElementById('scene');
  await image.decode();
  const progress = [];
  const glimpse = await Glimpse.load({ clip: 'models/world-clip', lm: 'models/world-gpt2', device: 'cpu', onProgress: (event) => progress.push(event) });

  const imageEmbedding = await glimpse.embedImage(image);
  const similarities = [];
  for (const text of TEXTS) similarities.push(dot(imageEmbedding, await glimpse.embedText(text)));
  const bestText = similarities.indexOf(Math.max(...similarities));
  const { caption } = await glimpse.captionImage(image);
  // 40 frames reach the engine in three chunks; all of them must count.
  const chunked = await glimpse.denseCaption(Array(40).fill(image), { fps: 2, events: 2, maxTokens: 2 });
  // Two events of 20 s make no YouTube chapters (three are needed): refused with the reason.
  let chapters;
  try {
    chapters = `accepted: ${chunked.toChapters()}`;
  } catch (error) {
    chapters = `${error instanceof InputError ? 'InputError' : error.name}: ${error.message}`;
  }

  // 5 s of blank background, the scene for 10 s, 5 s of blank again, counting the reads of every
  // frame but the first and the last (which also name the source).
  const blank = new ImageData(image.naturalWidth, image.naturalHeight);
  blank.data.fill(235);
  let reads = 0;
  const frames = new Proxy([...Array(10).fill(blank), ...Array(20).fill(image), ...Array(10).fill(blank)], {
    get(target, key) {
      if (typeof key === 'string' && /^[0-9]+$/.test(key) && key !== '0' && Number(key) !== target.length - 1) reads += 1;
      return target[key];
    },
  });
  const auto = (await glimpse.denseCaption(frames, { maxTokens: 2 })).toJSON();
  const readsForCaption = reads;
  const found = await glimpse.findMoments(frames, TEXTS[0]);
  const several = await glimpse.findMoments(frames, TEXTS, { top: 2 });
  const moments = { auto, found, several, readsForCaption, readsAfterFinding: reads };

  let badModel = null, badModelIsTyped = false, badModelMessage = '';
  try {
    await Glimpse.load({ clip: 'models/missing', lm: 'models/world-gpt2', device: 'cpu' });
  } catch (error) {
    badModel = error.name;
    badModelIsTyped = error instanceof ModelLoadError;
    badModelMessage = error.message;
  }
  // Models given as what a model is not: a number, JSON text where a URL goes, a Response, a buffer
  // transferred away.
  const detached = new ArrayBuffer(8);
  structuredClone(detached, { transfer: [detached] });
  const badSources = [];
  for (const clip of [
    5,
    { config: '{"model_type": "clip"}', tokenizer: 'models/world-clip/tokenizer.json', weights: 'models/world-clip/model.safetensors' },
    { config: 'models/world-clip/config.json', tokenizer: 'models/world-clip/tokenizer.json', weights: new Response('not weights') },
    { config: 'models/world-clip/config.json', tokenizer: 'models/world-clip/tokenizer.json', weights: detached },
  ]) {
    try {
      await Glimpse.load({ clip, lm: 'models/world-gpt2', device: 'cpu' });
      badSources.push('accepted');
    } catch (error) {
      badSources.push(`${error instanceof ModelLoadError ? 'ModelLoadError' : error.name}: ${error.message}`);
    }
  }
  // A deadline on the load (a signal the browser fires itself) rejects with its reason.
  let loadTimeout = null;
  try {
    await Glimpse.load({ clip: 'models/world-clip', lm: 'models/world-gpt2', device: 'cpu', signal: AbortSignal.timeout(1) });
  } catch (error) {
    loadTimeout = error.name;
  }
  // Weights cut short are refused, and not kept in the cache: a fixed file is fetched next time.
  const corrupt = { name: 'accepted', message: '' };
  try {
    await Glimpse.load({ clip: 'models/world-clip', lm: 'models/corrupt-gpt2', device: 'cpu' });
  } catch (error) {
    Object.assign(corrupt, { name: error.name, message: error.message });
  }
  corrupt.cached = (await (await caches.open('glimpse-models-v1')).match(new URL('models/corrupt-gpt2/model.safetensors', location.href).href)) !== undefined;

  // Bad input is refused with InputError, and the engine stays usable; a call's settings are
  // refused before any of its frames is read.
  const inputErrors = [];
  const inputMessages = [];
  const readsBeforeRefusals = reads;
  for (const attempt of [
    () => glimpse.denseCaption([]),
    () => glimpse.captionImage(image, { notAnOption: 1 }),
    () => glimpse.captionImage(image, { maxTokens: 0 }),
    // Longer than the world GPT-2's 32 positions: refused by the model, still the caller's to fix.
    () => glimpse.captionImage(image, { prompt: 'a red circle '.repeat(12) }),
    () => glimpse.embedImage(new ImageData(1, 1)).then(() => glimpse.embedImage(Object.assign(document.createElement('canvas'), { width: 0, height: 0 }))),
    () => glimpse.findMoments(frames, ' '),
    () => glimpse.findMoments(frames, TEXTS[0], { top: 0 }),
    () => glimpse.findMoments(frames, TEXTS[0], { minSecond: 2 }),
    () => glimpse.denseCaption(frames, { events: 'many' }),
    () => glimpse.findMoments(frames, TEXTS[0], { refineSteps: Infinity }),
    () => glimpse.denseCaption(frames, { maxTokens: 40 }),
    () => glimpse.denseCaption(frames, { seed: 2 ** 64 }),
    () => glimpse.captionImage(image, { topK: NaN }),
    () => glimpse.denseCaption(null),
    () => glimpse.denseCaption([image, image, null]),
    () => glimpse.denseCaption([image, new ImageData(1, 1)]),
    () => glimpse.embedImage(document.createElement('video')),
    () => Glimpse.load({ clip: 'models/world-clip', lm: 'models/world-gpt2', threads: 0 }),
    () => Glimpse.load({ clip: 'models/world-clip', lm: 'models/world-gpt2', threads: 'many' }),
    () => glimpse.captionImage({ width: 2, height: 2, data: new Uint8ClampedArray(16) }),
    () => glimpse.denseCaption(frames, { signal: {} }),
    () => Glimpse.load({ clip: 'models/world-clip', lm: 'models/world-gpt2', onProgress: 5 }),
    () => glimpse.embedText('a red square '.repeat(6000)),
    () => glimpse.denseCaption(frames, { fps: '2' }),
    // Refused under the options' own names: stepsPerToken out of range, and topK within its
    // bounds (256) but beyond the world GPT-2's vocabulary, for an image and for frames (checked
    // before they are read).
    () => glimpse.captionImage(image, { stepsPerToken: 0 }),
    () => glimpse.captionImage(image, { topK: 200 }),
    () => glimpse.denseCaption(frames, { topK: 200 }),
  ]) {
    try {
      await attempt();
      inputErrors.push('accepted');
    } catch (error) {
      inputErrors.push(error instanceof InputError ? 'InputError' : `${error.name}: ${error.message}`);
      inputMessages.push(error.message);
    }
  }

  const readsByRefusals = reads - readsBeforeRefusals;

  // What a page may well give: a banner far wider than the engine's largest frame (scaled down on
  // the page), a prompt cut inside an emoji (half a character), a negative count.
  const broken = new Image();
  broken.src = 'no-such-picture.png';
  await broken.decode().catch(() => {});
  const banner = Object.assign(document.createElement('canvas'), { width: 5000, height: 100 });
  banner.getContext('2d').drawImage(image, 0, 0, 5000, 100);
  const edges = {
    banner: (await glimpse.embedImage(banner)).length,
    cutEmoji: await glimpse.captionImage(image, { prompt: 'A 😀'.slice(0, 3), maxTokens: 2 }).then(({ caption }) => typeof caption, (e) => `${e.name}: ${e.message}`),
    negative: await glimpse.captionImage(image, { maxTokens: -1 }).then(() => 'accepted', (e) => `${e.name}: ${e.message}`),
    broken: await glimpse.embedImage(broken).then(() => 'accepted', (e) => `${e.name}: ${e.message}`),
  };

  const controller = new AbortController();
  let aborted = null;
  try {
    await glimpse.captionImage(image, { signal: controller.signal, onStep: () => controller.abort() });
  } catch (error) {
    aborted = error.name;
  }
  const afterAbort = (await glimpse.captionImage(image, { maxTokens: 4 })).caption;
  glimpse.dispose();

  // The same models converted to q8 (`glimpse models convert --dtype q8`) load through the same
  // package, stay 8-bit in the engine, and see the image as the f32 models do, on the CPU or (with
  // `?q8device=webgpu`) on WebGPU. Here the files are given one by one, as an app holding them
  // would: CLIP's weights as a Blob (read range by range), GPT-2's as bytes.
  const files = (folder) => ({ config: `${folder}/config.json`, tokenizer: `${folder}/tokenizer.json` });
  const fetched = async (url) => {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.blob();
  };
  const small = await Glimpse.load({
    clip: { ...files('models/world-clip-q8'), preprocessor: 'models/world-clip-q8/preprocessor_config.json', weights: await fetched('models/world-clip-q8/model.safetensors') },
    lm: { ...files('models/world-gpt2-q8'), weights: new Uint8Array(await (await fetched('models/world-gpt2-q8/model.safetensors')).arrayBuffer()) },
    device: new URLSearchParams(location.search).get('q8device') ?? 'cpu',
  });
  const q8Embedding = await small.embedImage(image);
  const norm = (v) => Math.sqrt(dot(v, v));
  const q8 = {
    cosine: dot(imageEmbedding, q8Embedding) / (norm(imageEmbedding) * norm(q8Embedding)),
    caption: (await small.captionImage(image)).caption,
    device: small.device.kind,
  };
  small.dispose();
  const cacheCleared = await Glimpse.clearCache();
  const cacheLeft = await caches.has('glimpse-models-v1');
  return { threads: glimpse.device.threads, threadsFallbackReason: glimpse.device.threadsFallbackReason, progress, cacheCleared, cacheLeft, texts: TEXTS, similarities, bestText, caption, chunked: chunked.toJSON(), chapters, moments, badModel, badModelIsTyped, badModelMessage, badSources, corrupt, inputErrors, inputMessages, readsByRefusals, edges, aborted, afterAbort, loadTimeout, q8 };
}

main().then(
  (result) => { window.consumer = result; },
  (error) => { window.consumer = { error: `${error.name}: ${error.message}` }; },
);
