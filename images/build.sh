#!/usr/bin/env bash
# Builds the dind-supervisor images (images/<target>/Dockerfile) with the
# static release binary, on any docker engine, with or without a registry.
# Run with --help for the interface.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
prog="$(basename "$0")"

default_base=debian:bookworm-slim
path_env='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

usage() {
  cat <<EOF
Usage: $prog [OPTIONS] [TARGET...] [-- DOCKER_BUILD_ARGS...]

Builds dind-supervisor images on a docker engine. On success prints the tag
of each built image on stdout, one per line; progress goes to stderr.

Targets (default: debian):
  debian   the service on $default_base with Debian's docker.io
           (tag dind-supervisor:debian)
  dind     the drop-in for docker:<version>-dind; needs that image from a
           registry or from 'docker load' (tag dind-supervisor:<version>-dind)
  job      a test-job image: $default_base with the docker client only
           (tag dind-supervisor-job:latest)
  base     only make sure the Debian base image is on the engine (prints it)

Options:
  -t, --tag TAG            tag for the built image (a single target only)
  -H, --host URL           engine to build on, e.g. unix:///run/x.sock
                           (default: \$DOCKER_HOST, else the docker CLI's
                           default); --docker-host is the same option
      --offline            do not try to pull $default_base: create it
                           with debootstrap and 'docker import' instead
      --base-image IMAGE   base of debian and job (default $default_base;
                           only the default can be created offline)
      --docker-version V   docker:V-dind for the dind target (default 28)
      --binary PATH        use this static dind-supervisor instead of running
                           cargo build (default: \$DIND_SUPERVISOR_BIN)
      --mirror URL         Debian mirror for debootstrap (default:
                           \$DEBIAN_MIRROR, else this machine's apt sources)
      --cache-dir DIR      keeps the debootstrap tarball (default:
                           \$DIND_IMAGE_CACHE, else
                           \${XDG_CACHE_HOME:-/var/cache}/dind-supervisor)
      --no-host-network    run RUN steps on the engine's default build
                           network instead of --network=host
      --pull-timeout SECS  give up a pull after SECS (default 120)
  -h, --help               this text
  --                       the rest goes to docker build (e.g. --no-cache)

The base image: used as is when the engine has it; otherwise pulled; when
that fails (or with --offline) it is created from
'debootstrap --variant=minbase bookworm' against the Debian mirror this
machine's apt uses, and imported as $default_base. The debootstrap tarball
is cached (bookworm-minbase.tar in the cache dir), so a fresh engine imports it
without running debootstrap again; delete it to refresh. Creating it needs
root and debootstrap.

The binary: 'cargo build --release -p dind-supervisor' from the repository
root (a no-op when it is up to date), unless --binary or DIND_SUPERVISOR_BIN
names one. It must be statically linked: docker:dind is musl-based.

Examples:
  $prog debian --host unix:///tmp/engine/docker.sock --offline
  $prog dind --docker-version 27 --tag registry.example/dind-supervisor:27-dind
  $prog debian job -- --no-cache
EOF
}

die() {
  echo "$prog: error: $*" >&2
  exit 1
}

note() {
  echo "$prog: $*" >&2
}

# --- arguments -------------------------------------------------------------

targets=()
tag=""
offline=0
base_image="$default_base"
docker_version=28
binary="${DIND_SUPERVISOR_BIN:-}"
mirror="${DEBIAN_MIRROR:-}"
cache_dir="${DIND_IMAGE_CACHE:-${XDG_CACHE_HOME:-/var/cache}/dind-supervisor}"
host_network=1
pull_timeout=120
build_args=()

need_value() {
  [ "$#" -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    -t|--tag) need_value "$@"; tag="$2"; shift 2 ;;
    -H|--host|--docker-host) need_value "$@"; export DOCKER_HOST="$2"; shift 2 ;;
    --offline) offline=1; shift ;;
    --base-image) need_value "$@"; base_image="$2"; shift 2 ;;
    --docker-version) need_value "$@"; docker_version="$2"; shift 2 ;;
    --binary) need_value "$@"; binary="$2"; shift 2 ;;
    --mirror) need_value "$@"; mirror="$2"; shift 2 ;;
    --cache-dir) need_value "$@"; cache_dir="$2"; shift 2 ;;
    --no-host-network) host_network=0; shift ;;
    --pull-timeout) need_value "$@"; pull_timeout="$2"; shift 2 ;;
    --tag=*|--host=*|--docker-host=*|--base-image=*|--docker-version=*|--binary=*|--mirror=*|--cache-dir=*|--pull-timeout=*)
      set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
    --) shift; build_args=("$@"); break ;;
    debian|dind|job|base) targets+=("$1"); shift ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) die "unknown target $1: expected debian, dind, job or base (see --help)" ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(debian)
if [ -n "$tag" ] && [ "${#targets[@]}" -ne 1 ]; then
  die "--tag needs exactly one target, got: ${targets[*]}"
fi
[[ "$pull_timeout" =~ ^[0-9]+$ ]] || die "--pull-timeout takes whole seconds, got $pull_timeout"

command -v docker >/dev/null || die "the docker CLI is not installed (Debian: apt-get install docker.io)"

# --- cleanup ---------------------------------------------------------------

# Temporary directories to remove on exit. A debootstrap rootfs can still
# have /proc, /sys or /dev bind mounts when debootstrap failed half-way:
# those are unmounted first, and removal never crosses a file system.
scratch=()

unmount_under() {
  local dir="$1" mnt
  # /proc/self/mounts escapes spaces as \040; our directories have none.
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts \
    | sort -r | while read -r mnt; do
      umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    done
}

cleanup() {
  local dir
  for dir in "${scratch[@]}"; do
    [ -d "$dir" ] || continue
    unmount_under "$dir"
    rm -rf --one-file-system "$dir"
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the engine ------------------------------------------------------------

engine="${DOCKER_HOST:-the default engine}"
server_version="$(docker version --format '{{.Server.Version}}' 2>/dev/null)" \
  || die "cannot reach the docker engine ($engine); start one or pass --host"
note "engine: $engine (docker $server_version)"

image_present() {
  docker image inspect "$1" >/dev/null 2>&1
}

try_pull() {
  note "pulling $1"
  timeout "$pull_timeout" docker pull "$1" >&2
}

# --- the Debian base, offline ----------------------------------------------

# Prints the first URI of an enabled `deb` source for suite $1 in this
# machine's apt configuration: one-line sources.list(5) files and deb822
# *.sources files, in the order apt reads them.
apt_uri() {
  local suite="$1" f files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  for f in "${files[@]}"; do
    case "$f" in
      *.sources)
        awk -v want="$suite" '
          function has(list, word,   n, i, w) {
            n = split(list, w, /[ \t]+/)
            for (i = 1; i <= n; i++) if (w[i] == word) return 1
            return 0
          }
          function flush(   n, u) {
            if (has(types, "deb") && has(suites, want) && tolower(enabled) != "no") {
              n = split(uris, u, /[ \t]+/)
              if (u[1] == "" && n > 1) { print u[2] } else if (u[1] != "") { print u[1] }
            }
            types = ""; uris = ""; suites = ""; enabled = "yes"; key = ""
          }
          BEGIN { enabled = "yes" }
          /^#/ { next }
          /^[ \t]*$/ { flush(); next }
          /^[ \t]/ {
            if (key == "types") types = types " " $0
            else if (key == "uris") uris = uris " " $0
            else if (key == "suites") suites = suites " " $0
            next
          }
          {
            i = index($0, ":"); if (i == 0) next
            key = tolower(substr($0, 1, i - 1))
            val = substr($0, i + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
            if (key == "types") types = val
            else if (key == "uris") uris = val
            else if (key == "suites") suites = val
            else if (key == "enabled") enabled = val
          }
          END { flush() }
        ' "$f"
        ;;
      *)
        awk -v want="$suite" '
          $1 != "deb" { next }
          {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == want) print $i
          }
        ' "$f"
        ;;
    esac
  done | sed -n 1p
}

# The Debian mirror for debootstrap: --mirror / DEBIAN_MIRROR, else the one
# apt uses for bookworm here, else the one it uses for any other Debian
# release (the same archive serves bookworm).
debian_mirror() {
  local uri="$mirror" suite
  if [ -z "$uri" ]; then
    for suite in bookworm trixie bullseye stable testing sid unstable; do
      uri="$(apt_uri "$suite")"
      [ -n "$uri" ] && break
    done
  fi
  [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/; pass --mirror URL"
  echo "${uri%/}"
}

# Trims a debootstrap rootfs the way debian:bookworm-slim is trimmed
# (documentation, man pages and locales are not installed; apt keeps no
# caches) and points apt at the mirror it was made from.
slim_rootfs() {
  local dir="$1" uri="$2" security
  security="$(apt_uri bookworm-security)"
  {
    echo "deb $uri bookworm main"
    echo "deb $uri bookworm-updates main"
    if [ -n "$security" ]; then echo "deb ${security%/} bookworm-security main"; fi
  } >"$dir/etc/apt/sources.list"

  cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::Languages "none";' >"$dir/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$dir/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$dir/etc/apt/apt.conf.d/docker-autoremove-suggests"

  find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{man,groff,info,lintian,linda}/*
  find "$dir/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
  rm -f "$dir"/var/log/*.log "$dir"/var/log/apt/*
  # The engine provides these per container; debootstrap copied the host's.
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
  : >"$dir/etc/machine-id" 2>/dev/null || true
}

# Makes $1, the cached minbase tarball, with debootstrap. The caller holds
# the cache lock.
make_base_tarball() {
  local tarball="$1" uri rootfs started
  [ "$(id -u)" = 0 ] || die "creating $default_base offline runs debootstrap, which needs root (or put a tarball at $tarball)"
  command -v debootstrap >/dev/null || die "creating $default_base offline needs debootstrap (apt-get install debootstrap)"
  uri="$(debian_mirror)"
  # Inside the cache dir, not /tmp: debootstrap creates device nodes, which a
  # nodev /tmp would refuse.
  rootfs="$(mktemp -d "$cache_dir/rootfs.XXXXXX")"
  scratch+=("$rootfs")
  # The tarball's "./" becomes the image's /; mktemp made it 0700, which
  # would lock every non-root user (apt's _apt among them) out of /.
  chmod 0755 "$rootfs"
  started=$SECONDS
  note "debootstrap --variant=minbase bookworm from $uri (first time only; 1 to 2 minutes)"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$uri" >&2; then
    cp "$rootfs/debootstrap/debootstrap.log" "$cache_dir/debootstrap.log" 2>/dev/null || true
    die "debootstrap from $uri failed (see above and $cache_dir/debootstrap.log)"
  fi
  unmount_under "$rootfs"
  slim_rootfs "$rootfs" "$uri"
  tar --numeric-owner --one-file-system -C "$rootfs" -cf "$tarball.tmp.$$" . \
    || { rm -f "$tarball.tmp.$$"; die "could not write $tarball"; }
  mv "$tarball.tmp.$$" "$tarball"
  note "cached $tarball ($(du -h "$tarball" | cut -f1), $((SECONDS - started)) s)"
}

# Makes sure the engine has $base_image: there already, pulled, or (for the
# default base only) imported from the cached debootstrap tarball.
ensure_base() {
  local tarball lock
  if image_present "$base_image"; then
    note "base $base_image: on the engine"
    return
  fi
  if [ "$offline" = 0 ] && try_pull "$base_image"; then
    return
  fi
  [ "$base_image" = "$default_base" ] \
    || die "$base_image is not on the engine$([ "$offline" = 1 ] || echo " and could not be pulled"); only $default_base can be created offline"
  [ "$offline" = 1 ] || note "pull failed: creating $default_base offline"

  mkdir -p "$cache_dir" || die "cannot create the cache dir $cache_dir (pass --cache-dir)"
  tarball="$cache_dir/bookworm-minbase.tar"
  lock="$cache_dir/bookworm-minbase.lock"
  # One debootstrap at a time per machine; a second build waits and reuses.
  exec {lock_fd}>"$lock" || die "cannot open $lock"
  flock "$lock_fd"
  if [ -s "$tarball" ]; then
    note "reusing $tarball"
  else
    make_base_tarball "$tarball"
  fi
  note "importing $tarball as $default_base"
  docker import \
    --change 'CMD ["bash"]' \
    --change "ENV $path_env" \
    --message "debootstrap --variant=minbase bookworm (dind-supervisor images/build.sh)" \
    "$tarball" "$default_base" >/dev/null \
    || die "docker import of $tarball failed"
  exec {lock_fd}>&-
}

# --- the binary ------------------------------------------------------------

# Sets $binary to a static dind-supervisor: the one given, else cargo's
# (built when missing or stale).
ensure_binary() {
  if [ -z "$binary" ]; then
    binary="${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-gnu/release/dind-supervisor"
    if command -v cargo >/dev/null; then
      note "cargo build --release -p dind-supervisor"
      (cd "$root" && cargo build --release -p dind-supervisor >&2) || die "cargo build failed"
    elif [ -x "$binary" ]; then
      note "cargo is not installed: using $binary as it is"
    else
      die "cargo is not installed and $binary does not exist; pass --binary PATH"
    fi
  fi
  [ -f "$binary" ] && [ -x "$binary" ] || die "$binary is not an executable file"
  if command -v readelf >/dev/null \
    && readelf -l "$binary" 2>/dev/null | grep -q 'program interpreter'; then
    die "$binary is dynamically linked; the images need the static build (see .cargo/config.toml)"
  fi
}

# --- building --------------------------------------------------------------

workspace_field() {
  awk -v k="$1" '
    /^\[/ { in_ws = ($0 == "[workspace.package]") }
    in_ws && $1 == k { sub(/^[^=]*=[ \t]*"/, ""); sub(/".*/, ""); print; exit }
  ' "$root/Cargo.toml"
}

supervisor_version="$(workspace_field version)"
source_url="$(workspace_field repository)"

build_one() {
  local target="$1" tag="$2" ctx network=()
  ctx="$(mktemp -d "${TMPDIR:-/tmp}/dind-supervisor-image.XXXXXX")"
  scratch+=("$ctx")
  cp "$here/$target/Dockerfile" "$ctx/Dockerfile"
  local args=(
    --build-arg "SUPERVISOR_VERSION=${supervisor_version:-0.0.0-dev}"
    --build-arg "SOURCE_URL=${source_url:-unknown}"
  )
  case "$target" in
    debian|dind)
      install -m 0755 "$binary" "$ctx/dind-supervisor" ;;
  esac
  case "$target" in
    debian|job) args+=(--build-arg "BASE_IMAGE=$base_image") ;;
    dind) args+=(--build-arg "DOCKER_VERSION=$docker_version") ;;
  esac
  # RUN steps fetch packages; the host's network reaches the mirror without
  # depending on the engine's bridge and NAT set-up.
  if [ "$host_network" = 1 ]; then network=(--network=host); fi
  note "building $tag from images/$target/Dockerfile"
  docker build "${network[@]}" -t "$tag" "${args[@]}" "${build_args[@]}" "$ctx" >&2 \
    || die "docker build of $target ($tag) failed"
  echo "$tag"
}

# Base images first, so a missing one fails before a long cargo build.
need_base=0
need_binary=0
for t in "${targets[@]}"; do
  case "$t" in
    debian) need_base=1; need_binary=1 ;;
    job|base) need_base=1 ;;
    dind)
      need_binary=1
      dind_base="docker:$docker_version-dind"
      image_present "$dind_base" || try_pull "$dind_base" \
        || die "$dind_base is not on the engine and could not be pulled; load it (docker load) or build the debian target"
      ;;
  esac
done
[ "$need_base" = 0 ] || ensure_base
[ "$need_binary" = 0 ] || ensure_binary

for t in "${targets[@]}"; do
  case "$t" in
    debian) build_one debian "${tag:-dind-supervisor:debian}" ;;
    job) build_one job "${tag:-dind-supervisor-job:latest}" ;;
    dind) build_one dind "${tag:-dind-supervisor:$docker_version-dind}" ;;
    base)
      [ -z "$tag" ] || [ "$tag" = "$base_image" ] || docker tag "$base_image" "$tag"
      echo "${tag:-$base_image}" ;;
  esac
done
