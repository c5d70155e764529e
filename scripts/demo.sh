#!/usr/bin/env bash
# The main job on this machine: the supervisor mints fresh certificates and
# runs dockerd under supervision, in a private directory so it does not
# collide with an engine the host may run. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release -p dind-supervisor
bin="$PWD/target/x86_64-unknown-linux-gnu/release/dind-supervisor"

state="${DIND_DEMO_DIR:-/var/tmp/dind-supervisor-demo}"
mkdir -p "$state"/{run,exec,data}
rm -rf "$state/certs"

port="${DIND_DEMO_PORT:-12376}"
health="${DIND_DEMO_HEALTH_PORT:-12378}"
cat <<EOT
dind-supervisor demo: state in $state
When the log says "listening", from another shell connect as a CI job would,
through the mutual-TLS proxy:
  export DOCKER_HOST=tcp://127.0.0.1:$port DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=$state/certs/client
  $bin wait && docker info
or through the unix socket the proxy serves:
  docker -H unix://$state/shared/docker.sock version
Health: curl http://127.0.0.1:$health/readyz (also /livez /metrics /status)
Ctrl-C stops dockerd and exits.
EOT

# DOCKER_HOST names the socket the proxy serves: set it to our own path so
# one exported in the caller's shell can never point at the host engine's.
export DOCKER_HOST="unix://$state/shared/docker.sock"
export DIND_LISTEN="127.0.0.1:$port"
export DIND_HEALTH_ADDR="127.0.0.1:$health"
export DOCKER_TLS_CERTDIR="$state/certs"
export DIND_DOCKERD_SOCKET="$state/docker.sock"
export DIND_DATA_ROOT="$state/data"
export DIND_RUN_DIR="$state/run"
export DIND_STALE_PID_DIRS="$state/run"
exec "$bin" --exec-root="$state/exec" --pidfile="$state/run/docker.pid" "$@"
