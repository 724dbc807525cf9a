// webpack 5 as an app built with it would use the package: no loader or plugin for the worker or
// the engine (webpack follows `new Worker(new URL(...))` and `new URL('….wasm', import.meta.url)`
// itself). web/tests/browser.mjs builds into dist-webpack/ and writes the page next to it.
import { fileURLToPath } from 'node:url';

export default {
  mode: 'production',
  entry: './main.js',
  output: { path: fileURLToPath(new URL('./dist-webpack', import.meta.url)), filename: 'main.js' },
  // The engine is one 16 MB wasm file by design; webpack's 244 KiB advice does not apply.
  performance: { hints: false },
};
