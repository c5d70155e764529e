#!/usr/bin/env bash
# Chaos loop (issue 13, item 2): a job's workload (create, start, logs, exec,
# build, save, rm) runs through the proxy's mutual TLS while dockerd is
# SIGKILLed at a random moment; ROUNDS rounds, each reported as recovered or
# not (with a CI script's ordinary retries) and with the time back to Ready.
# reliability/chaos.py has the details. Exits non-zero when a round does not
# recover or a step hangs.
#
#   bash reliability/chaos.sh                         # 20 rounds, 61 s apart: the README's figures
#   ROUNDS=3 SETTLE=0 bash reliability/chaos.sh       # the short run scripts/test.sh makes
#
# Settings: ROUNDS (20), SETTLE (seconds of Ready between rounds, 61: a
# fresh restart count each round), TIME_LIMIT (seconds, 1800), SEED, DSV_BIN,
# REPORT (a JSON report file).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh curl python3
. bench/engine.sh
P_PROXY=23790 P_DOCKERD=23791 P_HEALTH=23793
trap engine_stop EXIT
engine_start
image=chaos/busybox:1
engine_busybox_image "$image"

python3 reliability/chaos.py --addr "127.0.0.1:$P_PROXY" --health "127.0.0.1:$P_HEALTH" \
  --certs "$C" --image "$image" --work "$B/chaos" --dockerd-pid-cmd "pgrep -P $sup_pid -x dockerd" \
  --rounds "${ROUNDS:-20}" --settle "${SETTLE:-61}" --time-limit "${TIME_LIMIT:-1800}" \
  ${SEED:+--seed "$SEED"} ${REPORT:+--json "$REPORT"}
