#!/usr/bin/env bash
# A private Docker engine that plays the CI runner host for the end-to-end
# tests (integration/tests/e2e.rs): service containers from our images and
# job containers run on it, as on a GitLab Runner host.
#
#   scripts/runner-engine.sh start         start it (a no-op when it runs)
#   scripts/runner-engine.sh stop          stop it and leave nothing behind (a no-op when stopped)
#   scripts/runner-engine.sh stop --force  stop it even while another caller still uses it
#   scripts/runner-engine.sh env           print `export DOCKER_HOST=...` for it
#   scripts/runner-engine.sh status        exit 0 when it answers
#
# Two test runs on one machine share the engine: `start` takes a lease for
# the calling process (its parent, e.g. scripts/test.sh), `stop` returns it
# and stops the engine only when no live caller holds one, so one run's
# clean-up never pulls the engine from under another's tests.
#
# It shares nothing with an engine the machine may already run: its own data
# root, exec root, pidfile, socket, daemon.json and its own bridge (never
# docker0) with a private address, plus a private pool for user-defined
# networks. iptables stays on: the embedded DNS that lets containers on a
# user-defined network find each other by alias, and NAT to the outside, both
# need it. The data root survives `stop` (it is the image and build cache);
# containers, networks and volumes do not.
#
# Settings (environment):
#   DIND_RUNNER_ROOT    data root and log   (default /var/lib/dind-supervisor-runner)
#   DIND_RUNNER_RUN     socket, pidfile, exec root (default /run/dind-supervisor-runner)
#   DIND_RUNNER_BRIDGE  bridge name         (default dsvrun0)
#   DIND_RUNNER_CIDR    bridge address      (default 10.213.0.1/24)
#   DIND_RUNNER_POOL    pool for user-defined networks, /24 each (default 10.213.128.0/17)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prog="runner-engine.sh"

root="${DIND_RUNNER_ROOT:-/var/lib/dind-supervisor-runner}"
run="${DIND_RUNNER_RUN:-/run/dind-supervisor-runner}"
bridge="${DIND_RUNNER_BRIDGE:-dsvrun0}"
cidr="${DIND_RUNNER_CIDR:-10.213.0.1/24}"
pool="${DIND_RUNNER_POOL:-10.213.128.0/17}"

data="$root/data"
log="$root/dockerd.log"
exec_root="$run/exec"
pidfile="$run/docker.pid"
leases="$root/leases"
lock="$root/lock"
sock="$run/docker.sock"
host="unix://$sock"

die() {
  echo "$prog: error: $*" >&2
  exit 1
}

note() {
  echo "$prog: $*" >&2
}

# The pid in the pidfile when it is a live dockerd; nothing otherwise.
engine_pid() {
  local pid
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = dockerd ] || return 1
  echo "$pid"
}

answers() {
  [ -S "$sock" ] && DOCKER_HOST="$host" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

# Processes whose command line names our exec root: the containerd dockerd
# started for us and its shims. Never matched by name alone, so another
# engine's containerd is left alone. The bracket keeps grep from matching
# its own command line.
our_processes() {
  grep -lsa -- "[${exec_root:0:1}]${exec_root:1}" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true
}

# Processes in the cgroup of one of our containers (any cgroup driver, v1 or
# v2: the container id is in the path). Killing a container's init ends its
# pid namespace with everything in it, nested engines' containers included.
# Only needed when dockerd died and left its containers running.
container_processes() {
  local ids
  ids="$(ls "$data/containers" 2>/dev/null | grep -E '^[0-9a-f]{64}$' || true)"
  [ -n "$ids" ] || return 0
  grep -lsF -f <(echo "$ids") /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 || true
}

unmount_under() {
  local dir="$1" mnt
  # /proc/self/mounts escapes spaces as \040; our directories have none.
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts \
    | sort -r | while read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    done
}

# Deletes the iptables rules dockerd left for our bridge and address ranges
# (it keeps them on exit). Other engines' rules are not touched.
drop_iptables_rules() {
  command -v iptables >/dev/null || return 0
  local table rule net="${cidr%.*}.0/${cidr#*/}"
  for table in nat filter; do
    iptables -w -t "$table" -S 2>/dev/null \
      | { grep -E -- "^-A .*(-[io] $bridge( |\$)| $net )" || true; } \
      | while read -r rule; do
        # shellcheck disable=SC2086 # a rule is a list of words
        iptables -w -t "$table" ${rule/-A/-D} 2>/dev/null || true
      done
  done
}

# The start time of process $1 (field 22 of its stat, after the command
# name, which may hold spaces): a pid and its start time name one process.
started_at() {
  sed -n 's/^.*) //p' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# A lease for the process that called us.
take_lease() {
  mkdir -p "$leases"
  started_at "$PPID" >"$leases/$PPID"
}

# The callers whose leases are still live; dead callers' leases are dropped.
live_leases() {
  local f p
  for f in "$leases"/*; do
    [ -f "$f" ] || continue
    p="${f##*/}"
    if [ -n "$(started_at "$p")" ] && [ "$(started_at "$p")" = "$(cat "$f")" ]; then
      echo "$p"
    else
      rm -f "$f"
    fi
  done
}

start() {
  take_lease
  if engine_pid >/dev/null && answers; then
    note "already running ($host)"
    return 0
  fi
  # A crashed or half-stopped engine: clear its leftovers first.
  halt quiet

  bash "$here/install-deps.sh" iproute2
  command -v ip >/dev/null || die "ip (iproute2) is missing"

  # dockerd's NAT, port publishing and the embedded DNS of user-defined
  # networks (aliases) are iptables rules: without a working iptables the
  # scenarios cannot run, so say so instead of starting a crippled engine.
  iptables -w -t nat -S >/dev/null 2>&1 \
    || die "iptables does not work here ($(iptables -w -t nat -S 2>&1 | head -n 1)); the runner engine needs it for NAT and network aliases"

  # Our bridge, never docker0: an engine the machine runs may own docker0.
  local other
  other="$(ip -4 route show to match "${cidr%/*}" | grep -v "dev $bridge " | grep -v '^default' || true)"
  [ -z "$other" ] || die "$cidr overlaps a route of this machine ($other); set DIND_RUNNER_CIDR"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
  fi
  ip -4 addr show dev "$bridge" | grep -qF " $cidr " || ip addr add "$cidr" dev "$bridge"
  ip link set "$bridge" up

  # Containers get the default route's MTU when it is below 1500, or packets
  # to the Debian mirror may hang.
  local mtu=1500 dev
  dev="$(ip -4 route show default | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')"
  if [ -n "$dev" ]; then
    mtu="$(cat "/sys/class/net/$dev/mtu" 2>/dev/null || echo 1500)"
    [ "$mtu" -lt 1500 ] || mtu=1500
  fi

  mkdir -p "$data" "$exec_root"
  # Not /etc/docker/daemon.json: the machine's own engine settings stay out.
  echo '{}' >"$run/daemon.json"
  # The log of this start only; the one before is kept beside it.
  [ ! -f "$log" ] || mv -f "$log" "$log.1"
  note "starting dockerd on $host (bridge $bridge $cidr, pool $pool, mtu $mtu; log $log)"
  local t0
  t0="$(date +%s%N)"
  # setsid: a Ctrl-C at the terminal reaches the caller, whose trap stops us
  # in order, not dockerd half-way through a container start.
  setsid dockerd \
    --config-file "$run/daemon.json" \
    --data-root "$data" \
    --exec-root "$exec_root" \
    --pidfile "$pidfile" \
    --host "$host" \
    --bridge "$bridge" \
    --default-address-pool "base=$pool,size=24" \
    --iptables=true \
    --ip-masq=true \
    --mtu "$mtu" \
    >>"$log" 2>&1 </dev/null {lock_fd}>&- &
  local pid=$! i
  for i in $(seq 1 600); do
    if answers; then
      note "ready after $((($(date +%s%N) - t0) / 1000000)) ms: docker $(DOCKER_HOST="$host" docker version --format '{{.Server.Version}}')"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "dockerd exited during start (see $log)"; }
    sleep 0.1
  done
  tail -n 30 "$log" >&2
  die "dockerd did not answer on $host within 60 s (see $log)"
}

stop() {
  local force="${1:-}" others
  rm -f "$leases/$PPID"
  others="$(live_leases | tr '\n' ' ')"
  if [ -n "$others" ] && [ "$force" != --force ]; then
    note "still used by pid ${others% }: left running (stop --force stops it anyway)"
    return 0
  fi
  rm -rf "$leases"
  halt
}

# Stops the engine and removes everything of it but the data root.
halt() {
  local quiet="${1:-}" pid i p
  pid="$(engine_pid)" || pid=""
  if [ -n "$pid" ]; then
    [ -n "$quiet" ] || note "stopping dockerd (pid $pid)"
    if answers; then
      # Whatever a failed test left: containers (with their anonymous
      # volumes), networks, volumes. The images stay as the build cache.
      local ids
      ids="$(DOCKER_HOST="$host" docker ps -aq 2>/dev/null || true)"
      # shellcheck disable=SC2086 # a list of ids
      [ -z "$ids" ] || DOCKER_HOST="$host" timeout 60 docker rm -fv $ids >/dev/null 2>&1 || true
      DOCKER_HOST="$host" timeout 30 docker network prune -f >/dev/null 2>&1 || true
      DOCKER_HOST="$host" timeout 30 docker volume prune -f >/dev/null 2>&1 || true
      # Earlier builds of our images; the tagged ones and their layers stay.
      DOCKER_HOST="$host" timeout 60 docker image prune -f >/dev/null 2>&1 || true
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      note "dockerd (pid $pid) still running after 15 s: killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # containerd and its shims exit with dockerd, and the containers were
  # removed while it answered. After a crash they may still run: kill the
  # containers first (their shims would restart nothing), then the rest.
  for i in $(seq 1 50); do
    [ -n "$(our_processes)$(container_processes)" ] || break
    if [ "$i" -ge 30 ] || [ -z "$pid" ]; then
      for p in $(container_processes) $(our_processes); do kill -KILL "$p" 2>/dev/null || true; done
    fi
    sleep 0.1
  done
  p="$(our_processes) $(container_processes)"
  [ -z "${p// /}" ] || note "warning: still running: $(echo $p)"

  unmount_under "$data"
  unmount_under "$run"
  drop_iptables_rules
  if ip link show "$bridge" >/dev/null 2>&1; then
    ip link delete "$bridge" || note "warning: could not delete the bridge $bridge"
  fi
  # The runtime state only; the data root keeps the image cache.
  rm -rf --one-file-system "$run"
  if [ -n "$pid" ] && [ -z "$quiet" ]; then note "stopped"; fi
  return 0
}

[ "$(id -u)" = 0 ] || die "needs root (it runs dockerd)"
case "${1:-}" in
  start|stop)
    # One start or stop at a time; the lock outlives $run, which stop removes.
    mkdir -p "$root"
    exec {lock_fd}>"$lock"
    flock "$lock_fd"
    "$@"
    ;;
  env) echo "export DOCKER_HOST=$host" ;;
  status) answers ;;
  *) echo "usage: $prog start|stop [--force]|env|status" >&2; exit 2 ;;
esac
