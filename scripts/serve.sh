#!/usr/bin/env bash
# Runs the Plover server with sled embedded and the bundled plugins loaded (the Rust ones and
# json-reshape, in Python), on http://127.0.0.1:7373 with data in ./plover-data. Extra
# arguments go to `plover serve` (e.g. --bind, --data-dir, --config). The first start prints
# the admin token once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --python
(cd plugins && cargo build --release --locked)
cargo build --release --locked -p plover-host --bin plover
PLUGINS=plugins/target/wasm32-wasip2/release

# json-reshape: componentize-py, then its declared bindings; rebuilt when a source is newer.
reshape="$PLUGINS/json_reshape.wasm"
if [[ ! -f "$reshape" ]] || [[ -n "$(find plugins/json-reshape sdk/python wit/v0.2.0 -type f -newer "$reshape" -print -quit)" ]]; then
    built="$(mktemp -d)"
    trap 'rm -rf "$built"' EXIT
    PYTHONDONTWRITEBYTECODE=1 target/py-tools/bin/componentize-py -d wit/v0.2.0 -w handler-plugin \
        componentize app -p plugins/json-reshape -p sdk/python -o "$built/json_reshape.wasm"
    target/release/plover plugin declare "$built/json_reshape.wasm" \
        --from plugins/json-reshape/bindings.json --out "$reshape"
    rm -rf "$built"
fi
exec target/release/plover serve --plugins-dir "$PLUGINS" "$@"
