#!/usr/bin/env bash
# Sets up everything the test suite needs on a Debian machine and runs it:
# Debian packages (as root), a Docker Engine without bridge networking, etcd on
# loopback, a virtualenv with the project and its test extras, then pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    need=()
    # chromium: the audit report is rendered in a real headless browser by a test.
    for pkg in docker.io busybox-static etcd-server openssl util-linux chromium; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

logs=${CAPSTAN_TEST_LOGS:-/tmp/capstan-test-services}
mkdir -p "$logs"

# Docker Engine with no bridge and no iptables: containers get host or no
# networking, and nothing leaves loopback.
if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    dockerd --bridge=none --iptables=false --ip-masq=false >"$logs/dockerd.log" 2>&1 &
    for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || { tail -20 "$logs/dockerd.log"; exit 1; }
fi

# etcd on loopback only.
if command -v etcd >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null; then
    etcd --data-dir "$logs/etcd-data" \
        --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
        --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster default=http://127.0.0.1:2380 --max-txn-ops 10000 \
        >"$logs/etcd.log" 2>&1 &
    for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/2379) 2>/dev/null && break; sleep 0.5; done
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[test]'
# Tests that run the `capstan` console script find this venv's first.
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q "$@"
