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
# Built once per machine (about 5 minutes on two cores); not on PATH in a
# fresh shell otherwise.
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-deny >/dev/null || cargo install --locked --quiet cargo-deny
cargo deny --log-level error check licenses bans sources
