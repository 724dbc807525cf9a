#!/usr/bin/env bash
# `glimpse bench` on a GPU machine, beside PyTorch on CUDA: prints the GPU, builds the release
# binary, runs every figure on wgpu and on the CPU with the PyTorch reference on CUDA (on the CPU
# where torch sees no GPU), and writes the output to $OUT/gpu-run.txt (bench/gpu-run.txt without
# $OUT) and the figures to gpu-run.json beside it. Sized for at most about 8 minutes on a fresh
# 16-core machine: the bench itself took 4 min 6 s on an NVIDIA H200 with 16 cores (2026-12-04,
# binary given; the build was not timed there).
# Needs: Linux, the working tree, network for what is missing (as root, apt-get: a C compiler and
# the Vulkan loader; rustup's stable Rust; pip: torch and transformers when there is an NVIDIA GPU).
# GLIMPSE=path/to/glimpse skips the build (a machine without network, given a binary built elsewhere).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench}
log=$out/gpu-run.txt

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$log"
else
    echo "no nvidia-smi: no NVIDIA GPU; wgpu takes whatever adapter it finds" | tee "$log"
fi

missing=()
if [[ -z ${GLIMPSE:-} ]]; then
    command -v cc >/dev/null || missing+=(build-essential)
    command -v cargo >/dev/null || command -v curl >/dev/null || missing+=(curl ca-certificates)
fi
# wgpu reaches the GPU through Vulkan: without the loader it finds no adapter. (grep reads all of
# ldconfig's output: with -q it could stop early and pipefail would count ldconfig's SIGPIPE.)
ldconfig -p | grep libvulkan.so.1 >/dev/null || missing+=(libvulkan1)
if ((${#missing[@]})); then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; } || echo "could not install ${missing[*]}; carrying on" >&2
fi
# Containers that mount the NVIDIA driver under /usr/local/nvidia leave its Vulkan driver unlisted.
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [[ -z ${VK_DRIVER_FILES:-} && -f $nvidia_icd ]]; then export VK_DRIVER_FILES=$nvidia_icd; fi

glimpse=${GLIMPSE:-}
if [[ -z $glimpse ]]; then
    if ! command -v cargo >/dev/null; then
        curl https://sh.rustup.rs -sSf | sh -s -- -y --profile minimal
        . "$HOME/.cargo/env"
    fi
    cargo build --release --locked -p glimpse-cli
    glimpse=target/release/glimpse
fi

python=python3
if command -v nvidia-smi >/dev/null && ! python3 -c 'import torch, transformers' 2>/dev/null; then
    venv=${TMPDIR:-/tmp}/glimpse-bench-venv
    # Time-boxed: torch with its CUDA libraries is gigabytes; without it the table has no PyTorch column.
    if python3 -m venv "$venv" && timeout 240 "$venv/bin/pip" install -q torch transformers; then
        python=$venv/bin/python
    else
        echo "torch and transformers could not be installed: no PyTorch reference" >&2
    fi
fi
reference_device=cpu
if "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    reference_device=cuda
else
    echo "torch sees no CUDA GPU here: the PyTorch reference, if it runs, runs on the CPU" | tee -a "$log"
fi

# Fewer runs and a shorter budget than the defaults keep the whole script near 8 minutes.
"$glimpse" bench --backend wgpu --backend cpu --python "$python" --reference-device "$reference_device" \
    --runs 3 --budget 20 --json "$out/gpu-run.json" 2>&1 | tee -a "$log"
