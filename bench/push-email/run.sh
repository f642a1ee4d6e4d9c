#!/usr/bin/env bash
# bench/push-email/run.sh: push-email throughput into a local SMTP sink versus a bare libcurl
# send loop (bench/push-email/baseline.c), its RSS under load, and the end-to-end latency
# REST commit -> email accepted on the local stack. See bench/README.md ("push-email").
#
# Needs the local stack running (scripts/stack up: MariaDB 3307, Kafka 9092, Connect with the
# Debezium connector, userdata 8080). Touches none of its parts: it uses its own topic
# (bench.info-user.<pid>, deleted at the end), its own consumer groups, its own delivery-log
# databases (notifications_bench, notifications_bench_lat; dropped at the end), its own SMTP
# sinks (sink.py on SINK_PORT / SINK_PORT+1) and its own push-email processes (health ports
# HEALTH_PORT / HEALTH_PORT+1). The latency phase reads the real cdc.info-user with a fresh
# group, so it first mails the topic's whole history into its own sink and waits for that.
#
# Settings (environment):
#   PHASES      "throughput latency" or one of them          (default both)
#   N           synthetic create events / baseline messages  (default 5000)
#   M           PATCHes in the latency run                   (default 300)
#   LAT_USERS   users created for the latency run            (default 10)
#   INTERVAL    seconds between PATCHes                      (default 0.1)
#   SINK_PORT   first sink port                              (default 2525)
#   HEALTH_PORT push-email health port of the throughput run (default 18091)
#   BUILD_DIR   build directory                              (default <repo>/build-bench-pe)
#   KEEP=1      keep databases and the topic
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="${BUILD_DIR:-$REPO/build-bench-pe}"
PHASES="${PHASES:-throughput latency}"
N="${N:-5000}"
M="${M:-300}"
LAT_USERS="${LAT_USERS:-10}"
INTERVAL="${INTERVAL:-0.1}"
SINK_PORT="${SINK_PORT:-2525}"
HEALTH_PORT="${HEALTH_PORT:-18091}"
OUT="$BUILD/bench-push-email"
PY=/usr/bin/python3 # Debian's python3, which has python3-aiosmtpd
BROKERS="${KAFKA_BOOTSTRAP:-127.0.0.1:9092}"
DBH=(-h127.0.0.1 -P"${MARIADB_PORT:-3307}" -uroot)
TOPIC="bench.info-user.$$"
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ]; then
        mysql "${DBH[@]}" -e "DROP DATABASE IF EXISTS notifications_bench; DROP DATABASE IF EXISTS notifications_bench_lat" || true
        [ -n "${TOPIC_MADE:-}" ] && "$BUILD/tools/kafka_topic" "$BROKERS" delete "$TOPIC" >&2 || true
    fi
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ build --
log "building (Release) into $BUILD"
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_BENCH=ON -DBUILD_TESTING=OFF \
    >"$BUILD.cmake.log" 2>&1 || { cat "$BUILD.cmake.log" >&2; die "cmake failed"; }
cmake --build "$BUILD" -j"$(nproc)" --target push-email push_email_baseline \
    kafka_topic >"$BUILD.build.log" 2>&1 || { tail -40 "$BUILD.build.log" >&2; die "build failed"; }
rm -f "$BUILD.cmake.log" "$BUILD.build.log"
PE="$BUILD/services/push-email/push-email"
mkdir -p "$OUT"

# --------------------------------------------------------------------------- helpers --
start_sink() { # port logfile [extra args] -> pid in SINK_PID
    local port=$1 logf=$2
    shift 2
    : >"$logf"
    "$PY" "$HERE/sink.py" --port "$port" --log "$logf" "$@" >"$logf.out" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    for _ in $(seq 50); do grep -q listening "$logf.out" 2>/dev/null && return 0; sleep 0.1; done
    die "sink on $port did not start: $(cat "$logf.out")"
}
start_pe() { # topic group db health_port smtp_port logfile -> PE_PID
    PUSH_EMAIL_TOPIC=$1 PUSH_EMAIL_GROUP_ID=$2 PUSH_EMAIL_DB_NAME=$3 PUSH_EMAIL_HEALTH_PORT=$4 \
        PUSH_EMAIL_SMTP_URL="smtp://127.0.0.1:$5" PUSH_EMAIL_DB_USER=root \
        PUSH_EMAIL_DB_PORT="${MARIADB_PORT:-3307}" PUSH_EMAIL_KAFKA_BROKERS="$BROKERS" \
        PUSH_EMAIL_DLQ_TOPIC="bench.info-user.dlq.$$" PUSH_EMAIL_LOG_LEVEL=warn \
        PUSH_EMAIL_TEMPLATES_DIR="$REPO/services/push-email/templates" \
        PUSH_EMAIL_MIGRATIONS_DIR="$REPO/services/push-email/migrations" \
        "$PE" >"$6" 2>&1 &
    PE_PID=$!
    PIDS+=("$PE_PID")
}
metric() { # port name
    curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v n="$2" '$1==n {print $2}'
}
rss_sampler() { # pid outfile: VmRSS kB every 0.2 s
    while [ -r "/proc/$1/status" ]; do
        awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null >>"$2" || true
        sleep 0.2
    done
}
cpu_idle_pct() { # the machine's idle share over one second, in %
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    echo $(((b[4] - a[4] + b[5] - a[5]) * 100 / (total > 0 ? total : 1)))
}
settle() { # waits (up to 60 s) until the machine is quiet: >= 85 % idle over a second. After
    # push-email's run, the stack goes on working for a while (Kafka, and Connect when the
    # delivery log was in the binlog); a baseline measured meanwhile would be slowed by that
    # and flatter the ratio.
    local t0=$SECONDS idle
    while :; do
        idle=$(cpu_idle_pct)
        [ "$idle" -ge 85 ] && break
        [ $((SECONDS - t0)) -lt 60 ] || { log "settle: still only ${idle}% idle after 60 s"; break; }
    done
    log "settled: ${idle}% idle (waited $((SECONDS - t0)) s)"
}
rate_from_sink() { # logfile: messages, first..last seconds, msgs/s over (n-1)/(last-first)
    awk -F'\t' 'NR==1{f=$1} {l=$1; n++} END {d=l-f; printf "%d %.3f %.1f\n", n, d, (n-1)/d}' "$1"
}

# --------------------------------------------------------------------------- throughput --
if [[ " $PHASES " == *" throughput "* ]]; then
    log "generating $N create events into topic $TOPIC"
    "$PY" "$HERE/gen_events.py" "$N" "$$" >"$OUT/events.tsv"
    TOPIC_MADE=1
    kcat -P -b "$BROKERS" -t "$TOPIC" -K $'\t' -l "$OUT/events.tsv"
    got=$(kcat -C -b "$BROKERS" -t "$TOPIC" -o beginning -e -q -f '%o\n' | wc -l)
    [ "$got" -eq "$N" ] || die "topic holds $got events, expected $N"

    mysql "${DBH[@]}" -e "DROP DATABASE IF EXISTS notifications_bench; CREATE DATABASE notifications_bench"
    start_sink "$SINK_PORT" "$OUT/sink-pe.log" --sample "$OUT/sample.eml"
    settle
    log "push-email: consuming $N events into the sink on $SINK_PORT"
    T0=$(date +%s.%N)
    start_pe "$TOPIC" "bench-pe-$$" notifications_bench "$HEALTH_PORT" "$SINK_PORT" "$OUT/push-email.log"
    : >"$OUT/rss.txt"
    "$PY" "$HERE/watch.py" --pid "$PE_PID" --sink-log "$OUT/sink-pe.log" --count "$N" \
        --rss "$OUT/rss.txt" --timeout 600 ||
        die "push-email did not send $N emails: $(tail -5 "$OUT/push-email.log")"
    T1=$(date +%s.%N)
    HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$PE_PID/status")
    sent=$(metric "$HEALTH_PORT" push_email_emails_sent_total)
    ded=$(metric "$HEALTH_PORT" push_email_emails_deduped_total)
    fail=$(metric "$HEALTH_PORT" push_email_emails_failed_total)
    retr=$(metric "$HEALTH_PORT" push_email_retries_total)
    kill -TERM "$PE_PID"
    wait "$PE_PID" || true
    read -r pe_n pe_span pe_rate < <(rate_from_sink "$OUT/sink-pe.log")
    wall=$(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.3f", b-a}')
    wall_rate=$(awk -v n="$N" -v w="$wall" 'BEGIN {printf "%.1f", n/w}')
    rss_peak=$(sort -n "$OUT/rss.txt" | tail -1)
    rss_med=$(sort -n "$OUT/rss.txt" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    dbrows=$(mysql "${DBH[@]}" -N -e "SELECT COUNT(*) FROM notifications_bench.deliveries WHERE state='sent'")
    size=$(stat -c %s "$OUT/sample.eml")
    log "push-email: $pe_n emails, first->last accepted ${pe_span} s = $pe_rate emails/s; process start->last ${wall} s = $wall_rate/s; sent=$sent deduped=$ded failed=$fail retries=$retr; delivery log sent rows $dbrows; RSS peak ${rss_peak} kB median ${rss_med} kB VmHWM ${HWM} kB"

    kill -TERM "$SINK_PID"; wait "$SINK_PID" || true
    start_sink "$SINK_PORT" "$OUT/sink-base.log"
    settle
    log "baseline: $N messages of $size bytes"
    "$BUILD/bench/push_email_baseline" --url "smtp://127.0.0.1:$SINK_PORT" --file "$OUT/sample.eml" \
        --count "$N" >"$OUT/baseline.txt" &
    B_PID=$!
    # The same watcher as push-email's phase, so both phases carry the same harness load.
    "$PY" "$HERE/watch.py" --pid "$B_PID" --sink-log "$OUT/sink-base.log" --count "$N" \
        --rss "$OUT/rss-base.txt" --timeout 600 || true
    wait "$B_PID" || die "baseline failed: $(cat "$OUT/baseline.txt")"
    cat "$OUT/baseline.txt" >&2
    sleep 0.5
    kill -TERM "$SINK_PID"; wait "$SINK_PID" || true
    read -r b_n b_span b_rate < <(rate_from_sink "$OUT/sink-base.log")
    ratio=$(awk -v a="$pe_rate" -v b="$b_rate" 'BEGIN {printf "%.2f", a/b}')
    {
        echo "| N | msg bytes | push-email events/s = emails/s (sink, first->last) | push-email emails/s (process start->last) | baseline emails/s (sink) | ratio | RSS peak MiB (VmHWM) | RSS median MiB |"
        echo "|---|---|---|---|---|---|---|---|"
        awk -v n="$N" -v s="$size" -v r="$pe_rate" -v w="$wall_rate" -v b="$b_rate" -v q="$ratio" \
            -v h="$HWM" -v m="$rss_med" 'BEGIN {printf "| %d | %d | %s | %s | %s | **%s** | %.1f | %.1f |\n", n, s, r, w, b, q, h/1024, m/1024}'
    } | tee "$OUT/throughput.md"
fi

# --------------------------------------------------------------------------- latency --
if [[ " $PHASES " == *" latency "* ]]; then
    LPORT=$((SINK_PORT + 1))
    LHEALTH=$((HEALTH_PORT + 1))
    mysql "${DBH[@]}" -e "DROP DATABASE IF EXISTS notifications_bench_lat; CREATE DATABASE notifications_bench_lat"
    start_sink "$LPORT" "$OUT/sink-lat.jsonl" --raw
    start_pe cdc.info-user "bench-pe-lat-$$-$(date +%s)" notifications_bench_lat "$LHEALTH" "$LPORT" "$OUT/push-email-lat.log"
    log "latency: push-email on cdc.info-user (fresh group) catching up on the topic history"
    quiet=0
    last=-1
    deadline=$(($(date +%s) + 600))
    while :; do
        sleep 1
        kill -0 "$PE_PID" 2>/dev/null || die "push-email exited: $(tail -5 "$OUT/push-email-lat.log")"
        n=$(wc -l <"$OUT/sink-lat.jsonl")
        lag=$(metric "$LHEALTH" push_email_consumer_lag)
        if [ "$n" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi
        last=$n
        [ "$n" -gt 0 ] && [ "$quiet" -ge 6 ] && [ "${lag:-1}" = 0 ] && break
        [ "$(date +%s)" -lt "$deadline" ] || die "catch-up timeout"
    done
    log "latency: caught up ($n history emails); $M PATCHes over $LAT_USERS users"
    : >"$OUT/rss-lat.txt"
    rss_sampler "$PE_PID" "$OUT/rss-lat.txt" &
    "$PY" "$HERE/latency.py" --sink-log "$OUT/sink-lat.jsonl" --users "$LAT_USERS" --updates "$M" \
        --interval "$INTERVAL" --out "$OUT" | tee "$OUT/latency.txt"
    sleep 3 # the account_deleted emails of the cleanup
    log "latency run: push-email VmHWM $(awk '/^VmHWM/ {print $2}' "/proc/$PE_PID/status") kB (includes the catch-up)"
fi
log "results in $OUT"
