#!/usr/bin/env bash
# Installs what building and testing Plover needs on a fresh machine, idempotently:
# the wasm32-wasip2 Rust target, rustfmt and clippy, and (with --services) makes sure the
# local PostgreSQL and Redis answer, starting them if they are installed but stopped.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done

if [[ "${1:-}" == "--services" ]]; then
    if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
        echo "setup: starting PostgreSQL"
        if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
            pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
        fi
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
    if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
        echo "setup: starting Redis"
        if command -v redis-server >/dev/null; then
            redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
        fi
        for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
    fi
    pg_isready -q -h 127.0.0.1 -p 5432 || { echo "setup: PostgreSQL does not answer on 127.0.0.1:5432 (needed by the connector tests)" >&2; exit 1; }
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "setup: Redis does not answer on 127.0.0.1:6379 (needed by the connector tests)" >&2; exit 1; }
fi
