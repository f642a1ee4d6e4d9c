#!/usr/bin/env bash
# stack-fixture.sh up|down: the ctest fixture of the e2e tests (e2e_stack_up / e2e_stack_down).
# `up` starts a fresh private stack through scripts/stack (STACK_DIR and the private ports
# come from the environment that tests/e2e/CMakeLists.txt sets; jars, plugins and maildev
# in .cache/stack are reused), then push-email from E2E_PUSH_EMAIL_BIN (e2elib.py): the
# stack runs with STACK_SKIP=push-email because the tests kill and restart push-email
# themselves. `down` stops push-email, then the stack (logs kept in $STACK_DIR/logs).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
: "${STACK_DIR:?STACK_DIR must be set (by ctest)}"
: "${E2E_PUSH_EMAIL_BIN:?E2E_PUSH_EMAIL_BIN must be set (by ctest)}"
PY="${E2E_PYTHON3:-python3}"
case "${1:-}" in
up)
    # A stack left over from an interrupted run is stopped, then its data removed.
    if [ -d "$STACK_DIR" ]; then
        "$PY" "$HERE/e2elib.py" stop-push-email || true
        "$REPO/scripts/stack" down
        rm -rf "$STACK_DIR"
    fi
    t0=$SECONDS
    "$REPO/scripts/stack" up >"${STACK_DIR%/}.up.log" 2>&1 || {
        tail -n 60 "${STACK_DIR%/}.up.log"
        echo "e2e fixture: scripts/stack up FAILED" >&2
        exit 1
    }
    tail -n 12 "${STACK_DIR%/}.up.log"
    "$PY" "$HERE/e2elib.py" start-push-email
    "$REPO/scripts/stack" status || true
    echo "e2e fixture: stack up in $((SECONDS - t0))s (STACK_DIR=$STACK_DIR)"
    ;;
down)
    if [ -d "$STACK_DIR" ]; then
        "$PY" "$HERE/e2elib.py" stop-push-email || true
        "$REPO/scripts/stack" down
    fi
    echo "e2e fixture: stack down (logs kept in $STACK_DIR/logs)"
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
