#!/usr/bin/env bash
# Runs the Plover server with sled embedded and the bundled plugins loaded, on
# http://127.0.0.1:7373 with data in ./plover-data. Extra arguments go to `plover serve`
# (e.g. --bind, --data-dir, --config). The first start prints the admin token once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
(cd plugins && cargo build --release --locked)
cargo build --release --locked -p plover-host --bin plover
exec target/release/plover serve --plugins-dir plugins/target/wasm32-wasip2/release "$@"
