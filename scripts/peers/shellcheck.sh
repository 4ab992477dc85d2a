#!/usr/bin/env bash
# ShellCheck, for the scripts the shipped workflows run on hosts (workflows/scripts/*.sh):
# ./scripts/test fails when one of them has a finding. Idempotent: installs Debian's
# shellcheck only when it is missing.
set -euo pipefail
if command -v shellcheck >/dev/null 2>&1; then
    echo "shellcheck: $(shellcheck --version | sed -n 's/^version: //p')"
    exit 0
fi
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
echo "shellcheck: installed $(shellcheck --version | sed -n 's/^version: //p')"
