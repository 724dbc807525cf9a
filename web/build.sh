#!/usr/bin/env bash
# Builds the browser side: the wasm engines into web/package/engine (WebGPU or the CPU on one thread,
# for every page) and web/package/engine-threads (the CPU on several threads, for cross-origin
# isolated pages), what the npm package ships, and the demo's assets (the built-in models and the
# sample video) into web/demo/assets.
#   bash web/build.sh            release build
#   WASM_OPT=1 bash web/build.sh  also shrink the modules with binaryen's wasm-opt (npm `binaryen`)
# The threaded engine rebuilds the standard library with wasm's atomics: it needs the nightly
# toolchain with rust-src (`rustup component add rust-src --toolchain nightly`).
set -euo pipefail
cd "$(dirname "$0")/.."

# The wasm-bindgen CLI must be the exact version of the wasm-bindgen crate in Cargo.lock.
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    echo "installing wasm-bindgen-cli $version (once, a few minutes)"
    cargo install --quiet wasm-bindgen-cli --version "$version"
fi

# What the builds below need, said before anything builds: binaryen for WASM_OPT=1, and nightly's
# library source for the threaded engine.
if [ "${WASM_OPT:-0}" = 1 ] && [ ! -x web/node_modules/.bin/wasm-opt ]; then
    echo "WASM_OPT=1 needs binaryen: run \`npm ci\` in web/ first" >&2
    exit 1
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "the threaded engine needs the nightly toolchain with rust-src: rustup component add rust-src --toolchain nightly (rustup toolchain install nightly first where there is none)" >&2
    exit 1
fi

# Both engines in the wasm-release profile (Cargo.toml says what it optimises and why).
cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p glimpse-wasm
# Shared memory (imported, so that every worker gets the same one) up to wasm32's 4 GiB, and the
# thread-local storage symbols wasm-bindgen sets up each thread with. In a folder of its own: another
# toolchain and other target features. RUSTFLAGS replaces .cargo/config.toml's wasm32 flags, so
# SIMD128 is named again.
threads_flags="-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128"
for arg in --shared-memory --import-memory --max-memory=4294967296 \
    --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base; do
    threads_flags="$threads_flags -C link-arg=$arg"
done
RUSTFLAGS="$threads_flags" cargo +nightly build --locked -Z build-std=panic_abort,std --profile wasm-release \
    --target wasm32-unknown-unknown --target-dir target/wasm-threads -p glimpse-wasm

# Each module through wasm-bindgen (and wasm-opt) into web/package/<folder>.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
package() {
    local module=$1 folder=$2
    local staging="$work/$folder"
    wasm-bindgen --target web --remove-name-section --remove-producers-section --out-dir "$staging" "$module"
    if [ "${WASM_OPT:-0}" = 1 ]; then
        (cd web && npx --no-install wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-threads \
            "$staging/glimpse_wasm_bg.wasm" -o "$staging/glimpse_wasm_bg.opt.wasm")
        mv "$staging/glimpse_wasm_bg.opt.wasm" "$staging/glimpse_wasm_bg.wasm"
    fi
    rm -rf "web/package/$folder"
    mkdir -p "web/package/$folder"
    cp -r "$staging"/. "web/package/$folder/"
    local wasm="web/package/$folder/glimpse_wasm_bg.wasm" raw gzipped
    raw=$(wc -c < "$wasm")
    gzipped=$(gzip -9 -c "$wasm" | wc -c)
    awk -v f="$wasm" -v r="$raw" -v g="$gzipped" 'BEGIN { printf "engine: %s, %.1f MB raw, %.1f MB gzipped\n", f, r / 1e6, g / 1e6 }'
}
package target/wasm32-unknown-unknown/wasm-release/glimpse_wasm.wasm engine
package target/wasm-threads/wasm32-unknown-unknown/wasm-release/glimpse_wasm.wasm engine-threads

# The demo loads the built-in models and the sample from its own origin.
rm -rf web/demo/assets
mkdir -p web/demo/assets/models
cp -r models/world-clip models/world-gpt2 web/demo/assets/models/
cp examples/shapes.webm web/demo/assets/

