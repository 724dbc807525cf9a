// Real-size models (`glimpse models random`) through the package on the CPU path, timed as a user
// waits: the load, a captioned image, and a dense caption until its first step and its end. The test
// (web/tests/browser.mjs) passes the model folders and the clip's length in the query string and
// reads `window.realSize`; it measures the browser's memory from outside, and the engine's comes from
// `memoryUsage()` after the load and at the end.
import { Glimpse } from '@glimpse-rs/glimpse';

const params = new URLSearchParams(location.search);
const FPS = 2;
const frameCount = Number(params.get('frames'));

// A 320 x 240 clip of two scenes: a red square moving right, then a blue disc moving down.
function clip() {
  const canvas = new OffscreenCanvas(320, 240);
  const context = canvas.getContext('2d');
  return Array.from({ length: frameCount }, (_, i) => {
    const redScene = i < frameCount / 2;
    context.fillStyle = '#ddd';
    context.fillRect(0, 0, 320, 240);
    context.fillStyle = redScene ? '#c22' : '#23c';
    context.beginPath();
    if (redScene) context.rect(40 + 10 * i, 80, 80, 80);
    else context.arc(160, 40 + 8 * (i - frameCount / 2), 40, 0, 2 * Math.PI);
    context.fill();
    return context.getImageData(0, 0, 320, 240);
  });
}

async function main() {
  const frames = clip();
  const phases = [];
  const started = performance.now();
  const glimpse = await Glimpse.load({
    clip: params.get('clip'), lm: params.get('lm'), device: 'cpu',
    onProgress: (event) => { if (!['progress', 'download'].includes(event.status)) phases.push({ status: event.status, file: event.file, ms: performance.now() - started }); },
  });
  const loadMs = performance.now() - started;
  const loadedEngineBytes = (await glimpse.memoryUsage()).engineBytes;

  const embedding = Array.from(await glimpse.embedImage(frames[0]));
  let at = performance.now();
  const image = await glimpse.captionImage(frames[0], { maxTokens: Number(params.get('maxTokens')) });
  const imageMs = performance.now() - at;

  at = performance.now();
  let firstStepMs = null;
  const dense = await glimpse.denseCaption(frames, {
    fps: FPS, events: 2, maxTokens: Number(params.get('maxTokens')),
    onStep: () => { firstStepMs ??= performance.now() - at; },
  });
  const denseMs = performance.now() - at;
  const { engineBytes } = await glimpse.memoryUsage();
  glimpse.dispose();
  return { device: glimpse.device.description, threads: glimpse.device.threads, loadMs, loadedEngineBytes, engineBytes, phases, embedding, caption: image.caption, imageMs, firstStepMs, denseMs, dense: dense.toJSON() };
}

main().then(
  (result) => { window.realSize = result; },
  (error) => { window.realSize = { error: `${error.name}: ${error.message}` }; },
);
