#!/usr/bin/env bash
# Peer for the Scaleway emulator's fidelity test (engine/emulator/tests/sdk.rs): the
# official Scaleway Python SDK (`scaleway` on PyPI) in a venv under
# target/peers/scw-venv, plus its source distribution unpacked under
# target/peers/scw-sdist, which holds the recorded real API exchanges
# (scaleway/instance/v1/tests/cassettes/*.yaml; the wheel does not ship them).
# Idempotent: installs only what is missing. Prints the venv's python on stdout.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${SCW_VENV:-$root/target/peers/scw-venv}"
sdist="${SCW_SDIST:-$root/target/peers/scw-sdist}"
version="${SCW_SDK_VERSION:-2.12.0}"
py="$venv/bin/python"

if ! { [ -x "$py" ] && "$py" -c 'import scaleway, yaml' 2>/dev/null; }; then
    python="${PYTHON:-$(command -v python3 || true)}"
    if [ -z "$python" ]; then
        echo "scaleway-sdk.sh: python3 is needed (apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "scaleway==$version" pyyaml >&2
fi

if ! ls "$sdist"/scaleway-*/scaleway/instance/v1/tests/cassettes/*.yaml >/dev/null 2>&1; then
    mkdir -p "$sdist"
    "$venv/bin/pip" download --quiet --disable-pip-version-check --no-binary :all: --no-deps \
        -d "$sdist" "scaleway==$version" >&2
    tar -xzf "$sdist/scaleway-$version.tar.gz" -C "$sdist"
fi

echo "$py"
