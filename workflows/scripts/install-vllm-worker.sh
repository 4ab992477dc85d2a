#!/bin/sh
# Make a Debian/Ubuntu GPU host a vLLM worker: Docker, the NVIDIA Container Toolkit, the vLLM
# OpenAI-compatible server in a container, and a small worker health endpoint. Idempotent: on
# a host already serving the same model with the same settings it changes nothing; when the
# model (or the image, port, GPUs, arguments) changed, the container is replaced. Run as root
# (ssh.run with `sudo: true` for another user). Step 60% of seed 002 (WORKER_SSH_INSTALL).
#
# Environment (set by workflows/vllm-worker.yaml):
#   MODEL=ID             the model vLLM serves (Hugging Face id), required
#   VLLM_PORT=8000       host port of vLLM's API
#   HEALTH_PORT=8080     host port of the worker health endpoint
#   IMAGE=IMAGE          the vLLM image (pinned: vllm/vllm-openai:vX.Y.Z)
#   GPUS=all             Docker's --gpus value (`all`, `2`, `"device=0,1"`)
#   VLLM_ARGS="..."      more arguments for vLLM (split on spaces)
#   HF_TOKEN=...         a Hugging Face token for gated models (passed by name, never printed)
# Argument: `docker` does only the first part (nvidia-smi answers, Docker installed and
# running), so that workflows/install-nvidia-container-toolkit.yaml can run in between; none
# (or `worker`) checks all of it and installs the worker.
# Host environment (defaults fit a real host):
#   WORKER_DIR=/opt/vllm-worker         health endpoint, its settings and the model cache
#   UNIT_DIR=/etc/systemd/system        where the health endpoint's unit goes
#   WORKER_BIND=0.0.0.0                 address the health endpoint listens on
set -eu

log() { printf '%s\n' "$*"; }
die() { printf 'install-vllm-worker: %s\n' "$*" >&2; exit 1; }

: "${MODEL:?MODEL is required}"
VLLM_PORT=${VLLM_PORT:-8000}
HEALTH_PORT=${HEALTH_PORT:-8080}
IMAGE=${IMAGE:-vllm/vllm-openai:v0.8.5}
GPUS=${GPUS:-all}
VLLM_ARGS=${VLLM_ARGS:-}
WORKER_DIR=${WORKER_DIR:-/opt/vllm-worker}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
WORKER_BIND=${WORKER_BIND:-0.0.0.0}
NAME=vllm
UNIT=vllm-worker-health
export DEBIAN_FRONTEND=noninteractive

[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
command -v nvidia-smi >/dev/null 2>&1 || die "nvidia-smi not found: this is not a GPU host with the NVIDIA driver"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    || die "the NVIDIA driver does not answer (is the kernel module loaded?)"

# Docker.
if ! command -v docker >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "docker not found and no apt-get to install it"
    log "installing Docker"
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    systemctl enable --now docker
fi
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer"
log "docker: $(docker --version)"
[ "${1:-worker}" != docker ] || exit 0

# The NVIDIA Container Toolkit is install-nvidia-container-toolkit.sh's job; check its result.
case "$(docker info --format '{{json .Runtimes}}')" in
    *nvidia*) log "docker lists the nvidia runtime" ;;
    *) die "Docker has no nvidia runtime: run install-nvidia-container-toolkit.sh first" ;;
esac

# The vLLM container: replaced only when what it should run changed.
mkdir -p "$WORKER_DIR/hf-cache"
want=$(printf '%s\n' "$IMAGE" "$MODEL" "$VLLM_PORT" "$GPUS" "$VLLM_ARGS" | sha256sum | cut -c1-16)
have=$(docker inspect --format '{{ index .Config.Labels "engine.vllm-worker.config" }}' "$NAME" 2>/dev/null || true)
if [ -n "$have" ] && [ "$have" = "$want" ]; then
    if [ "$(docker inspect --format '{{.State.Running}}' "$NAME")" != true ]; then
        docker start "$NAME" >/dev/null
        log "vLLM container started again"
    fi
    log "vLLM already serves $MODEL on port $VLLM_PORT"
else
    if docker inspect "$NAME" >/dev/null 2>&1; then
        log "replacing the vLLM container (settings changed)"
        docker rm -f "$NAME" >/dev/null
    fi
    docker pull -q "$IMAGE" >/dev/null || die "cannot pull $IMAGE"
    set --
    if [ -n "${HF_TOKEN:-}" ]; then
        set -- -e HF_TOKEN
    fi
    # VLLM_ARGS is split into words on purpose.
    # shellcheck disable=SC2086
    docker run -d --name "$NAME" --restart unless-stopped \
        --gpus "$GPUS" --ipc=host -p "$VLLM_PORT:8000" \
        -v "$WORKER_DIR/hf-cache:/root/.cache/huggingface" \
        --label "engine.vllm-worker.config=$want" --label "engine.vllm-worker.model=$MODEL" \
        "$@" "$IMAGE" --model "$MODEL" --port 8000 $VLLM_ARGS >/dev/null
    log "vLLM container started: $MODEL on port $VLLM_PORT ($IMAGE)"
fi

# The worker health endpoint: ready only when vLLM's /health answers and nvidia-smi works.
python=$(command -v python3 || true)
if [ -z "$python" ]; then
    command -v apt-get >/dev/null 2>&1 || die "python3 not found"
    apt-get install -y -qq python3-minimal >/dev/null
    python=$(command -v python3)
fi
case "$WORKER_BIND" in
    0.0.0.0 | '') vllm_host=127.0.0.1 ;;
    *) vllm_host=$WORKER_BIND ;;
esac
changed=0
write_if_changed() { # FILE: stdin replaces FILE when different
    tmp="$1.new"
    cat > "$tmp"
    if [ -f "$1" ] && cmp -s "$tmp" "$1"; then
        rm -f "$tmp"
    else
        mv "$tmp" "$1"
        changed=1
    fi
}
write_if_changed "$WORKER_DIR/health.py" <<'EOF'
"""vLLM worker health: 200 when vLLM's /health answers and nvidia-smi works, else 503."""
import json
import os
import subprocess
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VLLM = os.environ["VLLM_URL"]
MODEL = os.environ.get("MODEL", "")


def check():
    problems = []
    try:
        with urllib.request.urlopen(VLLM + "/health", timeout=3) as r:
            if r.status != 200:
                problems.append("vllm /health answered %d" % r.status)
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        problems.append("vllm /health: %s" % e)
    gpus = []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True)
        gpus = [l.strip() for l in out.stdout.splitlines() if l.strip()]
        if not gpus:
            problems.append("nvidia-smi lists no GPU")
    except Exception as e:  # noqa: BLE001
        problems.append("nvidia-smi: %s" % e)
    return problems, gpus


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path not in ("/", "/health", "/ready"):
            self.send_error(404)
            return
        problems, gpus = check()
        body = json.dumps({"status": "ready" if not problems else "not_ready",
                           "model": MODEL, "gpus": gpus, "problems": problems}).encode()
        self.send_response(200 if not problems else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["BIND"], int(os.environ["PORT"])), Handler).serve_forever()
EOF
write_if_changed "$WORKER_DIR/health.env" <<EOF
VLLM_URL=http://$vllm_host:$VLLM_PORT
MODEL=$MODEL
BIND=$WORKER_BIND
PORT=$HEALTH_PORT
EOF
if command -v systemctl >/dev/null 2>&1; then
    mkdir -p "$UNIT_DIR"
    write_if_changed "$UNIT_DIR/$UNIT.service" <<EOF
[Unit]
Description=vLLM worker health endpoint (port $HEALTH_PORT)
After=network-online.target docker.service

[Service]
EnvironmentFile=$WORKER_DIR/health.env
ExecStart=$python $WORKER_DIR/health.py
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
    if [ "$changed" -eq 1 ]; then
        systemctl daemon-reload
        systemctl enable "$UNIT" >/dev/null 2>&1 || true
        systemctl restart "$UNIT"
        log "health endpoint (re)started on port $HEALTH_PORT"
    elif ! systemctl is-active --quiet "$UNIT"; then
        systemctl start "$UNIT"
        log "health endpoint started on port $HEALTH_PORT"
    else
        log "health endpoint already running on port $HEALTH_PORT"
    fi
else
    # No systemd: a background process, restarted when its files changed.
    pidfile="$WORKER_DIR/health.pid"
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        [ "$changed" -eq 0 ] || { kill "$pid"; pid=; }
    else
        pid=
    fi
    if [ -z "$pid" ]; then
        set -a
        # shellcheck disable=SC1091
        . "$WORKER_DIR/health.env"
        set +a
        nohup "$python" "$WORKER_DIR/health.py" </dev/null >>"$WORKER_DIR/health.log" 2>&1 &
        echo "$!" > "$pidfile"
        log "health endpoint started on port $HEALTH_PORT (pid $!)"
    fi
fi
log "worker installed: vLLM on $VLLM_PORT, health on $HEALTH_PORT"
