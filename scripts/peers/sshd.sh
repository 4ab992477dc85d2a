#!/usr/bin/env bash
# Peer for the `ssh` connector's integration tests: a real OpenSSH sshd, ssh-keygen,
# ssh-agent and ssh-add (openssh-client), and sudo (`ssh.run` with `sudo: true`).
# Idempotent: installs only what is missing. The tests start their own sshd on 127.0.0.1
# and a free port, with their own config, host key and authorized keys in a temporary
# directory (connectors/ssh/src/testing.rs (feature test-util)); this script only makes the binaries and sshd's
# privilege-separation directory exist.
set -euo pipefail

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 && command -v ssh-agent >/dev/null 2>&1 || need+=(openssh-client)
command -v sudo >/dev/null 2>&1 || need+=(sudo)

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        if [ "${#need[@]}" -gt 0 ] || [ ! -d /run/sshd ]; then
            echo "sshd.sh: not root and no sudo: as root, run: apt-get install ${need[*]:-openssh-server}; mkdir -p /run/sshd" >&2
            exit 1
        fi
    fi
    as_root=(sudo)
fi

if [ "${#need[@]}" -gt 0 ]; then
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# sshd refuses to start without its privilege-separation directory.
[ -d /run/sshd ] || "${as_root[@]}" mkdir -p /run/sshd

/usr/sbin/sshd -V 2>&1 | head -n 1 || true
