#!/usr/bin/env bash
# test-mariadb.sh: a private MariaDB server for the integration tests.
#
#   test-mariadb.sh start|stop|restart|status|env
#
# It has its own data dir, port, socket and pid file, and never touches a system MariaDB
# (which may be listening on 3306). Binlog is on in ROW/FULL format so that Debezium can
# read it. Tests use `env` to learn how to reach it and TEST_DB_CTL to stop/start it
# mid-test (restart tests).
#
# Settings (environment):
#   TEST_DB_DIR   state dir (default "$REPO/.cache/test-mariadb"): data/, error.log,
#                 mariadbd.pid and mariadbd.sock live inside it
#   TEST_DB_PORT  TCP port on 127.0.0.1 (default 3317)
#   TEST_DB_START_TIMEOUT  seconds to wait for readiness (default 60)
set -euo pipefail

# Physical paths (pwd -P): a checkout reached through a symlink names the same data dir
# (running_pid matches it in /proc/PID/cmdline) whichever way the script is called.
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SELF")/../.." && pwd -P)"
DIR="${TEST_DB_DIR:-$REPO/.cache/test-mariadb}"
PORT="${TEST_DB_PORT:-3317}"
START_TIMEOUT="${TEST_DB_START_TIMEOUT:-60}"
DB_USER=userdata
DB_PASSWORD=userdata-test

MARIADBD="${MARIADBD:-/usr/sbin/mariadbd}"
INSTALL_DB="$(command -v mariadb-install-db || command -v mysql_install_db || true)"
ADMIN="$(command -v mariadb-admin || command -v mysqladmin || true)"
CLIENT="$(command -v mariadb || command -v mysql || true)"

die() { echo "test-mariadb: $*" >&2; exit 1; }

init_paths() {
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd -P)"
    DATA="$DIR/data"
    PIDFILE="$DIR/mariadbd.pid"
    SOCK="$DIR/mariadbd.sock"
    ERRLOG="$DIR/error.log"
    # A unix socket path is limited to 107 bytes; fall back to a short path under /tmp
    # keyed by the port so that a deep TEST_DB_DIR still works.
    if [ "${#SOCK}" -gt 100 ]; then
        SOCK="/tmp/test-mariadb-$PORT.sock"
    fi
}

# Prints the pid when the server of this data dir runs, else fails.
running_pid() {
    local pid cmdline
    [ -f "$PIDFILE" ] || return 1
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [ -n "$pid" ] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # The pid may have been reused by another process after a crash: check it is ours.
    # (Captured, not piped into grep -q, which under pipefail can SIGPIPE the writer.)
    if [ -r "/proc/$pid/cmdline" ]; then
        cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline")" || return 1
        grep -qF -- "--datadir=$DATA " <<<"$cmdline " || return 1
    fi
    echo "$pid"
}

ping_server() {
    "$ADMIN" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot \
        --connect-timeout=2 ping >/dev/null 2>&1
}

fail_with_log() {
    echo "test-mariadb: $*" >&2
    if [ -f "$ERRLOG" ]; then
        echo "--- last lines of $ERRLOG ---" >&2
        tail -n 40 "$ERRLOG" >&2
    fi
    exit 1
}

install_db() {
    [ -n "$INSTALL_DB" ] || die "mariadb-install-db not found (apt-get install mariadb-server)"
    echo "test-mariadb: initialising $DATA" >&2
    rm -rf "$DATA"
    mkdir -p "$DATA"
    # --user: the account that runs it (root only when root runs it): another user cannot
    # chown the data dir to root (EPERM).
    if ! "$INSTALL_DB" --no-defaults --datadir="$DATA" --user="$(id -un)" \
        --auth-root-authentication-method=normal --skip-test-db \
        >"$DIR/install.log" 2>&1; then
        cat "$DIR/install.log" >&2
        rm -rf "$DATA"
        die "mariadb-install-db failed"
    fi
}

launch() {
    [ -x "$MARIADBD" ] || die "$MARIADBD not found (apt-get install mariadb-server)"
    rm -f "$PIDFILE"
    # setsid: the server outlives the shell (and the ctest process) that started it.
    setsid "$MARIADBD" 9>&- --no-defaults \
        --user="$(id -un)" \
        --datadir="$DATA" \
        --pid-file="$PIDFILE" \
        --socket="$SOCK" \
        --log-error="$ERRLOG" \
        --bind-address=127.0.0.1 \
        --port="$PORT" \
        --skip-name-resolve \
        --server-id=1 \
        --log-bin="$DATA/mariadb-bin" \
        --binlog-format=ROW \
        --binlog-row-image=FULL \
        --expire-logs-days=1 \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --max-connections=500 \
        --innodb-buffer-pool-size=128M \
        --innodb-log-file-size=64M \
        --innodb-flush-log-at-trx-commit=2 \
        --sync-binlog=0 \
        --skip-innodb-doublewrite \
        --wait-timeout=600 \
        </dev/null >>"$ERRLOG" 2>&1 &
}

wait_ready() {
    local deadline=$((SECONDS + START_TIMEOUT))
    while ! ping_server; do
        if [ ! -f "$PIDFILE" ] && ! pgrep_ours; then
            # Give the server a moment to write its pid file before declaring it dead.
            sleep 0.5
            if [ ! -f "$PIDFILE" ] && ! pgrep_ours; then
                fail_with_log "mariadbd exited during start"
            fi
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            fail_with_log "mariadbd not ready on 127.0.0.1:$PORT after ${START_TIMEOUT}s"
        fi
        sleep 0.2
    done
}

# True when the server answering on our port is ours (its datadir is ours): another
# server that grabbed the port in the meantime must not be taken for it.
ours_answers() {
    local dd
    dd=$("$CLIENT" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot -N -B \
        -e 'SELECT @@datadir' 2>/dev/null) || return 1
    [ "$(cd "$dd" 2>/dev/null && pwd -P)" = "$(cd "$DATA" && pwd -P)" ]
}

# True while the child we launched is alive (before it has written its pid file).
pgrep_ours() {
    [ -n "${LAUNCHED_PID:-}" ] && kill -0 "$LAUNCHED_PID" 2>/dev/null
}

# child_running PID: PID exists and has not exited (a zombie has: kill -0 still succeeds
# on it until it is reaped).
child_running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

# EXIT trap of cmd_start while the server it launched is not ready yet: a start that fails
# (not ready in time, another server on the port, user creation failed) stops the server
# it launched instead of leaving it running unowned (no caller would stop it). Signalled
# only while the pid still runs mariadbd on our data dir (bash may have reaped an exited
# child already, and its pid been reused).
kill_launched() {
    [ -n "${LAUNCHED_PID:-}" ] || return 0
    local pid="$LAUNCHED_PID" deadline=$((SECONDS + 30)) cmdline
    LAUNCHED_PID=
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || cmdline=
    if child_running "$pid" && grep -qF -- "--datadir=$DATA " <<<"$cmdline "; then
        echo "test-mariadb: start failed; stopping the mariadbd it launched (pid $pid)" >&2
        kill -TERM "$pid" 2>/dev/null || true
        while child_running "$pid"; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.2
        done
    fi
    wait "$pid" 2>/dev/null || true
    if [ "$(cat "$PIDFILE" 2>/dev/null)" = "$pid" ]; then
        rm -f "$PIDFILE"
    fi
}

create_user() {
    "$CLIENT" --no-defaults --protocol=tcp -h127.0.0.1 -P"$PORT" -uroot <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON \`userdata%\`.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`userdata%\`.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
}

cmd_start() {
    init_paths
    if running_pid >/dev/null; then
        if ping_server; then
            return 0
        fi
        wait_ready
        return 0
    fi
    if ping_server; then
        die "something else answers on 127.0.0.1:$PORT; set TEST_DB_PORT"
    fi
    local fresh=0
    if [ ! -d "$DATA/mysql" ]; then
        install_db
        fresh=1
    fi
    trap kill_launched EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    launch
    LAUNCHED_PID=$!
    wait_ready
    ours_answers || fail_with_log "another server answers on 127.0.0.1:$PORT (ours did not start)"
    if [ "$fresh" = 1 ] || [ ! -f "$DIR/.user-created" ]; then
        create_user || fail_with_log "could not create the $DB_USER user"
        touch "$DIR/.user-created"
    fi
    # Ready: from here on the server is the caller's to stop.
    LAUNCHED_PID=
    trap - EXIT INT TERM
    echo "test-mariadb: ready on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))" >&2
}

cmd_stop() {
    init_paths
    local pid
    if ! pid="$(running_pid)"; then
        rm -f "$PIDFILE"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "test-mariadb: pid $pid did not stop in 60s; sending KILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.1
    done
    # Only our server's pid file: a concurrent start may already have written a new one.
    if [ "$(cat "$PIDFILE" 2>/dev/null)" = "$pid" ]; then
        rm -f "$PIDFILE"
    fi
    echo "test-mariadb: stopped" >&2
}

# Serialises start/stop/restart on one data dir (two test runs, or a test restarting the
# server while another run starts it), so that no run removes the other's pid file.
with_lock() {
    init_paths
    mkdir -p "$DIR"
    exec 9>"$DIR/.ctl.lock"
    flock -w 120 9 || die "could not lock $DIR/.ctl.lock in 120 s"
    "$@"
}

cmd_status() {
    init_paths
    local pid
    if pid="$(running_pid)" && ping_server; then
        echo "running: pid $pid, 127.0.0.1:$PORT, data $DATA"
        return 0
    fi
    echo "stopped (data $DATA)"
    return 1
}

# Shell-quoted (printf %q): `eval "$(test-mariadb.sh env)"` keeps a path with spaces or
# shell characters whole.
cmd_env() {
    printf 'export TEST_DB_HOST=%q\n' 127.0.0.1
    printf 'export TEST_DB_PORT=%q\n' "$PORT"
    printf 'export TEST_DB_USER=%q\n' "$DB_USER"
    printf 'export TEST_DB_PASSWORD=%q\n' "$DB_PASSWORD"
    printf 'export TEST_DB_CTL=%q\n' "$SELF"
    if [ -n "${TEST_DB_DIR:-}" ]; then
        printf 'export TEST_DB_DIR=%q\n' "$TEST_DB_DIR"
    fi
}

[ -n "$ADMIN" ] || [ "${1:-}" = env ] || die "mariadb-admin not found (apt-get install mariadb-client)"
case "${1:-}" in
start) with_lock cmd_start ;;
stop) with_lock cmd_stop ;;
restart) with_lock eval 'cmd_stop && cmd_start' ;;
status) cmd_status ;;
env) cmd_env ;;
*)
    echo "usage: $0 start|stop|restart|status|env" >&2
    exit 2
    ;;
esac
