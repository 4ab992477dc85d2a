#!/usr/bin/env bash
# Peer for the `container` connector's integration tests: the machine's own Docker Engine
# (no registry is reachable) and a tiny image built here from local files.
#
# Idempotent: installs Debian's static busybox only when /bin/busybox is missing (or is the
# dynamically linked one, which cannot run in an image FROM scratch), and builds
# `engine-test/busybox:1` only when the daemon does not have it yet.
#
# The image is FROM scratch: /bin/busybox, the applet symlinks `busybox --install -s` makes
# (/bin/sh, /bin/sleep, /bin/echo...), /tmp, and an /etc/passwd with root and nobody.
#
# Environment: DOCKER_HOST is honoured (the docker CLI reads it); IMAGE overrides the tag.
# The Dockerfile below is kept in step with connectors/container/tests/docker.rs, which builds
# the same image through the Engine API when it is missing.
set -euo pipefail

IMAGE="${IMAGE:-engine-test/busybox:1}"

if ! command -v docker >/dev/null 2>&1; then
    echo "docker-images.sh: the docker CLI is not installed (apt-get install docker.io)" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1 && [ -z "${DOCKER_HOST:-}" ] && [ "$(id -u)" -eq 0 ] && command -v service >/dev/null 2>&1 \
    && [ -x /etc/init.d/docker ]; then
    # The local daemon is installed but not running: start it, and give it a moment.
    service docker start >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
fi
if ! docker info >/dev/null 2>&1; then
    echo "docker-images.sh: the Docker daemon does not answer (is it running? DOCKER_HOST=${DOCKER_HOST:-unset})" >&2
    exit 1
fi

is_static() {
    # ldd says "not a dynamic executable" (exit 1) for a static binary.
    [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1
}

if ! is_static /bin/busybox; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi
if ! is_static /bin/busybox; then
    echo "docker-images.sh: /bin/busybox is not a static binary after installing busybox-static" >&2
    exit 1
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE: present"
    exit 0
fi

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
cp /bin/busybox "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && /bin/busybox mkdir -p /tmp /etc /root && /bin/busybox chmod 1777 /tmp && echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && echo 'nobody:x:65534:65534:nobody:/:/bin/false' >> /etc/passwd && echo 'root:x:0:' > /etc/group && echo 'nogroup:x:65534:' >> /etc/group"]
LABEL org.opencontainers.image.title="engine-test busybox" engine.test="1"
CMD ["/bin/sh"]
DOCKERFILE
# The classic builder: the daemon is 20.10 and buildx may be absent; nothing is pulled
# (FROM scratch), so no registry is needed.
if ! out="$(DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" 2>&1)"; then
    echo "docker-images.sh: building $IMAGE failed:" >&2
    echo "$out" >&2
    exit 1
fi
echo "$IMAGE: built"
