#!/usr/bin/env bash
# bench/userdata/run.sh: throughput and latency of userdata's GET and PUT /api/v1/users/{id}
# under wrk, against a C baseline doing the same prepared statements directly.
#
#   bench/userdata/run.sh            (from anywhere; see bench/README.md)
#
# Steps: build (Release, -DBUILD_BENCH=ON) into build-bench/; start a private MariaDB with
# scripts/lib/test-mariadb.sh (same server settings as the test one, but its own data dir
# and port, BENCH_DB_DIR / BENCH_DB_PORT: the integration tests stop and restart the shared
# 3317 instance, which would break a run; set BENCH_DB_PORT=3317 BENCH_DB_DIR= to use it
# anyway); it is stopped again at the end only when this script started it; create a fresh
# database userdata_bench; seed USERS users through
# the API; then, for each wrk connection count in CONNS, restart `userdata serve` and run
# wrk (GET, then PUT) and the baseline at the same concurrency and duration, sampling the
# service's RSS. Prints a table (also written to $OUT/results.md) with service/baseline
# ratios. 127.0.0.1 only. Every run is bounded by DURATION.
#
# Settings (environment):
#   CONNS        wrk connections = baseline threads, a list      (default "8 32 64")
#   DURATION     seconds measured per run                        (default 20)
#   WARMUP       seconds of unmeasured load before each run      (default 3)
#   WRK_THREADS  wrk -t                                          (default 2)
#   SVC_THREADS  USERDATA_THREADS (MHD pool); "conns" = CONNS    (default 8, the service default)
#   SVC_POOL     USERDATA_DB_POOL_SIZE; 0 = the service default (threads + PWHASH_PARALLEL)  (default 0)
#   USERS        users to seed                                   (default 10000)
#   MODES        "get put" or a subset                           (default "get put")
#   BENCH_DB_PORT  port of the MariaDB used                      (default 3341)
#   BENCH_DB_DIR   its state dir; empty = the test default       (default <build>/bench-mariadb)
#   KEEP_DB=1    keep the userdata_bench database at the end
#   BUILD_DIR    build directory                                 (default <repo>/build-bench)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BUILD="${BUILD_DIR:-$REPO/build-bench}"
CONNS="${CONNS:-8 32 64}"
DURATION="${DURATION:-20}"
WARMUP="${WARMUP:-3}"
WRK_THREADS="${WRK_THREADS:-2}"
SVC_THREADS="${SVC_THREADS:-8}"
SVC_POOL="${SVC_POOL:-0}"
USERS="${USERS:-10000}"
MODES="${MODES:-get put}"
OUT="$BUILD/bench-userdata"
DB_NAME=userdata_bench
JWT_SECRET="bench-secret-$(date +%s)-$$-0123456789abcdef"
WRK="${WRK:-/usr/bin/wrk}"

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# ------------------------------------------------------------------------------ build --
log "building (Release, BUILD_BENCH=ON) into $BUILD"
cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_BENCH=ON -DBUILD_TESTING=OFF \
    >"$BUILD.cmake.log" 2>&1 || {
    cat "$BUILD.cmake.log" >&2
    die "cmake configure failed"
}
cmake --build "$BUILD" -j"$(nproc)" --target userdata userdata_baseline >"$BUILD.build.log" 2>&1 || {
    tail -n 40 "$BUILD.build.log" >&2
    die "build failed"
}
rm -f "$BUILD.cmake.log" "$BUILD.build.log"
USERDATA="$BUILD/services/userdata/userdata"
BASELINE="$BUILD/bench/userdata_baseline"
[ -x "$USERDATA" ] && [ -x "$BASELINE" ] || die "binaries missing after the build"
[ -x "$WRK" ] || die "wrk not found at $WRK (apt-get install wrk)"
mkdir -p "$OUT"

# --------------------------------------------------------------------------- database --
DB_CTL="$REPO/scripts/lib/test-mariadb.sh"
export TEST_DB_PORT="${BENCH_DB_PORT:-3341}"
if [ -n "${BENCH_DB_DIR-$BUILD/bench-mariadb}" ]; then
    export TEST_DB_DIR="${BENCH_DB_DIR-$BUILD/bench-mariadb}"
else
    unset TEST_DB_DIR
fi
DB_STARTED=0
if ! "$DB_CTL" status >/dev/null 2>&1; then
    log "starting the private test MariaDB"
    "$DB_CTL" start
    DB_STARTED=1
fi
eval "$("$DB_CTL" env)"

sql() {
    mariadb --no-defaults --protocol=tcp -h"$TEST_DB_HOST" -P"$TEST_DB_PORT" -u"$TEST_DB_USER" \
        -p"$TEST_DB_PASSWORD" "$@"
}

SVC_PID=""
SAMPLER_PID=""
stop_service() {
    if [ -n "$SVC_PID" ] && kill -0 "$SVC_PID" 2>/dev/null; then
        kill -TERM "$SVC_PID" 2>/dev/null || true
        wait "$SVC_PID" 2>/dev/null || true
    fi
    SVC_PID=""
}
cleanup() {
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
    fi
    stop_service
    if [ "${KEEP_DB:-0}" != 1 ]; then
        sql -e "DROP DATABASE IF EXISTS $DB_NAME" 2>/dev/null || true
    fi
    if [ "$DB_STARTED" = 1 ]; then
        log "stopping the test MariaDB (this script started it)"
        "$DB_CTL" stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "fresh database $DB_NAME"
sql -e "DROP DATABASE IF EXISTS $DB_NAME; CREATE DATABASE $DB_NAME"

# ---------------------------------------------------------------------------- service --
# A port below the usual ephemeral range (32768-60999) that nothing listens on; a port
# can still be taken between this check and the bind, so start_service retries.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((12000 + RANDOM % 20000))
        if ! ss -Htan "sport = :$p" | grep -q . &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# start_service THREADS POOL LOGFILE [extra VAR=value ...]
start_service() {
    local threads="$1" pool="$2" logfile="$3" try
    shift 3
    for try in 1 2 3 4 5; do
        PORT="$(free_port)" || die "no free port"
        start_service_on "$threads" "$pool" "$logfile" "$@" && return 0
        grep -q "cannot listen" "$logfile" || break
        log "port $PORT was taken; trying another"
    done
    cat "$logfile" >&2
    die "userdata did not start"
}

# start_service_on THREADS POOL LOGFILE [VAR=value ...]: on $PORT; fails when it exits.
start_service_on() {
    local threads="$1" pool="$2" logfile="$3"
    shift 3
    env USERDATA_LISTEN_ADDR=127.0.0.1 USERDATA_PORT="$PORT" \
        USERDATA_THREADS="$threads" USERDATA_DB_POOL_SIZE="$pool" \
        USERDATA_DB_HOST="$TEST_DB_HOST" USERDATA_DB_PORT="$TEST_DB_PORT" \
        USERDATA_DB_USER="$TEST_DB_USER" USERDATA_DB_PASSWORD="$TEST_DB_PASSWORD" \
        USERDATA_DB_NAME="$DB_NAME" USERDATA_JWT_SECRET="$JWT_SECRET" \
        USERDATA_LOG_LEVEL=warn "$@" \
        "$USERDATA" serve >"$logfile" 2>&1 &
    SVC_PID=$!
    local deadline=$((SECONDS + 30))
    until curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz"; do
        if ! kill -0 "$SVC_PID" 2>/dev/null; then
            wait "$SVC_PID" 2>/dev/null || true
            SVC_PID=""
            return 1
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "userdata not ready after 30s"
        sleep 0.2
    done
}

TOKEN="$(USERDATA_JWT_SECRET="$JWT_SECRET" "$USERDATA" token --scope "users:read users:write" \
    --ttl 86400)"

# ------------------------------------------------------------------------------- seed --
# Through the API (POST /api/v1/users), so ids and every column are what the service
# produces. Only for seeding, the password hash is made cheap (argon2id ops 1, 8 KiB): the
# benchmark's PUTs carry no password, so no hash is computed during the measured runs, and
# the service is restarted with its default settings afterwards.
log "seeding $USERS users through the API (curl --parallel; cheap password hash for seeding)"
start_service 8 8 "$OUT/userdata-seed.log" USERDATA_PWHASH_OPSLIMIT=1 \
    USERDATA_PWHASH_MEMLIMIT_KIB=8 USERDATA_PWHASH_PARALLEL=1
SEED_CFG="$OUT/seed.curl"
for i in $(seq 1 "$USERS"); do
    printf -v n '%05d' "$i"
    [ "$i" = 1 ] || echo next # a trailing "next" would be an empty transfer
    cat <<EOF
url = "http://127.0.0.1:$PORT/api/v1/users"
header = "Content-Type: application/json"
header = "Authorization: Bearer $TOKEN"
data = "{\"username\":\"bench$n\",\"email\":\"bench$n@example.org\",\"password\":\"bench-password-$n\",\"full_name\":\"Bench User $n\",\"date_of_birth\":\"1990-01-01\",\"address\":\"1 Bench Street, Testville\",\"locale\":\"en\",\"status\":\"CONFIRMED\"}"
output = "/dev/null"
write-out = "%{http_code}\n"
EOF
done >"$SEED_CFG"
t0=$SECONDS
curl -sS --no-progress-meter --parallel --parallel-max 16 -K "$SEED_CFG" >"$OUT/seed.codes" 2>"$OUT/seed.err" || true
created="$(grep -c '^201$' "$OUT/seed.codes" || true)"
log "seeded: $created x 201 in $((SECONDS - t0))s"
[ "$created" = "$USERS" ] || die "expected $USERS x 201, got $created (see $OUT/seed.codes)"
stop_service
rm -f "$SEED_CFG"
IDS="$OUT/ids.txt"
sql -N -B -e "SELECT id, username, email FROM $DB_NAME.users ORDER BY username" |
    tr '\t' ' ' >"$IDS"
[ "$(wc -l <"$IDS")" = "$USERS" ] || die "ids file has $(wc -l <"$IDS") lines"

# ------------------------------------------------------------------------------- runs --
kv() { # kv KEY LINE -> value of KEY=value in LINE
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# Samples VmRSS of $1 every 0.2 s; writes the maximum (KiB) to $2 on exit.
rss_sampler() {
    local pid="$1" out="$2" max=0 v
    trap 'echo "$max" >"$out"; exit 0' TERM
    while kill -0 "$pid" 2>/dev/null; do
        v="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
        [ -n "$v" ] && [ "$v" -gt "$max" ] && max="$v"
        echo "$max" >"$out"
        sleep 0.2 &
        wait $!
    done
}

proc_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

export BENCH_IDS="$IDS" BENCH_TOKEN="$TOKEN"
RESULTS="$OUT/results.tsv"
printf 'mode\tconns\tsvc_threads\tsvc_rps\tsvc_p50\tsvc_p99\tbase_ops\tbase_p50\tbase_p99\tratio\trss_peak_mib\thwm_mib\n' >"$RESULTS"

for c in $CONNS; do
    threads="$SVC_THREADS"
    [ "$threads" = conns ] && threads="$c"
    log "c=$c: starting userdata (USERDATA_THREADS=$threads USERDATA_DB_POOL_SIZE=$SVC_POOL)"
    start_service "$threads" "$SVC_POOL" "$OUT/userdata-c$c.log"
    log "c=$c: idle RSS $(proc_kib "$SVC_PID" VmRSS) KiB"
    for mode in $MODES; do
        url="http://127.0.0.1:$PORT/"
        "$WRK" -t"$WRK_THREADS" -c"$c" -d"${WARMUP}s" -s "$HERE/$mode.lua" "$url" >/dev/null
        rss_file="$OUT/rss-$mode-c$c"
        rss_sampler "$SVC_PID" "$rss_file" &
        SAMPLER_PID=$!
        log "c=$c $mode: wrk -t$WRK_THREADS -c$c -d${DURATION}s --latency"
        "$WRK" -t"$WRK_THREADS" -c"$c" -d"${DURATION}s" --latency -s "$HERE/$mode.lua" "$url" \
            >"$OUT/wrk-$mode-c$c.txt"
        kill -TERM "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
        rss_peak="$(cat "$rss_file")"
        hwm="$(proc_kib "$SVC_PID" VmHWM)"
        w="$(grep '^WRK ' "$OUT/wrk-$mode-c$c.txt")"
        log "c=$c $mode: service $w rss_peak_kib=$rss_peak hwm_kib=$hwm"
        if [ "$(kv errors "$w")" != 0 ] || [ "$(kv non2xx "$w")" != 0 ]; then
            log "warning: wrk saw errors or non-2xx answers (see $OUT/wrk-$mode-c$c.txt)"
        fi
        log "c=$c $mode: baseline --threads $c --duration $DURATION"
        b="$("$BASELINE" --mode "$mode" --ids "$IDS" --threads "$c" --duration "$DURATION" \
            --warmup "$WARMUP" --host "$TEST_DB_HOST" --port "$TEST_DB_PORT" \
            --user "$TEST_DB_USER" --password "$TEST_DB_PASSWORD" --database "$DB_NAME")" ||
            log "warning: the baseline reported errors: $b"
        log "c=$c $mode: baseline $b"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$c" "$threads" \
            "$(kv rps "$w")" "$(kv p50_ms "$w")" "$(kv p99_ms "$w")" \
            "$(kv ops_per_s "$b")" "$(kv p50_ms "$b")" "$(kv p99_ms "$b")" \
            "$(awk -v s="$(kv rps "$w")" -v b="$(kv ops_per_s "$b")" \
                'BEGIN {printf "%.2f", (b > 0) ? s / b : 0}')" \
            "$(awk -v k="$rss_peak" 'BEGIN {printf "%.1f", k / 1024}')" \
            "$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}')" >>"$RESULTS"
    done
    stop_service
done

# ------------------------------------------------------------------------------ table --
{
    echo "| mode | wrk -c / baseline threads | USERDATA_THREADS | service req/s | service p50 ms | service p99 ms | baseline ops/s | baseline p50 ms | baseline p99 ms | ratio service/baseline | service RSS peak MiB (VmHWM) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    tail -n +2 "$RESULTS" | while IFS=$'\t' read -r mode c th rps p50 p99 bops bp50 bp99 ratio rss hwm; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s (%s) |\n' \
            "$(echo "$mode" | tr a-z A-Z)" "$c" "$th" "$rps" "$p50" "$p99" "$bops" "$bp50" \
            "$bp99" "$ratio" "$rss" "$hwm"
    done
} >"$OUT/results.md"
echo
echo "nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)\"" \
    "mem=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)" \
    "duration=${DURATION}s warmup=${WARMUP}s wrk_threads=$WRK_THREADS date=$(date -u +%FT%TZ)"
cat "$OUT/results.md"
