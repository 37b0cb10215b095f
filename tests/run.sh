#!/usr/bin/env bash
# The test command: builds what the end-to-end tests run (the `namesock` binary and
# libnamesock.so, in target/release), then runs every test of the workspace.
# Run it as root: the mobility scenarios build network namespaces.
# Extra arguments go to the test harnesses, e.g. `tests/run.sh mobility`.
#
# A test that cannot run here (not root, a missing program such as named or socat, a debug
# build) passes but says `SKIP <binary>::<test>: <reason>` (tests/src/skip.rs); the skips are
# listed and counted at the end. As root, or with NAMESOCK_REQUIRE_NO_SKIPS=1 (.ci/run sets it),
# any skip makes this script fail: there everything must run.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_log=$(mktemp "${TMPDIR:-/tmp}/namesock-skips.XXXXXX")
trap 'rm -f "$skip_log"' EXIT
export NAMESOCK_SKIP_LOG=$skip_log

require_no_skips=${NAMESOCK_REQUIRE_NO_SKIPS:-0}
if [[ $(id -u) == 0 ]]; then
    require_no_skips=1
fi

cargo build --release --workspace
status=0
cargo test --release --workspace --no-fail-fast -- --test-threads=2 "$@" || status=$?

skipped=$(sort "$skip_log" | uniq | wc -l)
echo
if ((skipped > 0)); then
    echo "$skipped tests skipped:"
    sort "$skip_log" | uniq | sed 's/^/  /'
    if ((require_no_skips)); then
        echo "FAILED: $skipped tests skipped, and here (root or NAMESOCK_REQUIRE_NO_SKIPS=1)" \
            "every test must run; install what they name (see .ci/run)"
        ((status != 0)) || status=1
    fi
else
    echo "0 tests skipped"
fi
exit "$status"
