import { createServer } from 'node:http';
import { readFileSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { serve } from '../serve.mjs';
const web = fileURLToPath(new URL('..', import.meta.url));
const stat = await serve(web);
const server = createServer((req, res) => {
  const u = new URL(`http://x${req.url}`);
  const p = u.pathname;
  if (p === '/probe.html') { res.writeHead(200, { 'content-type': 'text/html' }); return res.end(`<!doctype html><body><script type=module>import * as G from '/package/src/index.js'; window.G = G; window.ready = true;</script></body>`); }
  if (p.startsWith('/stall/')) { const f = join(web, p.slice(6)); const b = readFileSync(f); res.writeHead(200, { 'content-length': b.length, 'content-type': 'application/octet-stream' }); res.write(b.subarray(0, b.length >> 1)); return; }
  if (p.startsWith('/badlen/')) { const f = join(web, p.slice(7)); const b = readFileSync(f); res.writeHead(200, { 'content-length': b.length + 1000 }); res.end(b); return; }
  if (p.startsWith('/short/')) { const f = join(web, p.slice(6)); const b = readFileSync(f); res.writeHead(200, { 'content-length': b.length - 1000 }); try { res.end(b); } catch (e) {} return; }
  if (p.startsWith('/nolen/')) { const f = join(web, p.slice(6)); const b = readFileSync(f); res.writeHead(200, {}); res.write(b.subarray(0, b.length >> 1)); setTimeout(() => res.destroy(), 50); return; }
  if (p.startsWith('/html/')) { res.writeHead(200, { 'content-type': 'text/html' }); return res.end('<!doctype html><html><body>app</body></html>'); }
  if (p.startsWith('/bp/')) { try { const b = readFileSync(join('/tmp/bprobe', p.slice(4))); res.writeHead(200, {'content-length': b.length, 'content-type': p.endsWith('.webm') ? 'video/webm' : p.endsWith('.json')? 'application/json':'application/octet-stream', 'accept-ranges': 'none'}); return res.end(b); } catch { res.writeHead(404); return res.end(); } }
  stat.emit('request', req, res);
});
await new Promise((d) => server.listen(0, '127.0.0.1', d));
const origin = `http://127.0.0.1:${server.address().port}`;
const files = process.argv.slice(2);
const profile = mkdtempSync('/tmp/bprobe/prof-');
const args = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic', '--autoplay-policy=no-user-gesture-required'];
if (process.env.WEBGPU) args.push('--enable-unsafe-webgpu');
const ctx = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args });
const killer = setTimeout(() => { console.log('HARNESS TIMEOUT'); process.exit(3); }, Number(process.env.T ?? 120) * 1000);
try {
  for (const f of files) {
    const page = await ctx.newPage();
    page.on('console', (m) => console.log(`  [console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => console.log(`  [pageerror] ${e.message}`));
    await page.goto(`${origin}/probe.html`);
    await page.waitForFunction(() => window.ready);
    console.log(`=== ${f}`);
    const code = readFileSync(f, 'utf8');
    const t0 = Date.now();
    try {
      const r = await page.evaluate(async (code) => {
        const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
        const log = []; window.plog = (...a) => { log.push(a.map((x) => typeof x === 'string' ? x : JSON.stringify(x)).join(' ')); console.log('P', ...a.map((x) => typeof x === 'string' ? x : JSON.stringify(x))); };
        window.within = (p, ms, label = '') => Promise.race([p.then((v) => ({ ok: true, v }), (e) => ({ err: `${e?.constructor?.name}/${e?.name}: ${e?.message}` })), new Promise((r) => setTimeout(() => r({ hang: `no settle in ${ms} ms ${label}` }), ms))]);
        await new AsyncFunction(code)();
        return 'done';
      }, code);
      console.log(`  -> ${r} in ${Date.now() - t0} ms`);
    } catch (e) { console.log(`  -> evaluate threw: ${e.message.slice(0, 500)}`); }
    await page.close();
  }
} finally { clearTimeout(killer); await ctx.close(); rmSync(profile, { recursive: true, force: true }); server.close(); stat.close(); }
process.exit(0);
