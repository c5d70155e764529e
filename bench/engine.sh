# Sourced by the benchmarks: ONE dockerd under the supervisor, in a private
# temporary directory, reachable three ways with the certificates the
# supervisor mints:
#   - the proxy, mutual TLS on 127.0.0.1:$P_PROXY (and its unix socket
#     $B/proxy.sock);
#   - dockerd's own --tlsverify listener on 127.0.0.1:$P_DOCKERD
#     (DIND_DOCKERD_OWN_LISTEN, with the server certificate);
#   - dockerd's private unix socket $B/docker.sock.
# dockerd runs with --bridge=none --iptables=false and its own data root, exec
# root and pid file, so it stays clear of any other engine on the machine.
#
# The caller sets P_PROXY, P_DOCKERD, P_HEALTH, then calls engine_start and
# has engine_stop run at exit. Sets: bin (the supervisor binary), B (the
# temporary directory), S and C (server and client certificate directories),
# sup_pid (the supervisor, which is also the proxy). DSV_BIN names an
# already-built binary; without it the binary is built here.

engine_binary() {
  if [ -n "${DSV_BIN:-}" ]; then
    bin="$DSV_BIN"
  else
    cargo build --release -p dind-supervisor >&2
    bin="${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/dind-supervisor"
  fi
  [ -x "$bin" ] || { echo "no supervisor binary at $bin" >&2; return 1; }
}

# Every descendant of a pid.
engine_descendants() {
  local p
  for p in $(pgrep -P "$1"); do
    echo "$p"
    engine_descendants "$p"
  done
}

# Stops the supervisor (it stops the containers, then dockerd, inside its own
# deadline), kills whatever of its tree outlives 10 s, unmounts what is left
# under $B and removes $B.
engine_stop() {
  if [ -n "${sup_pid:-}" ] && kill -0 "$sup_pid" 2>/dev/null; then
    kill -TERM "$sup_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$sup_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$sup_pid" 2>/dev/null; then
      echo "supervisor still running after 10 s; killing its tree" >&2
      # Stop it first so the tree cannot change while it is collected.
      kill -STOP "$sup_pid" 2>/dev/null || true
      kill -KILL $(engine_descendants "$sup_pid") "$sup_pid" 2>/dev/null || true
    fi
  fi
  if [ -n "${B:-}" ] && [ -d "$B" ]; then
    grep -o " $B[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$B"
  fi
}

engine_start() {
  engine_binary
  B=$(mktemp -d /tmp/dsvbench.XXXXXX)
  mkdir -p "$B"/{run,exec,data}
  "$bin" certs --tls-certdir "$B/certs" >/dev/null 2>&1
  S="$B/certs/server" C="$B/certs/client"
  DOCKER_TLS_CERTDIR="$B/certs" DIND_DOCKERD_SOCKET="$B/docker.sock" DIND_DATA_ROOT="$B/data" \
  DIND_RUN_DIR="$B/run" DIND_STALE_PID_DIRS="$B/run" DIND_LISTEN="127.0.0.1:$P_PROXY" \
  DIND_HEALTH_ADDR="127.0.0.1:$P_HEALTH" DOCKER_HOST="unix://$B/proxy.sock" DIND_LOG_LEVEL=${DIND_LOG_LEVEL:-warn} \
  DIND_DOCKERD_OWN_LISTEN="127.0.0.1:$P_DOCKERD" \
    "$bin" --exec-root="$B/exec" --pidfile="$B/run/docker.pid" --bridge=none --iptables=false \
    >"$B/supervisor.log" 2>&1 &
  sup_pid=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$P_HEALTH/readyz" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$P_HEALTH/readyz" >/dev/null || { cat "$B/supervisor.log" >&2; return 1; }
}

# dockerd's pid now: the supervisor's child (it changes if dockerd restarts).
engine_dockerd_pid() {
  pgrep -P "$sup_pid" -x dockerd | head -n1
}

# Imports IMAGE: a busybox image made from the machine's static busybox, with
# every applet (no registry here).
engine_busybox_image() {
  local root="$B/busybox-root"
  mkdir -p "$root/bin" "$root/tmp"
  cp "$(command -v busybox)" "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  tar -C "$root" -cf "$B/busybox.tar" .
  DOCKER_CONFIG="$B/docker-config" docker -H "unix://$B/docker.sock" \
    import --change 'CMD ["sh"]' "$B/busybox.tar" "$1" >/dev/null
  rm -rf "$root" "$B/busybox.tar"
}
