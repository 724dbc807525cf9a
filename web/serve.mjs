// A small static server for the demo and the browser tests: `node web/serve.mjs [root] [--port N]`.
// Serves `root` (default: this folder) on 127.0.0.1 with byte ranges, which <video> seeking needs.
// `isolated` sends the two headers that make a page cross-origin isolated, so that the package
// runs its threaded CPU engine (the command line's server always does); a page so served cannot
// embed another origin's resources unless they allow it (CORP or CORS).
import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.webm': 'video/webm', '.mp4': 'video/mp4',
  '.gif': 'image/gif', '.png': 'image/png', '.ts': 'text/plain', '.safetensors': 'application/octet-stream',
};

const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

export function serve(root, port = 0, { isolated = false } = {}) {
  root = resolve(root);
  const server = createServer(async (request, response) => {
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(`http://x${request.url}`).pathname);
    } catch {
      return end(response, 400);
    }
    const path = normalize(join(root, pathname));
    if (path !== root && !path.startsWith(root + sep)) return end(response, 403);
    let file = path;
    let stat = await fs.stat(file).catch(() => null);
    if (stat?.isDirectory()) {
      if (!pathname.endsWith('/')) {
        response.writeHead(301, { location: `${encodeURI(pathname)}/` });
        return response.end();
      }
      file = join(file, 'index.html');
      stat = await fs.stat(file).catch(() => null);
    }
    if (!stat?.isFile()) return end(response, 404);
    const headers = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'accept-ranges': 'bytes', 'cache-control': 'no-cache',
      ...(isolated ? ISOLATION : {}) };
    const range = /^bytes=(\d*)-(\d*)$/.exec(request.headers.range ?? '');
    if (range && (range[1] || range[2])) {
      const start = range[1] ? Number(range[1]) : Math.max(0, stat.size - Number(range[2]));
      const last = range[1] && range[2] ? Math.min(Number(range[2]), stat.size - 1) : stat.size - 1;
      if (start > last) return end(response, 416, { 'content-range': `bytes */${stat.size}` });
      response.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${last}/${stat.size}`, 'content-length': last - start + 1 });
      return send(createReadStream(file, { start, end: last }), response);
    }
    response.writeHead(200, { ...headers, 'content-length': stat.size });
    if (request.method === 'HEAD') return response.end();
    send(createReadStream(file), response);
  });
  return new Promise((done) => server.listen(port, '127.0.0.1', () => done(server)));
}

function send(stream, response) {
  stream.on('error', () => response.destroy());
  stream.pipe(response);
}

function end(response, status, headers = {}) {
  response.writeHead(status, headers);
  response.end();
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const portAt = args.indexOf('--port');
  const port = portAt >= 0 ? Number(args.splice(portAt, 2)[1]) : 8080;
  const root = args[0] ?? fileURLToPath(new URL('.', import.meta.url));
  const server = await serve(root, port, { isolated: true });
  console.log(`serving ${resolve(root)} on http://127.0.0.1:${server.address().port}/  (demo: http://127.0.0.1:${server.address().port}/demo/)`);
}
