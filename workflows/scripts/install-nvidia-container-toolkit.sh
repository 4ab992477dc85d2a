#!/bin/sh
# Install the NVIDIA Container Toolkit on a Debian/Ubuntu host and make it a Docker runtime,
# then (optionally) prove a container sees the GPUs. Idempotent: on a configured host it
# changes nothing. Run as root (ssh.run with `sudo: true`).
#
# Environment:
#   SET_DEFAULT=1      also make nvidia Docker's default runtime
#   CHECK_IMAGE=IMAGE  run `nvidia-smi -L` in IMAGE with --gpus all at the end
#   TOOLKIT_VERSION=V  pin nvidia-container-toolkit to version V (default: the newest)
set -eu

log() { printf '%s\n' "$*"; }
die() { printf 'install-nvidia-container-toolkit: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
command -v apt-get >/dev/null 2>&1 || die "this script supports Debian and Ubuntu (apt-get not found)"
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: install the NVIDIA driver first"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || die "the NVIDIA driver does not answer (is the kernel module loaded?)"
command -v docker >/dev/null 2>&1 || die "docker not found: install Docker first"

key=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
list=/etc/apt/sources.list.d/nvidia-container-toolkit.list
export DEBIAN_FRONTEND=noninteractive

if ! command -v nvidia-ctk >/dev/null 2>&1; then
    for tool in curl gpg; do
        command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq curl gnupg ca-certificates >/dev/null; break; }
    done
    if [ ! -s "$key" ]; then
        curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$key"
    fi
    if [ ! -s "$list" ]; then
        curl -fsSL https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list \
            | sed "s#deb https://#deb [signed-by=$key] https://#g" > "$list"
    fi
    apt-get update -qq
    if [ -n "${TOOLKIT_VERSION:-}" ]; then
        apt-get install -y -qq "nvidia-container-toolkit=${TOOLKIT_VERSION}*" "nvidia-container-toolkit-base=${TOOLKIT_VERSION}*" >/dev/null
    else
        apt-get install -y -qq nvidia-container-toolkit >/dev/null
    fi
fi
log "toolkit: $(nvidia-ctk --version | head -n 1)"

runtimes=$(docker info --format '{{json .Runtimes}}')
default=$(docker info --format '{{.DefaultRuntime}}')
want_default=${SET_DEFAULT:-0}
case "$runtimes" in
    *nvidia*) configured=1 ;;
    *) configured=0 ;;
esac
if [ "$configured" -eq 0 ] || { [ "$want_default" = 1 ] && [ "$default" != nvidia ]; }; then
    if [ "$want_default" = 1 ]; then
        nvidia-ctk runtime configure --runtime=docker --set-as-default
    else
        nvidia-ctk runtime configure --runtime=docker
    fi
    systemctl restart docker
    log "docker restarted with the nvidia runtime"
fi
docker info --format '{{json .Runtimes}}' | grep -q nvidia || die "Docker does not list the nvidia runtime after configuring it"
log "default runtime: $(docker info --format '{{.DefaultRuntime}}')"

if [ -n "${CHECK_IMAGE:-}" ]; then
    docker run --rm --gpus all "$CHECK_IMAGE" nvidia-smi -L
fi
