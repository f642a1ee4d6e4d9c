#!/usr/bin/env bash
# stack-fixture.sh up|down: the ctest fixture of the CDC tests. `up` starts a fresh stack
# (new data dir, private ports from the environment that CMakeLists.txt sets) through
# scripts/stack; `down` stops it. Downloads in .cache/stack are reused.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
: "${STACK_DIR:?STACK_DIR must be set (by ctest)}"
case "${1:-}" in
up)
    # A stack left over from an interrupted run is stopped, then its data removed.
    if [ -d "$STACK_DIR" ]; then
        "$REPO/scripts/stack" down
        rm -rf "$STACK_DIR"
    fi
    t0=$SECONDS
    "$REPO/scripts/stack" up
    "$REPO/scripts/stack" status
    echo "cdc fixture: stack up in $((SECONDS - t0))s"
    ;;
down)
    if [ -d "$STACK_DIR" ]; then
        "$REPO/scripts/stack" down
    fi
    echo "cdc fixture: stack down (logs kept in $STACK_DIR/logs)"
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
