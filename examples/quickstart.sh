#!/usr/bin/env bash
# The README's first command: set up and start a local cluster with the demo app.
# Installs Debian's busybox-static when no busybox is present (the demo image is
# built from it), makes a virtualenv with Capstan, then `capstan up --demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v busybox >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null \
        || { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null; }
fi

python3 -m venv .venv
.venv/bin/pip install -q -e .
exec .venv/bin/capstan up --demo "$@"
