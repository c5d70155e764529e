#!/usr/bin/env bash
# Makes a private Python environment with the packages the tests use
# (scripts/python-requirements.txt: the Docker SDK, the Kubernetes client's
# API models, PyYAML) and prints its python.
#
# Installing them takes minutes on a fresh machine (the Kubernetes client
# brings some thirty packages), so the environment lives in the machine's
# cache, as images/build.sh keeps its Debian base there, named by a hash of
# the requirements: every checkout and CI run on this machine shares it, and
# a change of requirements makes a new one.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements="$PWD/scripts/python-requirements.txt"
cache="${DIND_IMAGE_CACHE:-${XDG_CACHE_HOME:-/var/cache}/dind-supervisor}"
env_dir="$cache/python-$(sha256sum "$requirements" | cut -c1-16)"
py="$env_dir/bin/python"
ready() { "$py" -c 'import docker, kubernetes, yaml' >/dev/null 2>&1; }
if ! ready; then
  mkdir -p "$cache"
  # One builder at a time; whoever waited finds it ready.
  exec 9>"$env_dir.lock"
  flock 9
  if ! ready; then
    rm -rf "$env_dir"
    if ! python3 -m venv "$env_dir" >/dev/null 2>&1; then
      # Debian's python3 needs the venv module packaged separately.
      rm -rf "$env_dir"
      bash scripts/install-deps.sh python3-venv >&2
      python3 -m venv "$env_dir"
    fi
    "$env_dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  fi
fi
echo "$py"
