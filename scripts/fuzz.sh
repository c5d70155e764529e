#!/usr/bin/env bash
# Fuzzes the proxy's request parsing and decision (proxy/fuzz): the request
# head through hyper into decide::parse, the strict JSON reader, and the
# whole decision (head + body) under ci-safe, each for FUZZ_SECONDS
# (default 60), one after the other. Exits non-zero when a target crashed;
# the input is in proxy/fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh                 # head, json, decide
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh decide
#
# New inputs are kept in proxy/fuzz/target/corpus/<target> (not committed),
# so later runs start from them; proxy/fuzz/corpus/<target> holds the
# committed seeds. Needs the nightly toolchain (AddressSanitizer).
set -euo pipefail
cd "$(dirname "$0")/../proxy"

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(head json decide decide_gen)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# cargo-fuzz sets RUSTFLAGS, which replaces the workspace's
# `+crt-static` (.cargo/config.toml): AddressSanitizer needs a dynamic
# libc, and the fuzz binaries are never shipped.
failed=()
for t in "${targets[@]}"; do
  work="fuzz/target/corpus/$t"
  mkdir -p "$work"
  echo "== fuzz $t for ${seconds}s"
  if ! cargo +nightly fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=8192 -dict=fuzz/docker.dict -print_final_stats=1; then
    failed+=("$t")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (inputs in proxy/fuzz/artifacts/)" >&2
  exit 1
fi
