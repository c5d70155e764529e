#!/usr/bin/env bash
# Runs every test: unit tests of each crate, then the integration tests that
# drive the real binary, a real dockerd and the docker CLI. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release -p dind-supervisor
export DIND_SUPERVISOR_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/dind-supervisor"
# Each integration test starts its own dockerd; two at a time fit two cores.
cargo test --workspace -- --test-threads=2
