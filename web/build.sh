#!/usr/bin/env bash
# Builds the browser side: the wasm engine into web/package/engine (what the npm package ships)
# and the demo's assets (the built-in models and the sample video) into web/demo/assets.
#   bash web/build.sh            release build
#   WASM_OPT=1 bash web/build.sh  also shrink the module with binaryen's wasm-opt (npm `binaryen`)
set -euo pipefail
cd "$(dirname "$0")/.."

# The wasm-bindgen CLI must be the exact version of the wasm-bindgen crate in Cargo.lock.
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    echo "installing wasm-bindgen-cli $version (once, a few minutes)"
    cargo install --quiet wasm-bindgen-cli --version "$version"
fi

# The wasm-release profile (Cargo.toml says what it optimises and why).
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p glimpse-wasm
module=target/wasm32-unknown-unknown/wasm-release/glimpse_wasm.wasm
staging=$(mktemp -d)
trap 'rm -rf "$staging"' EXIT
wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$staging" "$module"
if [ "${WASM_OPT:-0}" = 1 ]; then
    [ -x web/node_modules/.bin/wasm-opt ] || { echo "WASM_OPT=1 needs binaryen: run \`npm ci\` in web/ first" >&2; exit 1; }
    (cd web && npx --no-install wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
        "$staging/glimpse_wasm_bg.wasm" -o "$staging/glimpse_wasm_bg.opt.wasm")
    mv "$staging/glimpse_wasm_bg.opt.wasm" "$staging/glimpse_wasm_bg.wasm"
fi
rm -rf web/package/engine
mkdir -p web/package/engine
cp -r "$staging"/. web/package/engine/

# The demo loads the built-in models and the sample from its own origin.
rm -rf web/demo/assets
mkdir -p web/demo/assets/models
cp -r models/world-clip models/world-gpt2 web/demo/assets/models/
cp examples/shapes.webm web/demo/assets/

wasm=web/package/engine/glimpse_wasm_bg.wasm
raw=$(wc -c < "$wasm")
gzipped=$(gzip -9 -c "$wasm" | wc -c)
awk -v f="$wasm" -v r="$raw" -v g="$gzipped" 'BEGIN { printf "engine: %s, %.1f MB raw, %.1f MB gzipped\n", f, r / 1e6, g / 1e6 }'
