#!/usr/bin/env bash
# The test command: sets up what the tests need on a fresh machine, then
# runs every suite. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi

cargo test --workspace --locked "$@"
