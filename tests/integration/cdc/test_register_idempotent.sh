#!/usr/bin/env bash
# register.sh is idempotent: on a stack whose connector is registered, running it again
# (twice) reports "config unchanged", keeps the connector RUNNING and restarts no task
# (the worker's log shows no new "Starting task").
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
: "${STACK_DIR:?}" "${STACK_CONNECT_PORT:?}"
LOG="$STACK_DIR/logs/connect.log"
# shellcheck source=../../lib/checks.sh
. "$REPO/tests/lib/checks.sh"
starts_before="$(grep -c 'Starting task' "$LOG" || true)"
check '[ "$starts_before" -ge 1 ]' "the worker log records task starts ($starts_before so far)"
for i in 1 2; do
    out="$(CONNECT_URL="http://127.0.0.1:$STACK_CONNECT_PORT" "$REPO/connector-config/register.sh" 2>&1)" && rc=0 || rc=$?
    echo "$out"
    check '[ "$rc" = 0 ]' "run $i: register.sh exits 0"
    check 'grep -q "config unchanged" <<<"$out"' "run $i: config unchanged (no PUT)"
    check 'grep -q "RUNNING" <<<"$out"' "run $i: connector and task RUNNING"
done
starts_after="$(grep -c 'Starting task' "$LOG" || true)"
check '[ "$starts_before" = "$starts_after" ]' "no task restarted ($starts_before -> $starts_after 'Starting task' lines)"
checks_finish register_idempotent
