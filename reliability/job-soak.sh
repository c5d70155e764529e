#!/usr/bin/env bash
# Job soak (issue 13, item 3): N GitLab docker-executor jobs in a row on the
# runner engine, each a whole service life: `docker run` of the service, the
# runner's TCP wait, `docker info` (first try), build, run, `docker stop`.
# Prints first-try failures, stop exit codes and times, and the service's
# time to Ready (p50, p99, max); exits non-zero on any failed job or any stop
# that is not 0 inside 10 s. The scenario is integration/tests/e2e.rs
# `s_job_soak`; scripts/test.sh runs it with its default of 5 jobs.
#
#   bash reliability/job-soak.sh          # 500 jobs: the README's figure
#   JOBS=50 bash reliability/job-soak.sh
#
# DSV_BIN names an already-built release binary; else it is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-deps.sh
if [ -z "${DSV_BIN:-}" ]; then
  cargo build --release -p dind-supervisor
  DSV_BIN="$PWD/target/x86_64-unknown-linux-gnu/release/dind-supervisor"
fi
export DIND_SUPERVISOR_BIN="$DSV_BIN"
# Images of its own: a run of hours must not pick up another run's binary.
# Their tags go at the end (the layers stay, shared with the default tags).
tag="soak-$$"
trap 'docker -H "${DIND_E2E_DOCKER_HOST:-}" rmi "dind-supervisor:$tag" "dind-supervisor-job:$tag" >/dev/null 2>&1 || true
      bash scripts/runner-engine.sh stop' EXIT
E2E_TAG="$tag" . scripts/e2e-env.sh
# The whole output, failures included, goes to target/job-soak.log.
DIND_SOAK_JOBS="${JOBS:-500}" cargo test -p integration --test e2e s_job_soak -- --nocapture 2>&1 |
  tee target/job-soak.log | grep -E '^s[: ]|panicked|test result'
