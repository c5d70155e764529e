#!/usr/bin/env bash
# Proxy soak (issue 13, item 4): 64 clients run mixed Docker API traffic
# through the proxy's mutual TLS for DURATION while the supervisor's RSS and
# open fds are sampled; prints a JSON report (reliability/proxy_soak.py says
# what counts as an error) and exits non-zero on any such error, a hung
# client, or fds that do not come back to their baseline.
#
#   bash reliability/proxy-soak.sh            # 30 minutes, the figure in the README
#   DURATION=60 bash reliability/proxy-soak.sh  # the short run scripts/test.sh makes
#
# Settings: DURATION (seconds, default 1800), CLIENTS (64), SAMPLE (seconds
# between samples, 5), DSV_BIN (a built binary; else it is built), REPORT
# (also write the JSON report to this file).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-1800}"
CLIENTS="${CLIENTS:-64}"
SAMPLE="${SAMPLE:-5}"

bash scripts/install-deps.sh curl python3
. bench/engine.sh
P_PROXY=23780 P_DOCKERD=23781 P_HEALTH=23783
trap engine_stop EXIT
engine_start
image=soak/busybox:1
engine_busybox_image "$image"

python3 reliability/proxy_soak.py --addr "127.0.0.1:$P_PROXY" --certs "$C" --pid "$sup_pid" \
  --image "$image" --duration "$DURATION" --clients "$CLIENTS" --sample "$SAMPLE" \
  ${REPORT:+--json "$REPORT"}
