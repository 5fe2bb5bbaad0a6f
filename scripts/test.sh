#!/usr/bin/env bash
# Runs every test. On a fresh machine this is the only command needed: it installs the guest
# target, checks the services, and `cargo test` builds every plugin and fixture from source
# (the plover-tests build script) before running the unit, integration and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --services
cargo test --workspace --locked "$@"
