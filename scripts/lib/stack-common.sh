# shellcheck shell=bash
# stack-common.sh: settings, paths and process helpers of scripts/stack.
# Sourced, never run. Everything here is keyed by STACK_DIR, so that a second stack
# (the integration tests use one on private ports) never touches the first.
#
# Settings (environment; defaults are the ports of DESIGN.md section 9):
#   STACK_DIR            runtime state: data, logs, pid files, secrets, env (default .stack)
#   STACK_CACHE          downloads: jars, Debezium plugins, maildev (default .cache/stack);
#                        shared by every stack, reused when present
#   STACK_DB_PORT        MariaDB (3307)            STACK_KAFKA_PORT      Kafka (9092)
#   STACK_CONTROLLER_PORT  KRaft controller (9093) STACK_CONNECT_PORT    Connect REST (8083)
#   STACK_SMTP_PORT      maildev SMTP (1025)       STACK_SMTP_HTTP_PORT  maildev HTTP (1080)
#   STACK_USERDATA_PORT  userdata (8080)           STACK_PUSH_EMAIL_PORT push-email health (8081)
#   STACK_BUILD_DIR      cmake build dir for the services (default build)
#   STACK_USERDATA_BIN   userdata binary (default $STACK_BUILD_DIR/services/userdata/userdata,
#                        built incrementally on every `up`; one named here is used as is
#                        when it exists, else built there and `up` stops if it is not)
#   STACK_PUSH_EMAIL_BIN push-email binary (likewise, default .../services/push-email/push-email)
#   STACK_SKIP           parts not to start, space or comma separated (e.g. "maildev,push-email")
#   STACK_START_TIMEOUT  seconds each part may take to become ready (default 120)
#   STACK_KAFKA_HEAP     broker heap (default "-Xms128m -Xmx512m")
#   STACK_CONNECT_HEAP   Connect worker heap (default "-Xms128m -Xmx768m")
#   STACK_CONNECTOR      connector JSON to register (default connector-config/userdata-cdc.mariadb.json)

# Physical paths (pwd -P): part_pid compares STACK_DIR with /proc/PID/cwd, which the
# kernel reports without symlinks; a checkout or STACK_DIR reached through a symlink
# must compare equal.
STACK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
STACK_DIR="${STACK_DIR:-$STACK_REPO/.stack}"
STACK_CACHE="${STACK_CACHE:-$STACK_REPO/.cache/stack}"
mkdir -p "$STACK_DIR" "$STACK_CACHE"
STACK_DIR="$(cd "$STACK_DIR" && pwd -P)"
STACK_CACHE="$(cd "$STACK_CACHE" && pwd -P)"

DB_PORT="${STACK_DB_PORT:-3307}"
KAFKA_PORT="${STACK_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${STACK_CONTROLLER_PORT:-9093}"
CONNECT_PORT="${STACK_CONNECT_PORT:-8083}"
SMTP_PORT="${STACK_SMTP_PORT:-1025}"
SMTP_HTTP_PORT="${STACK_SMTP_HTTP_PORT:-1080}"
USERDATA_PORT="${STACK_USERDATA_PORT:-8080}"
PUSH_EMAIL_PORT="${STACK_PUSH_EMAIL_PORT:-8081}"
BUILD_DIR="${STACK_BUILD_DIR:-$STACK_REPO/build}"
USERDATA_BIN="${STACK_USERDATA_BIN:-$BUILD_DIR/services/userdata/userdata}"
PUSH_EMAIL_BIN="${STACK_PUSH_EMAIL_BIN:-$BUILD_DIR/services/push-email/push-email}"
START_TIMEOUT="${STACK_START_TIMEOUT:-120}"
KAFKA_HEAP="${STACK_KAFKA_HEAP:--Xms128m -Xmx512m}"
CONNECT_HEAP="${STACK_CONNECT_HEAP:--Xms128m -Xmx768m}"
CONNECTOR_JSON="${STACK_CONNECTOR:-$STACK_REPO/connector-config/userdata-cdc.mariadb.json}"
STACK_SKIP="${STACK_SKIP:-}"
HOST=127.0.0.1

KAFKA_LIBS="$STACK_CACHE/kafka-libs"
PLUGIN_DIR="$STACK_CACHE/connect-plugins"
MAILDEV_DIR="$STACK_CACHE/maildev"
MAILDEV_VERSION=2.2.1
RUN_DIR="$STACK_DIR/run"
LOG_DIR="$STACK_DIR/logs"
SECRETS_DIR="$STACK_DIR/secrets"
JWT_SECRET_FILE="$STACK_DIR/jwt-secret"
ENV_FILE="$STACK_DIR/env"
DB_SOCK="$STACK_DIR/mariadb/mariadbd.sock"
if [ "${#DB_SOCK}" -gt 100 ]; then DB_SOCK="/tmp/stack-mariadb-$DB_PORT.sock"; fi

# Every part, in start order.
ALL_PARTS=(mariadb kafka maildev connect userdata push-email)

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

part_log() { echo "$LOG_DIR/$1.log"; }
pid_file() { echo "$RUN_DIR/$1.pid"; }

skipped() {
    local p
    for p in ${STACK_SKIP//,/ }; do [ "$p" = "$1" ] && return 0; done
    return 1
}

# Prints the pid of a part started by this stack when it still runs, else fails. A pid
# counts as ours only if the process's working directory is inside STACK_DIR (every part
# is started from its own directory there; mariadbd moves into its data dir, also there):
# a pid reused by an unrelated process after a crash is never signalled.
part_pid() {
    local f pid cwd
    f="$(pid_file "$1")"
    [ -f "$f" ] || return 1
    pid="$(cat "$f" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
    case "$cwd" in
    "$STACK_DIR"/*) echo "$pid" ;;
    *) return 1 ;;
    esac
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Prints the last lines of a part's log to stderr, then exits 1.
fail_part() {
    local part="$1"
    shift
    printf 'stack: error: %s: %s\n' "$part" "$*" >&2
    local f
    f="$(part_log "$part")"
    if [ -f "$f" ]; then
        printf -- '--- last 40 lines of %s ---\n' "$f" >&2
        tail -n 40 "$f" >&2
        printf -- '--- end of %s ---\n' "$f" >&2
    fi
    exit 1
}

# clean_env: sets CLEAN_ENV to `-u NAME` for every exported USERDATA_* and PUSH_EMAIL_*
# variable, for `env "${CLEAN_ENV[@]}" SETTINGS... SERVICE`: the services then see only
# the settings this stack gives them, not the caller's (a USERDATA_DB_PASSWORD exported
# for "userdata by hand" next to the stack's USERDATA_DB_PASSWORD_FILE makes the service
# exit 2: both NAME and NAME_FILE set).
clean_env() {
    CLEAN_ENV=()
    local v
    for v in $(compgen -e); do
        case "$v" in
        USERDATA_* | PUSH_EMAIL_*) CLEAN_ENV+=(-u "$v") ;;
        esac
    done
}

# launch PART CMD...: starts CMD in the background from $STACK_DIR/PART, in its own
# session (it outlives this shell and a Ctrl-C in it), stdout+stderr appended to the
# part's log; records the pid.
launch() {
    local part="$1"
    shift
    local dir="$STACK_DIR/$part"
    mkdir -p "$dir" "$RUN_DIR" "$LOG_DIR"
    printf '\n=== %s: starting %s ===\n' "$(date -u +%FT%TZ)" "$part" >>"$(part_log "$part")"
    # Not a process group leader here (no job control in scripts), so setsid execs in
    # place and $! is the pid of the part itself.
    # fds 8 and 9 hold scripts/stack's locks: closed, or the part would hold them forever.
    (cd "$dir" && exec setsid "$@" </dev/null >>"$(part_log "$part")" 2>&1 8>&- 9>&-) &
    echo $! >"$(pid_file "$part")"
}

# wait_until PART SECONDS DESCRIPTION CHECK...: polls CHECK every 0.25 s until it
# succeeds; fails with the log tail when the part's process dies or time runs out.
wait_until() {
    local part="$1" secs="$2" what="$3"
    shift 3
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ! part_pid "$part" >/dev/null; then
            fail_part "$part" "exited while waiting for $what"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail_part "$part" "not ready after ${secs}s (waiting for $what)"
        fi
        sleep 0.25
    done
}

# stop_part PART [GRACE_SECONDS]: SIGTERM, wait, then SIGKILL (GRACE 0: SIGKILL at once). Only a pid from our pid
# file that part_pid confirms is ours is ever signalled.
stop_part() {
    local part="$1" grace="${2:-30}" pid
    if ! pid="$(part_pid "$part")"; then
        rm -f "$(pid_file "$part")"
        return 0
    fi
    if [ "$grace" = 0 ]; then
        log "killing $part (pid $pid, SIGKILL)"
        kill -KILL "$pid" 2>/dev/null || true
    else
        log "stopping $part (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local deadline=$((SECONDS + (grace > 0 ? grace : 10)))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$part (pid $pid) still running after ${grace}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    rm -f "$(pid_file "$part")"
}

# Refuses to start a part whose port is taken by someone else.
require_free_port() {
    local part="$1" port="$2" var="$3"
    if port_open "$port"; then
        die "$part: 127.0.0.1:$port is already in use by another process (not started by this stack in $STACK_DIR); stop it or set $var"
    fi
}

# secret NAME: prints the secret, generating it (hex, mode 600) on first use.
secret() {
    local f="$SECRETS_DIR/$1"
    if [ ! -s "$f" ]; then
        mkdir -p "$SECRETS_DIR"
        chmod 700 "$SECRETS_DIR"
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$f")
    fi
    cat "$f"
}

java_cp() { echo "$KAFKA_LIBS/*"; }

# sed_repl TEXT: TEXT escaped for the replacement of a sed s|...|...| command (\, & and
# the | delimiter lose their meaning). A newline cannot be in a value.
sed_repl() {
    case "$1" in *$'\n'*) die "render: a newline in a value is not supported: $1" ;; esac
    printf '%s\n' "$1" | sed -e 's/[\\|&]/\\&/g'
}

# render TEMPLATE OUT VAR...: copies TEMPLATE to OUT replacing @VAR@ with $VAR.
render() {
    local tpl="$1" out="$2"
    shift 2
    local args=() v
    for v in "$@"; do
        args+=(-e "s|@$v@|$(sed_repl "${!v}")|g")
    done
    sed "${args[@]}" "$tpl" >"$out.tmp"
    if grep -q '@[A-Z_]*@' "$out.tmp"; then
        die "render: unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out.tmp" | head -1)"
    fi
    mv "$out.tmp" "$out"
}
