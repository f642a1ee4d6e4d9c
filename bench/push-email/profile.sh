#!/usr/bin/env bash
# bench/push-email/profile.sh: push-email under callgrind (with syscall wall time,
# --collect-systime=nsec) consuming N synthetic create events into the bench sink.
# Run run.sh first (it builds). Same resources as run.sh: topic bench.info-user.prof.<pid>
# (deleted), database notifications_bench (dropped), sink on SINK_PORT, health 18093.
#   N=1000 bench/push-email/profile.sh   -> $BUILD/bench-push-email/callgrind.out.*
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="${BUILD_DIR:-$REPO/build-bench-pe}"
N="${N:-1000}"
SINK_PORT="${SINK_PORT:-2525}"
OUT="$BUILD/bench-push-email"
TOPIC="bench.info-user.prof.$$"
DBH=(-h127.0.0.1 -P3307 -uroot)
mkdir -p "$OUT"
/usr/bin/python3 "$HERE/gen_events.py" "$N" "prof$$" >"$OUT/prof-events.tsv"
kcat -P -b 127.0.0.1:9092 -t "$TOPIC" -K $'\t' -l "$OUT/prof-events.tsv"
mysql "${DBH[@]}" -e "DROP DATABASE IF EXISTS notifications_bench; CREATE DATABASE notifications_bench"
: >"$OUT/sink-prof.log"
/usr/bin/python3 "$HERE/sink.py" --port "$SINK_PORT" --log "$OUT/sink-prof.log" >/dev/null 2>&1 &
SINK=$!
sleep 1
PUSH_EMAIL_TOPIC="$TOPIC" PUSH_EMAIL_GROUP_ID="bench-pe-prof-$$" PUSH_EMAIL_DB_NAME=notifications_bench \
PUSH_EMAIL_HEALTH_PORT=18093 PUSH_EMAIL_SMTP_URL="smtp://127.0.0.1:$SINK_PORT" PUSH_EMAIL_DB_USER=root \
PUSH_EMAIL_DLQ_TOPIC="bench.info-user.dlq.$$" PUSH_EMAIL_LOG_LEVEL=warn \
PUSH_EMAIL_TEMPLATES_DIR="$REPO/services/push-email/templates" \
PUSH_EMAIL_MIGRATIONS_DIR="$REPO/services/push-email/migrations" \
    valgrind --tool=callgrind --collect-systime=nsec --callgrind-out-file="$OUT/callgrind.out.%p" \
    "$BUILD/services/push-email/push-email" >"$OUT/prof-pe.log" 2>&1 &
PE=$!
T0=$(date +%s)
while [ "$(wc -l <"$OUT/sink-prof.log")" -lt "$N" ] && [ $(($(date +%s) - T0)) -lt 600 ]; do sleep 0.5; done
echo "emails: $(wc -l <"$OUT/sink-prof.log") in $(($(date +%s) - T0)) s (under valgrind)"
kill -TERM "$PE"; wait "$PE" || true
kill -TERM "$SINK"; wait "$SINK" || true
mysql "${DBH[@]}" -e "DROP DATABASE IF EXISTS notifications_bench"
"$BUILD/tools/kafka_topic" 127.0.0.1:9092 delete "$TOPIC"
ls -1 "$OUT"/callgrind.out.*
