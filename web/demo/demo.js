// The demo page: load glimpse's built-in models from this origin, sample a video, caption it with
// a live timeline. URL parameters (used by the browser tests too): device=auto|webgpu|cpu,
// sample=1 (open the sample video), autorun=1 (caption it at once), events, fps, seed, and
// query (fills the search box).
import { Glimpse } from '../package/src/index.js';

const MODELS = { clip: 'assets/models/world-clip/', lm: 'assets/models/world-gpt2/' };
const SAMPLE = 'assets/shapes.webm';
// Longest caption in tokens.
const MAX_TOKENS = 12;
const COLOURS = ['#2f6fed', '#e5484d', '#30a46c', '#f5a524', '#8e4ec6', '#0d9488', '#d6409f', '#6e56cf'];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { glimpse: null, videoName: null, result: null, abort: null, duration: 0 };
// What the tests read: device, timings and the result of the last run.
window.glimpseRun = {};

for (const name of ['events', 'fps', 'seed', 'query']) if (params.has(name)) $(name).value = params.get(name);
$('device').value = params.get('device') ?? 'auto';

function setState(value, message, isError = false) {
  document.body.dataset.state = value;
  $('status').textContent = message;
  $('status').classList.toggle('error', isError);
  $('run').disabled = !(state.glimpse && state.videoName) || value === 'running' || value === 'loading';
  $('find').disabled = $('run').disabled;
  $('stop').hidden = value !== 'running';
  // The video cannot change under a running caption.
  for (const id of ['file', 'sample', 'device']) $(id).disabled = value === 'running';
}

function showProgress(fraction) {
  $('progress').hidden = fraction == null;
  $('progress').firstElementChild.style.width = `${Math.round((fraction ?? 0) * 100)}%`;
}

// Bytes while the files come, then what the engine does with them.
function showLoading({ status, totalLoaded, totalBytes }) {
  if (status === 'building') {
    showProgress(1);
    $('status').textContent = 'Building the models…';
    return;
  }
  if (status === 'warmup') {
    $('status').textContent = 'Compiling the shaders…';
    return;
  }
  if (status === 'ready') return;
  showProgress(totalBytes ? totalLoaded / totalBytes : null);
  const mib = (bytes) => (bytes / (1 << 20)).toFixed(1);
  $('status').textContent = `Loading the models… ${mib(totalLoaded)} of ${mib(totalBytes)} MiB`;
}

let loads = 0;

async function loadModels() {
  const generation = ++loads;
  state.glimpse?.dispose();
  state.glimpse = null;
  setState('loading', 'Loading the models…');
  $('device-badge').textContent = 'starting…';
  $('device-badge').className = 'badge';
  $('notice').hidden = true;
  const started = performance.now();
  // The statuses in order, without back-to-back repeats (for the browser tests).
  const phases = [];
  let glimpse;
  try {
    glimpse = await Glimpse.load({
      ...MODELS,
      device: $('device').value,
      onProgress: (event) => {
        if (generation !== loads) return;
        if (phases.at(-1) !== event.status) phases.push(event.status);
        showLoading(event);
      },
    });
  } catch (error) {
    if (generation !== loads) return;
    showProgress(null);
    $('device-badge').textContent = 'no engine';
    setState('error', `${error.name}: ${error.message}`, true);
    return;
  }
  // The device was changed again while this one loaded.
  if (generation !== loads) return glimpse.dispose();
  state.glimpse = glimpse;
  const loadMs = performance.now() - started;
  const device = state.glimpse.device;
  window.glimpseRun = { device, loadMs, phases };
  showProgress(null);
  const threads = device.threads > 1 ? `, ${device.threads} threads` : ', one thread';
  $('device-badge').textContent = device.kind === 'webgpu' ? device.description : `CPU (WebAssembly${threads})`;
  $('device-badge').className = `badge ${device.kind}`;
  if (device.fallbackReason) {
    $('notice').textContent = `Running on the CPU: ${device.fallbackReason}. Results are the same, only the speed differs.`;
    $('notice').hidden = false;
  }
  setState('ready', `Models ready in ${(loadMs / 1000).toFixed(2)} s on ${device.description}. ${state.videoName ? '' : 'Now choose a video.'}`);
}

function openVideo(url, name) {
  const video = $('video');
  video.src = url;
  video.hidden = false;
  state.videoName = name;
  clearResult();
  setState(state.glimpse ? 'ready' : document.body.dataset.state, state.glimpse ? `${name}: press “Caption the video”.` : $('status').textContent);
  return new Promise((resolve, reject) => {
    video.addEventListener('loadedmetadata', resolve, { once: true });
    video.addEventListener('error', () => reject(new Error(`${name} cannot be played by this browser`)), { once: true });
  }).then(() => { state.duration = video.duration; }).catch((error) => {
    state.videoName = null;
    setState('error', error.message, true);
  });
}

function clearResult() {
  state.result = null;
  for (const id of ['download-srt', 'download-vtt', 'download-json']) $(id).disabled = true;
  $('events-list').innerHTML = '<li class="empty">No events yet.</li>';
  for (const lane of document.querySelectorAll('.lane')) lane.remove();
  clearFound();
}

function clearFound() {
  $('found-list').innerHTML = '';
  for (const span of document.querySelectorAll('.timeline .found')) span.remove();
}

function lanes(count) {
  const timeline = $('timeline');
  let existing = timeline.querySelectorAll('.lane');
  if (existing.length !== count) {
    existing.forEach((lane) => lane.remove());
    for (let k = 0; k < count; k++) {
      const lane = document.createElement('div');
      lane.className = 'lane';
      lane.innerHTML = `<div class="mask" style="background:${COLOURS[k % COLOURS.length]}"></div><div class="text"></div>`;
      timeline.appendChild(lane);
    }
    existing = timeline.querySelectorAll('.lane');
  }
  return [...existing];
}

function drawSpans(spans, captions) {
  const duration = state.duration || 1;
  lanes(spans.length).forEach((lane, k) => {
    const [start, end] = spans[k];
    const mask = lane.querySelector('.mask');
    mask.style.left = `${(100 * start) / duration}%`;
    mask.style.width = `${Math.max(0.5, (100 * (end - start)) / duration)}%`;
    const text = lane.querySelector('.text');
    text.textContent = captions?.[k] || '…';
    text.style.left = `min(${(100 * start) / duration}%, 60%)`;
  });
}

const clock = (t) => `${Math.floor(t / 60)}:${(t % 60).toFixed(1).padStart(4, '0')}`;

function showResult(result) {
  drawSpans(result.events.map((e) => [e.start, e.end]), result.events.map((e) => e.caption));
  const list = $('events-list');
  list.innerHTML = '';
  for (const event of result.events) {
    const item = document.createElement('li');
    item.innerHTML = `<time>${clock(event.start)} – ${clock(event.end)}</time><span class="caption"></span><span class="score">score ${event.score.toFixed(3)}</span>`;
    item.querySelector('.caption').textContent = event.caption;
    item.addEventListener('click', () => { $('video').currentTime = event.start; });
    list.appendChild(item);
  }
  if (result.events.length === 0) list.innerHTML = '<li class="empty">No events found.</li>';
  for (const id of ['download-srt', 'download-vtt', 'download-json']) $(id).disabled = false;
}

// Highlights where the query's moments are on the timeline and lists them.
async function find() {
  const query = $('query').value.trim();
  if (!query) return;
  clearFound();
  state.abort = new AbortController();
  setState('running', `Looking for “${query}”…`);
  const started = performance.now();
  try {
    const moments = await state.glimpse.findMoments($('video'), query, { fps: Number($('fps').value), top: 3, signal: state.abort.signal });
    const findMs = performance.now() - started;
    const duration = state.duration || 1;
    moments.forEach((moment, rank) => {
      const span = Object.assign(document.createElement('div'), { className: 'found' });
      span.style.left = `${(100 * moment.start) / duration}%`;
      span.style.width = `${(100 * (moment.end - moment.start)) / duration}%`;
      span.style.opacity = `${1 - rank * 0.3}`;
      $('timeline').appendChild(span);
      const item = document.createElement('li');
      item.innerHTML = `<time>${clock(moment.start)} – ${clock(moment.end)}</time><span class="caption">${rank === 0 ? 'best match' : 'also'}</span><span class="score">score ${moment.score.toFixed(3)}</span>`;
      item.addEventListener('click', () => { $('video').currentTime = moment.start; });
      $('found-list').appendChild(item);
    });
    if (moments.length > 0) $('video').currentTime = moments[0].start;
    window.glimpseRun = { ...window.glimpseRun, findMs, query, found: moments };
    setState('done', `Found “${query}” in ${(findMs / 1000).toFixed(2)} s.`);
  } catch (error) {
    if (error.name === 'AbortError') setState('ready', 'Stopped.');
    else setState('error', `${error.name}: ${error.message}`, true);
  } finally {
    state.abort = null;
  }
}

async function caption() {
  const events = $('events').value.trim() === 'auto' ? 'auto' : Number($('events').value);
  const fps = Number($('fps').value), seed = Number($('seed').value);
  clearResult();
  state.abort = new AbortController();
  setState('running', 'Reading frames…');
  const started = performance.now();
  const steps = [];
  try {
    const result = await state.glimpse.denseCaption($('video'), {
      events, fps, seed, maxTokens: MAX_TOKENS, signal: state.abort.signal,
      onStep: (step) => {
        steps.push({ spans: step.spans, captions: step.captions });
        if (step.spans) drawSpans(step.spans, step.captions);
        showProgress((step.step + 1) / step.totalSteps);
        $('status').textContent = `Optimising: word ${step.token + 1}, step ${step.step + 1} of at most ${step.totalSteps}`;
      },
    });
    const captionMs = performance.now() - started;
    state.result = result;
    showResult(result);
    showProgress(null);
    window.glimpseRun = { ...window.glimpseRun, captionMs, steps, result: result.toJSON(), srt: result.toSRT(), vtt: result.toVTT() };
    setState('done', `${result.events.length} events in ${(captionMs / 1000).toFixed(2)} s (${steps.length} optimiser steps).`);
  } catch (error) {
    showProgress(null);
    if (error.name === 'AbortError') setState('ready', 'Stopped.');
    else setState('error', `${error.name}: ${error.message}`, true);
  } finally {
    state.abort = null;
  }
}

function download(text, type, extension) {
  const base = (state.videoName ?? 'video').replace(/\.[^.]+$/, '');
  const link = Object.assign(document.createElement('a'), { href: URL.createObjectURL(new Blob([text], { type })), download: `${base}.${extension}` });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

$('settings').addEventListener('submit', (event) => { event.preventDefault(); caption(); });
$('search').addEventListener('submit', (event) => { event.preventDefault(); find(); });
$('stop').addEventListener('click', () => state.abort?.abort());
$('device').addEventListener('change', loadModels);
$('sample').addEventListener('click', () => openVideo(SAMPLE, 'shapes.webm'));
$('file').addEventListener('change', () => {
  const file = $('file').files[0];
  if (file) openVideo(URL.createObjectURL(file), file.name);
});
const drop = $('drop');
drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (event) => {
  event.preventDefault();
  drop.classList.remove('over');
  if (document.body.dataset.state === 'running') return;
  const file = [...event.dataTransfer.files].find((f) => f.type.startsWith('video/')) ?? event.dataTransfer.files[0];
  if (file) openVideo(URL.createObjectURL(file), file.name);
});
$('video').addEventListener('timeupdate', () => {
  $('playhead').style.left = `${(100 * $('video').currentTime) / (state.duration || 1)}%`;
});
$('download-srt').addEventListener('click', () => download(state.result.toSRT(), 'application/x-subrip', 'srt'));
$('download-vtt').addEventListener('click', () => download(state.result.toVTT(), 'text/vtt', 'vtt'));
$('download-json').addEventListener('click', () => download(JSON.stringify(state.result, null, 2), 'application/json', 'json'));

const opening = params.get('sample') === '1' ? openVideo(SAMPLE, 'shapes.webm') : Promise.resolve();
await Promise.all([loadModels(), opening]);
if (params.get('autorun') === '1' && state.glimpse && state.videoName) await caption();
