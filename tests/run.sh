#!/usr/bin/env bash
# The test command: builds what the end-to-end tests run (the `namesock` binary and
# libnamesock.so, in target/release), then runs every test of the workspace.
# Run it as root: the mobility scenarios build network namespaces (without root they skip).
# Extra arguments go to the test harnesses, e.g. `tests/run.sh mobility`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
cargo test --release --workspace --no-fail-fast -- --test-threads=2 "$@"
