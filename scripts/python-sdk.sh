#!/usr/bin/env bash
# Makes a private Python environment with the Docker SDK (docker-py), a
# third-party client the tests drive through the proxy, and prints its
# python. Kept under target/ so a fresh checkout builds it once.
set -euo pipefail
cd "$(dirname "$0")/.."

env_dir="$PWD/target/python-sdk"
py="$env_dir/bin/python"
if ! "$py" -c 'import docker' >/dev/null 2>&1; then
  rm -rf "$env_dir"
  if ! python3 -m venv "$env_dir" >/dev/null 2>&1; then
    # Debian's python3 needs the venv module packaged separately.
    rm -rf "$env_dir"
    bash scripts/install-deps.sh python3-venv >&2
    python3 -m venv "$env_dir"
  fi
  "$env_dir/bin/pip" install --quiet --disable-pip-version-check 'docker>=7,<8' >&2
fi
echo "$py"
