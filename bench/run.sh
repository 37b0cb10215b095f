#!/bin/sh
# Regenerates every benchmark figure of namesock (issue 8): the criterion benches of the wire
# codec and the session, the GNS figures, and the end-to-end suite between network namespaces
# (namesock against plain TCP, socat and MPTCP), writing bench/results/, then rewrites the
# README's benchmark section from those results (bench-readme). Needs iproute2, nftables, socat,
# mptcpize (Debian package `mptcpize`), gnuplot-nox (for the PNG) and BIND9 (for the GNS figures). The suite needs
# root: run this as root, or as a user with sudo (then only the suite runs under sudo).
#
#   bench/run.sh                      # everything, 5 runs per figure
#   bench/run.sh --runs 3 --only bulk,rr    # options go to nsbench-suite
#
# The previous release's column (bulk, CPU, rr, ttfb, link) needs its binaries, built in a
# checkout of its own (protocol 1 and 2 do not interoperate, so both ends run them), e.g.:
#
#   git worktree add --detach ../baseline e6044a5 && cp -a target ../baseline/
#   (cd ../baseline && cargo build --release --workspace --bins --examples)
#   bench/run.sh --runs 3 --baseline-bin ../baseline/target/release
#
# Not part of tests/run.sh or CI: these are measurements, not timed tests.
set -eu
cd "$(dirname "$0")/.."
out=bench/results
mkdir -p "$out"

# Run "$@" as root: directly when we are root, otherwise through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "bench/run.sh: the suite needs root (network namespaces), and sudo is not installed" >&2
        exit 1
    fi
}

# Two builds: with --bins --examples, cargo leaves the preload library (a cdylib) as it was.
cargo build --release --workspace
cargo build --release --workspace --examples
if [ -z "${NB_SKIP_CRITERION:-}" ]; then
    cargo bench -p namesock --bench wire --bench session -- --noplot 2>&1 | tee "$out/criterion.txt"
fi
if [ -z "${NB_SKIP_GNS:-}" ]; then
    # A pin file of its own: the user's grows with every name seen, and each publish and
    # lookup rewrites it (3,000 pins on the build machine made publish -> visible 7.9 ms
    # instead of 0.5 ms).
    known=$(mktemp -d)
    NAMESOCK_KNOWN_NAMES="$known/known_names" cargo bench -p namesock-resolver --bench gns 2>&1 |
        tee "$out/gns.txt"
    rm -rf "$known"
fi
uname -r >"$out/machine.txt"
nproc >>"$out/machine.txt"
free -g | awk '/Mem:/ {print $2 " GiB"}' >>"$out/machine.txt"
uptime >>"$out/machine.txt"
date -u '+%Y-%m-%d %H:%M UTC' >>"$out/machine.txt"
as_root target/release/nsbench-suite --out "$out" --gns "$out/gns.txt" "$@"
if [ "$(id -u)" -ne 0 ]; then
    as_root chown -R "$(id -u):$(id -g)" "$out"
fi
target/release/bench-readme --results "$out" --readme README.md
