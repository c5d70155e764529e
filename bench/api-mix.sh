#!/usr/bin/env bash
# A CI job's Docker API mix, run with the docker CLI through the proxy
# (mutual TLS) and against dockerd's own --tlsverify listener, in front of ONE
# dockerd, in one run, the two targets interleaved round by round (their
# order alternates every round: AB, BA, ...; ORDER=abab keeps AB).
# The job: version, info; a small-context build with the classic builder and
# with BuildKit; run --rm -i cat fed STDIN_KIB via stdin; create, start,
# wait, logs, rm; exec into a running container; image inspect, save, rmi
# and load of the image the job built. Every step is timed with a monotonic
# clock and checked (exit status and output): a failed step stops the run
# with a non-zero exit and is never counted. Prints a markdown table: per
# step the median ms through each target, their ratio and the median of the
# differences within a round; then the job's total (sum of step medians, and
# median of per-round totals).
# Needs root (it starts dockerd). Everything listens on 127.0.0.1 only and
# is stopped at exit. Knobs: ROUNDS (default 10), WARMUP (untimed rounds
# first, default 1), ORDER (alternate or abab), STDIN_KIB (default 8),
# CONTEXT_KIB (build context payload, default 64), STEPS (default all:
# version info build-classic build-buildkit run-i create exec save-load;
# create stands for create start wait logs rm, save-load for image-inspect
# save rmi load), CLI (default: docker on PATH), BUILDKIT_CLI (default
# /usr/bin/docker, Debian's 20.10 client with BuildKit built in: a newer CLI
# needs the buildx plugin for it), DSV_BIN (an already-built supervisor
# binary; without it the binary is built first). The docker CLIs see the
# caller's environment, e.g. DOCKER_API_VERSION=1.41 fixes the API version.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-10}"
WARMUP="${WARMUP:-1}"
ORDER="${ORDER:-alternate}"
STDIN_KIB="${STDIN_KIB:-8}"
CONTEXT_KIB="${CONTEXT_KIB:-64}"
STEPS="${STEPS:-version info build-classic build-buildkit run-i create exec save-load}"

bash scripts/install-deps.sh curl python3
CLI="${CLI:-$(command -v docker)}"
if [ -z "${BUILDKIT_CLI:-}" ]; then
  BUILDKIT_CLI=/usr/bin/docker
  [ -x "$BUILDKIT_CLI" ] || BUILDKIT_CLI="$CLI"
fi
. bench/engine.sh
P_PROXY=23770 P_DOCKERD=23771 P_HEALTH=23773
trap engine_stop EXIT
engine_start

image=bench/busybox:1
engine_busybox_image "$image"

version() { # CLI [Client|Server] -> that side's version
  DOCKER_CONFIG="$B/docker-config" "$1" -H "unix://$B/docker.sock" version --format "{{.${2:-Client}.Version}}"
}
note="Docker CLI $CLI $(version "$CLI"); BuildKit builds with $BUILDKIT_CLI $(version "$BUILDKIT_CLI")"
note+="; dockerd $(version "$CLI" Server); $STDIN_KIB KiB through run -i, $CONTEXT_KIB KiB build context."

python3 bench/api_mix.py --work "$B/mix" --certs "$C" --image "$image" \
  --target "proxy=127.0.0.1:$P_PROXY" --label "proxy=dind-supervisor proxy" \
  --target "dockerd=127.0.0.1:$P_DOCKERD" --label "dockerd=dockerd --tlsverify" \
  --cli "$CLI" --buildkit-cli "$BUILDKIT_CLI" --rounds "$ROUNDS" --warmup "$WARMUP" \
  --order "$ORDER" --stdin-kib "$STDIN_KIB" --context-kib "$CONTEXT_KIB" --steps "$STEPS"
echo "$note"
