#!/usr/bin/env bash
# Peer for the `proxmox` connector's integration tests: fakepve (a third-party emulator of
# the Proxmox VE API, built from PVE's own API schema), installed from PyPI into a venv under
# target/peers/fakepve-venv. Idempotent: creates the venv and installs `fakepve[crypto]` only
# when `fakepve` is missing. Prints the path of the venv's `python` on stdout (the tests run
# connectors/proxmox/tests/fakepve_launcher.py with it; FAKEPVE_PYTHON overrides).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${FAKEPVE_VENV:-$root/target/peers/fakepve-venv}"

if [ ! -x "$venv/bin/fakepve" ]; then
    python="${PYTHON:-$(command -v python3 || true)}"
    if [ -z "$python" ]; then
        echo "fakepve.sh: python3 is needed to install fakepve (apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'fakepve[crypto]' >&2
fi

echo "$venv/bin/python"
