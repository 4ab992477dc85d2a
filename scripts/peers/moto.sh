#!/usr/bin/env bash
# Peer for the `aws` connector's integration tests: moto's server (a third-party emulator
# of the EC2 Query API), installed from PyPI into a venv under target/peers/moto-venv.
# Idempotent: creates the venv and installs `moto[server]` only when `moto_server` is
# missing. Prints the path of `moto_server` on stdout (the tests find it there, or through
# MOTO_SERVER). The tests start their own server on 127.0.0.1 and a free port with
# MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION=true MOTO_ENABLE_AMI_VALIDATION=true.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${MOTO_VENV:-$root/target/peers/moto-venv}"
server="$venv/bin/moto_server"

if [ ! -x "$server" ]; then
    python="${PYTHON:-$(command -v python3 || true)}"
    if [ -z "$python" ]; then
        echo "moto.sh: python3 is needed to install moto (apt-get install python3 python3-venv)" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/pip" ] || "$python" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' >&2
fi

echo "$server"
