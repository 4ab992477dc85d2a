#!/usr/bin/env bash
# Peer for the `gpu` connector's failure-mode tests: Debian's real, non-free `nvidia-smi`
# and its NVML library, unpacked under target/peers/nvidia-smi/root and NOT installed
# system-wide. On a machine with no NVIDIA driver they give the real error paths:
#   - the binary with no libnvidia-ml.so.1 on the library path exits 12 ("NVIDIA-SMI
#     couldn't find libnvidia-ml.so library in your system...");
#   - with the library (LD_LIBRARY_PATH) but no kernel driver it exits 9 ("NVIDIA-SMI has
#     failed because it couldn't communicate with the NVIDIA driver...", on stdout).
#
# Idempotent: adds a deb822 sources file for bookworm `non-free` (same mirror and keyring as
# the system's debian.sources) once, downloads the .debs once, unpacks them once.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
peer=$repo_root/target/peers/nvidia-smi
debs=$peer/debs
root=$peer/root
sources=/etc/apt/sources.list.d/engine-nonfree.sources

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)

# 1. The non-free component, from the mirror the system already uses.
if [ ! -f "$sources" ]; then
    uri=http://deb.debian.org/debian
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
        found=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
        [ -n "$found" ] && keyring=$found
    fi
    "${as_root[@]}" tee "$sources" >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm bookworm-updates
Components: non-free
Signed-By: $keyring
SRC
    "${as_root[@]}" apt-get update -qq
fi

# 2. The packages, downloaded (not installed). nvidia-smi's binary is a wrapper's target
#    under usr/lib/nvidia/current; libnvidia-ml1 carries libnvidia-ml.so.1.
pkgs=(nvidia-smi libnvidia-ml1)
mkdir -p "$debs"
for p in "${pkgs[@]}"; do
    if ! compgen -G "$debs/${p}_*.deb" >/dev/null; then
        if ! (cd "$debs" && apt-get download -qq "$p" 2>/dev/null); then
            # The package lists may be stale or missing: refresh once and try again.
            "${as_root[@]}" apt-get update -qq
            (cd "$debs" && apt-get download -qq "$p")
        fi
    fi
done

# 3. Unpack them.
if [ ! -f "$root/.unpacked" ]; then
    rm -rf "$root"
    mkdir -p "$root"
    for d in "$debs"/*.deb; do
        dpkg-deb -x "$d" "$root"
    done
    touch "$root/.unpacked"
fi

bin=$(find "$root" -type f -name nvidia-smi -perm -u+x | grep -v '/bin/nvidia-smi$' | head -n 1 || true)
[ -n "$bin" ] || bin=$(find "$root" -type f -name nvidia-smi | head -n 1)
lib=$(find "$root" -name 'libnvidia-ml.so.1' | head -n 1)
echo "nvidia-smi: ${bin:-missing}"
echo "libnvidia-ml.so.1: ${lib:-missing}"
[ -n "$bin" ] && [ -n "$lib" ]
