#!/usr/bin/env bash
# Installs what building and testing Plover needs on a fresh machine, idempotently:
# the wasm32-wasip2 Rust target, rustfmt and clippy; with --python also the pinned Python tools
# (below); with --services (what the tests need)
# also the Python tools the tests run (an OpenAPI validator, the schemathesis fuzzer, and
# componentize-py, which builds the Python guests; pinned, in target/py-tools), headless Chromium and ChromeDriver from
# the distribution's packages (the console's browser tests), and makes sure the local
# PostgreSQL and Redis answer, starting them if they are installed but stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: installing the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed | grep -q "^${component}"; then
        rustup component add "$component"
    fi
done

# --python (what serve.sh needs to build the bundled Python handler) or --services.
if [[ "${1:-}" == "--services" || "${1:-}" == "--python" ]]; then
    PY_TOOLS=target/py-tools
    PY_PINS="schemathesis==4.32.5 openapi-spec-validator==0.9.0 componentize-py==0.25.0"
    if [[ "$(cat "$PY_TOOLS/pins" 2>/dev/null)" != "$PY_PINS" ]]; then
        echo "setup: installing $PY_PINS into $PY_TOOLS"
        rm -rf "$PY_TOOLS"
        python3 -m venv "$PY_TOOLS"
        # shellcheck disable=SC2086
        "$PY_TOOLS/bin/pip" install --quiet --disable-pip-version-check $PY_PINS
        echo "$PY_PINS" > "$PY_TOOLS/pins"
    fi
fi

if [[ "${1:-}" == "--services" ]]; then
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        echo "setup: installing chromium and chromium-driver (the console's browser tests)"
        if [[ $(id -u) -eq 0 ]]; then apt=(apt-get); else apt=(sudo apt-get); fi
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q chromium chromium-driver >/dev/null \
            || { "${apt[@]}" update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q chromium chromium-driver >/dev/null; }
    fi
    command -v chromedriver >/dev/null || { echo "setup: chromedriver could not be installed (needed by the console's browser tests)" >&2; exit 1; }
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
