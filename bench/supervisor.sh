#!/bin/sh
# Per-intercepted-call cost of the seccomp supervisor (issue 17), written to
# bench/results/supervisor.txt: a static C program (bench/supervisor/callcost.c) timed plainly
# and under `namesock run --supervise`, for an untrapped system call (getpid), a trapped
# plain-address connect (+ accept + close on loopback) and a DNS lookup of a zone name (answered
# by the supervisor's stub). Needs gcc with the static C library (libc6-dev). Not part of the
# tests: these are measurements.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p namesock-cli
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -O2 -static -o "$work/callcost" bench/supervisor/callcost.c 2>/dev/null
ns=target/release/namesock
export NAMESOCK_GNS="file:$work/gns" NAMESOCK_ZONE=ns.alt XDG_RUNTIME_DIR="$work" \
    NAMESOCK_KEY="$work/key"
mkdir -p "$work/gns"
"$ns" keygen >/dev/null
"$ns" publish --addr 192.0.2.1:4000 --name bench >/dev/null
"$ns" register bench >/dev/null
out=bench/results/supervisor.txt
{
    echo "# namesock supervisor, per-call cost (bench/supervisor.sh, $(date -u +%F))"
    echo "# kernel $(uname -r), $(nproc) cores; best of 3 runs each"
    for case in "getpid 2000000" "connect 20000" "resolve bench.ns.alt 2000"; do
        modes="plain supervised"
        # Without the supervisor a zone name does not resolve: nothing to compare.
        [ "${case%% *}" = resolve ] && modes=supervised
        for mode in $modes; do
            best=
            for _ in 1 2 3; do
                if [ $mode = plain ]; then
                    # shellcheck disable=SC2086
                    line=$("$work/callcost" $case 2>&1) || line="$line"
                else
                    # shellcheck disable=SC2086
                    line=$("$ns" run --supervise -- "$work/callcost" $case 2>&1) || line="$line"
                fi
                v=$(echo "$line" | awk '/ns per call/ {print $2}')
                [ -n "$v" ] || { echo "$mode $case: $line"; continue; }
                if [ -z "$best" ] || [ "$v" -lt "$best" ]; then best=$v; fi
            done
            echo "$mode ${case%% *}: ${best:-n/a} ns per call"
        done
    done
} | tee "$out"
