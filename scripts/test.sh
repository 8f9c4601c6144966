#!/usr/bin/env bash
# The test command: sets up what the tests need on a fresh machine, then
# runs every suite. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

# ptxas assembles every generated PTX kernel (tests/tests/ptx.rs). It comes
# from NVIDIA's PyPI wheel (~40 MB, no GPU or driver needed), installed
# once into .tools/cuda (ignored by git); an existing KILN_PTXAS wins.
if [ -z "${KILN_PTXAS:-}" ]; then
    tools=.tools/cuda
    ptxas="$tools/nvidia/cuda_nvcc/bin/ptxas"
    if [ ! -x "$ptxas" ]; then
        echo "installing ptxas (nvidia-cuda-nvcc-cu12) into $tools ..." >&2
        python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" "nvidia-cuda-nvcc-cu12==12.9.*"
    fi
    KILN_PTXAS="$(pwd)/$ptxas"
    export KILN_PTXAS
fi

cargo test --workspace --locked "$@"
