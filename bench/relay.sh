#!/bin/sh
# Relay figures (issue 16), written to bench/results/relay.txt: throughput and the added round
# trip through a relay against direct, memory per relayed session, outages of moves through a
# relay (server behind NAT, client, both, a relay killed) and through the proxy relay, and the
# bandwidth limit. The figures come from the end-to-end scenarios of tests/tests/relay.rs
# (network namespaces, real programs), which print them as `RELAY ...` lines; this script runs
# them and keeps those lines. Needs root (namespaces) and what the tests need (see .ci/run).
# Not part of the tests: these are measurements.
set -eu
cd "$(dirname "$0")/.."
cargo build --release --workspace
out=bench/results/relay.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release -p namesock-tests --test relay -- --nocapture --test-threads=1 >"$log" 2>&1 || {
    cat "$log"
    exit 1
}
{
    echo "# namesock relay figures (bench/relay.sh, $(date -u '+%F %H:%M UTC'))"
    echo "# kernel $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    grep -o 'RELAY .*' "$log"
} >"$out"
cat "$out"
