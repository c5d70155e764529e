#!/usr/bin/env bash
# Measures the proxy against HAProxy (mutual TLS in front of dockerd's unix
# socket) and dockerd's own --tlsverify TCP listener, all in front of ONE
# dockerd, on this machine, in one run:
#   1. keep-alive request rate on GET /_ping (which the proxy answers from
#      dockerd's last answer), GET /vX/_ping (always forwarded) and
#      GET /version (oha);
#   2. median latency added over a direct call on dockerd's unix socket,
#      for both pings;
#   3. CPU time per forwarded request (GET /vX/_ping) of the proxy and of
#      HAProxy, and of dockerd behind each (and behind its own listener),
#      from /proc/PID/stat;
#   4. streaming 1 GiB (docker save of a 1 GiB image) vs dockerd's own TLS;
#   5. the supervisor's RSS while holding 1,000 idle mutual-TLS connections.
# Needs root (it starts dockerd). Everything listens on 127.0.0.1 only and
# is stopped at exit. Knobs: DURATION (per load run, default 8s), CONNS
# (default 32), ROUNDS (default 3), CPU_N (requests per CPU run, 20000),
# BIG_MIB (default 1024), IDLE (1000), SECTIONS (default all: rate latency
# cpu stream idle), DSV_BIN (an already-built supervisor binary; without it
# the binary is built first).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-8s}"
CONNS="${CONNS:-32}"
ROUNDS="${ROUNDS:-3}"
BIG_MIB="${BIG_MIB:-1024}"
IDLE="${IDLE:-1000}"
CPU_N="${CPU_N:-20000}"
# Which parts to run (all by default): rate latency cpu stream idle.
SECTIONS="${SECTIONS:-rate latency cpu stream idle}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }

bash scripts/install-deps.sh haproxy curl python3
if ! command -v oha >/dev/null; then
  echo "installing oha (load generator) from crates.io" >&2
  cargo install oha --locked >&2
  export PATH="$HOME/.cargo/bin:$PATH"
fi
. bench/engine.sh
P_PROXY=23760 P_DOCKERD=23761 P_HAPROXY=23762 P_HEALTH=23763
ha_pid=""
cleanup() {
  [ -n "$ha_pid" ] && kill "$ha_pid" 2>/dev/null || true
  engine_stop
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
# One dockerd: private socket for the proxy and HAProxy, plus its own TLS
# listener, all with the certificate set the supervisor mints.
engine_start

cat "$S/cert.pem" "$S/key.pem" >"$B/haproxy.pem"
cat >"$B/haproxy.cfg" <<EOT
global
  maxconn 4000
  nbthread 2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend docker
  bind 127.0.0.1:$P_HAPROXY ssl crt $B/haproxy.pem ca-file $S/ca.pem verify required alpn http/1.1
  default_backend dockerd
backend dockerd
  http-reuse always
  server dockerd unix@$B/docker.sock
EOT
haproxy -f "$B/haproxy.cfg" >"$B/haproxy.log" 2>&1 &
ha_pid=$!
sleep 1
kill -0 "$ha_pid" 2>/dev/null || { echo "haproxy did not start:" >&2; cat "$B/haproxy.log" >&2; exit 1; }

# The proxy answers the unversioned /_ping from dockerd's last answer (up to
# 1 s old, DIND_PING_CACHE); a versioned ping is always forwarded, so it
# measures the pass-through path on the same tiny request.
api=$(curl -s -o /dev/null -D - --unix-socket "$B/docker.sock" http://docker/_ping | tr -d '\r' | awk -F': ' 'tolower($1)=="api-version" {print $2}')
vping="/v$api/_ping"

tls=(--cacert "$C/ca.pem" --cert "$C/cert.pem" --key "$C/key.pem")
rps() { # port path -> successful (200) requests per second; errors are reported
  oha --no-tui --output-format json -z "$DURATION" -c "$CONNS" "${tls[@]}" "https://127.0.0.1:$1$2" |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
codes = d["statusCodeDistribution"]
ok = codes.get("200", 0)
bad = {k: v for k, v in codes.items() if k != "200"}
# Requests cut off when the run ends are not failures.
errors = {k: v for k, v in d["errorDistribution"].items() if "aborted due to deadline" not in k}
if bad or errors:
    print(f"port '"$1"': non-200 answers {bad}, errors {errors}", file=sys.stderr)
total = sum(codes.values())
print(round(d["summary"]["requestsPerSec"] * ok / total) if total else 0)'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

if want rate; then
echo "## Keep-alive request rate over mutual TLS (oha, $CONNS connections, $DURATION x $ROUNDS rounds, median)"
echo
echo "| endpoint | dind-supervisor proxy | HAProxy 2.6 | dockerd --tlsverify | proxy / HAProxy | proxy / dockerd |"
echo "|---|---|---|---|---|---|"
for path in /_ping "$vping" /version; do
  declare -A runs=()
  for _ in $(seq "$ROUNDS"); do
    for target in proxy:$P_PROXY haproxy:$P_HAPROXY dockerd:$P_DOCKERD; do
      runs[${target%%:*}]+="$(rps "${target##*:}" "$path") "
    done
  done
  p=$(tr ' ' '\n' <<<"${runs[proxy]}" | grep . | median)
  h=$(tr ' ' '\n' <<<"${runs[haproxy]}" | grep . | median)
  d=$(tr ' ' '\n' <<<"${runs[dockerd]}" | grep . | median)
  echo "| GET $path | $p | $h | $d | $(python3 -c "print(f'{$p/max($h,1):.2f}')") | $(python3 -c "print(f'{$p/max($d,1):.2f}')") |"
done
echo
fi

lat() { # oha args... -> median latency in microseconds (median of ROUNDS runs)
  for _ in $(seq "$ROUNDS"); do
    oha --no-tui --output-format json -n 3000 -c 1 "$@" |
      python3 -c 'import json,sys; print(round(json.load(sys.stdin)["latencyPercentiles"]["p50"]*1e6))'
  done | median
}
if want latency; then
echo "## Median latency, one connection, keep-alive (oha -c 1 -n 3000, median of $ROUNDS runs)"
echo
echo "| path | GET /_ping p50 (µs) | added over direct | GET $vping p50 (µs, forwarded) | added over direct |"
echo "|---|---|---|---|---|"
row() { # label base-URL oha-args...: one table row for both pings
  local a b
  a=$(lat "${@:3}" "$2/_ping"); b=$(lat "${@:3}" "$2$vping")
  if [ -z "${direct_a:-}" ]; then direct_a=$a direct_b=$b; fi
  echo "| $1 | $a | $((a - direct_a)) µs | $b | $((b - direct_b)) µs |"
}
row "dockerd unix socket, direct" http://docker --unix-socket "$B/docker.sock"
row "proxy unix socket" http://docker --unix-socket "$B/proxy.sock"
row "proxy mutual TLS" "https://127.0.0.1:$P_PROXY" "${tls[@]}"
row "dockerd --tlsverify" "https://127.0.0.1:$P_DOCKERD" "${tls[@]}"
echo
fi

# CPU time of a process so far, in clock ticks: utime + stime, fields 14 and
# 15 of /proc/PID/stat, summed over all its threads. The fields are counted
# after the ")" that closes the command name, which may hold spaces.
ticks() {
  local stat
  read -r stat <"/proc/$1/stat"
  set -- ${stat##*") "}
  echo $((${12} + ${13}))
}
# One run of CPU_N forwarded pings at CONNS connections through the front on
# PORT (pid FRONT, or - for dockerd's own listener); sets front_us and
# dockerd_us, the CPU microseconds each process spent per request. Only a
# run where every answer is a 200 counts; anything else stops the script.
cpu_run() {
  local port=$1 front=$2 d f0=0 f1=0 d0 d1
  d=$(engine_dockerd_pid)
  [ -n "$d" ] || { echo "no dockerd under the supervisor" >&2; exit 1; }
  [ "$front" = - ] || f0=$(ticks "$front")
  d0=$(ticks "$d")
  oha --no-tui --output-format json -n "$CPU_N" -c "$CONNS" "${tls[@]}" "https://127.0.0.1:$port$vping" |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
codes, errors = d["statusCodeDistribution"], d["errorDistribution"]
ok = codes.get("200", 0)
if ok != '"$CPU_N"' or errors:
    sys.exit(f"port '"$port"': {ok} of '"$CPU_N"' answers were 200; all {codes}, errors {errors}")'
  [ "$front" = - ] || f1=$(ticks "$front")
  d1=$(ticks "$d")
  [ "$(engine_dockerd_pid)" = "$d" ] || { echo "dockerd restarted during the CPU run" >&2; exit 1; }
  front_us=$(python3 -c "print(f'{($f1 - $f0) / $hz * 1e6 / $CPU_N:.1f}')")
  dockerd_us=$(python3 -c "print(f'{($d1 - $d0) / $hz * 1e6 / $CPU_N:.1f}')")
}
median_f() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
if want cpu; then
hz=$(getconf CLK_TCK)
declare -A cpu=()
fronts=("proxy:$P_PROXY:$sup_pid" "haproxy:$P_HAPROXY:$ha_pid" "dockerd:$P_DOCKERD:-")
for r in $(seq 0 $((ROUNDS - 1))); do
  # Each round starts with the next front, so drift hits all three alike.
  for i in 0 1 2; do
    IFS=: read -r name port front <<<"${fronts[$(((r + i) % 3))]}"
    cpu_run "$port" "$front"
    cpu[$name.front]+="$front_us "
    cpu[$name.dockerd]+="$dockerd_us "
    cpu[$name.sum]+="$(python3 -c "print($front_us + $dockerd_us)") "
  done
done
cmed() { tr ' ' '\n' <<<"${cpu[$1]}" | grep . | median_f; }
ratio() { python3 -c "print(f'{$1/max($2, 1e-9):.2f}')"; }
echo "## CPU per forwarded request over mutual TLS (oha -n $CPU_N -c $CONNS, GET $vping, median of $ROUNDS runs)"
echo
echo "| path | TLS front µs/request | dockerd µs/request | both µs/request |"
echo "|---|---|---|---|"
echo "| dind-supervisor proxy | $(cmed proxy.front) | $(cmed proxy.dockerd) | $(cmed proxy.sum) |"
echo "| HAProxy 2.6 | $(cmed haproxy.front) | $(cmed haproxy.dockerd) | $(cmed haproxy.sum) |"
echo "| dockerd --tlsverify | — | $(cmed dockerd.dockerd) | $(cmed dockerd.sum) |"
echo "| proxy / HAProxy | $(ratio "$(cmed proxy.front)" "$(cmed haproxy.front)") | $(ratio "$(cmed proxy.dockerd)" "$(cmed haproxy.dockerd)") | $(ratio "$(cmed proxy.sum)" "$(cmed haproxy.sum)") |"
echo
echo "utime + stime from /proc/PID/stat (1/$hz s ticks) before and after each run, all threads; each run includes the $CONNS TLS handshakes."
echo
fi

if want stream; then
# A 1 GiB image: one layer holding BIG_MIB of random data.
mkdir -p "$B/big"
head -c "$((BIG_MIB * 1024 * 1024))" /dev/urandom >"$B/big/blob"
tar -C "$B/big" -cf - blob | docker -H "unix://$B/docker.sock" import - bench/big:1 >/dev/null
rm -f "$B/big/blob"
save_mbps() { # port -> MB/s of GET /images/bench/big:1/get
  curl -sf "${tls[@]}" -o /dev/null -w '%{speed_download}' "https://127.0.0.1:$1/images/bench/big:1/get" |
    python3 -c 'import sys; print(round(float(sys.stdin.read())/1e6))'
}
ps=() ds=()
for _ in 1 2 3; do ps+=("$(save_mbps $P_PROXY)"); ds+=("$(save_mbps $P_DOCKERD)"); done
p=$(printf '%s\n' "${ps[@]}" | median) d=$(printf '%s\n' "${ds[@]}" | median)
echo "## Streaming docker save of a $BIG_MIB MiB image over mutual TLS (curl, median of 3)"
echo
echo "| path | MB/s |"
echo "|---|---|"
echo "| proxy | $p |"
echo "| dockerd --tlsverify | $d |"
echo "| proxy / dockerd | $(python3 -c "print(f'{$p/$d:.2f}')") |"
echo
fi

if want idle; then
read -r n before held took < <(python3 bench/idle_conns.py 127.0.0.1 "$P_PROXY" "$C" "$sup_pid" "$IDLE")
echo "## Idle connections"
echo
echo "$n idle mutual-TLS keep-alive connections (opened in ${took}s): supervisor RSS $((before / 1024)) MiB before, $((held / 1024)) MiB while holding them."
fi
