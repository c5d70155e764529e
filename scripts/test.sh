#!/usr/bin/env bash
# Runs every test: unit tests of each crate, then the integration tests that
# drive the real binary, a real dockerd and the docker CLI, then (in the same
# run) the end-to-end CI scenarios on a private engine that plays the runner
# host. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
mkdir -p target
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-deny (the dependency gate) is built once per machine, on one core,
# while the rest is set up; it is checked once the test build is done.
if ! command -v cargo-deny >/dev/null; then
  cargo install --locked --quiet -j 1 cargo-deny >target/cargo-deny-install.log 2>&1 &
  deny_pid=$!
  trap 'kill "$deny_pid" 2>/dev/null || true' EXIT
fi
# Formatting, lints, import cycles, long functions: seconds, so first.
bash scripts/gates.sh
# The Python Docker SDK, one of the third-party clients the gate tests drive.
# It downloads some thirty packages on a fresh machine (minutes, mostly
# waiting on the network), so it is made in the background too.
bash scripts/python-sdk.sh >target/python.path 2>target/python.log &
python_pid=$!
trap 'kill "$python_pid" ${deny_pid:-} 2>/dev/null || true' EXIT
cargo build --release -p dind-supervisor
export DIND_SUPERVISOR_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/dind-supervisor"
# The debug build too: its fault hook (X-Dind-Fault) is compiled out of
# release builds, and one test needs it.
cargo build -p dind-supervisor
export DIND_SUPERVISOR_DEBUG_BIN="$PWD/target/x86_64-unknown-linux-gnu/debug/dind-supervisor"

# The test binaries compile while the runner engine and images come up
# (mostly disk and network work), which saves minutes on a fresh machine.
cargo test --workspace --no-run >target/test-build.log 2>&1 &
build_pid=$!

# The runner host of integration/tests/e2e.rs: its own dockerd, data root,
# socket and bridge. Stopped on the way out, whatever happened, so nothing
# keeps running; its data root stays as the image cache.
trap 'kill "$build_pid" "$python_pid" ${deny_pid:-} 2>/dev/null || true; bash scripts/runner-engine.sh stop' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The service image and a job image with the docker client, on the runner.
. scripts/e2e-env.sh

if ! wait "$build_pid"; then
  cat target/test-build.log
  exit 1
fi
if ! wait "$python_pid"; then
  cat target/python.log
  exit 1
fi
DIND_TEST_PYTHON="$(cat target/python.path)"
export DIND_TEST_PYTHON
if [ -n "${deny_pid:-}" ] && ! wait "$deny_pid"; then
  cat target/cargo-deny-install.log
  exit 1
fi
cargo deny --log-level error check licenses bans sources
# Each integration test starts its own dockerd; two at a time fit two cores.
cargo test --workspace --no-fail-fast -- --test-threads=2
# The short proxy soak: one minute of 64 clients through the proxy, failing
# on any error dockerd would not have given and on leaked connections
# (`bash reliability/proxy-soak.sh` runs the README's 30 minutes).
DURATION=60 DSV_BIN="$DIND_SUPERVISOR_BIN" REPORT=target/proxy-soak.json bash reliability/proxy-soak.sh
# The short chaos loop: three rounds of a job's workload with dockerd
# SIGKILLed at a random moment (`bash reliability/chaos.sh` runs 20).
ROUNDS=3 SETTLE=0 DSV_BIN="$DIND_SUPERVISOR_BIN" REPORT=target/chaos.json bash reliability/chaos.sh
