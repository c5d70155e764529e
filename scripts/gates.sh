#!/usr/bin/env bash
# The code's gates, before any test: formatting, lints as errors, no import
# cycles between modules, no long function without a reason, and the
# dependency tree's licenses, duplicates and sources (deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
python3 scripts/cycles.py
python3 scripts/long-fns.py >/dev/null || {
  python3 scripts/long-fns.py | grep -v 'reason given' >&2
  echo "functions over 80 lines need a '// long:' reason or a split" >&2
  exit 1
}
cargo clippy --workspace --all-targets --quiet -- -D warnings
# cargo-deny is built once per machine (scripts/test.sh starts that early,
# in the background); run here only when it is already there, or when
# asked with DIND_GATES_DENY=1.
export PATH="$HOME/.cargo/bin:$PATH"
if command -v cargo-deny >/dev/null || [ "${DIND_GATES_DENY:-}" = 1 ]; then
  command -v cargo-deny >/dev/null || cargo install --locked --quiet cargo-deny
  cargo deny --log-level error check licenses bans sources
fi
