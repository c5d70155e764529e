#!/usr/bin/env bash
# Fuzzes the proxy's request parsing and decision (proxy/fuzz), each target
# for FUZZ_SECONDS (default 60), one after the other, one job each:
#   head        raw bytes through hyper into decide::parse and both policies
#   json        the strict JSON reader against serde_json
#   decide      a head and a whole body through the decision under ci-safe
#   decide_gen  the same, on requests built by a grammar of the Docker API
# Exits non-zero when a target crashed or an oracle failed; the input is in
# proxy/fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh                 # all four
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh decide_gen
#
# New inputs are kept in proxy/fuzz/target/corpus/<target> (not committed),
# so later runs start from them; proxy/fuzz/corpus/<target> holds the
# committed seeds. Needs the nightly toolchain (AddressSanitizer). Not part
# of scripts/test.sh: the nightly instrumented build alone takes minutes.
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
