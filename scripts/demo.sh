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

cat <<EOT
dind-supervisor demo: state in $state
When the log says "engine ready", from another shell:
  docker -H unix://$state/docker.sock info
  docker -H unix://$state/docker.sock run --rm <image> ...
Client certificates (for the TLS endpoint): $state/certs/client/{ca,cert,key}.pem
Ctrl-C stops dockerd and exits.
EOT

export DOCKER_TLS_CERTDIR="$state/certs"
export DIND_DOCKERD_SOCKET="$state/docker.sock"
export DIND_DATA_ROOT="$state/data"
export DIND_RUN_DIR="$state/run"
export DIND_STALE_PID_DIRS="$state/run"
exec "$bin" --exec-root="$state/exec" --pidfile="$state/run/docker.pid" "$@"
