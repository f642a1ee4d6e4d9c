# shellcheck shell=bash
# stack-parts.sh: how each part of the local stack starts, becomes ready and is
# described. Sourced by scripts/stack after stack-common.sh.
#
# For every part P: start_P launches it (when not already running) without waiting;
# ready_P waits for real readiness (port, protocol answer), bounded by START_TIMEOUT.

MARIADBD="${MARIADBD:-/usr/sbin/mariadbd}"
DB_ADMIN="$(command -v mariadb-admin || command -v mysqladmin || true)"
DB_CLIENT="$(command -v mariadb || command -v mysql || true)"
DB_INSTALL="$(command -v mariadb-install-db || command -v mysql_install_db || true)"

db_root() {
    "$DB_CLIENT" --no-defaults --protocol=tcp -h"$HOST" -P"$DB_PORT" -uroot "$@"
}

# ---------------------------------------------------------------- mariadb
db_ping() {
    "$DB_ADMIN" --no-defaults --protocol=tcp -h"$HOST" -P"$DB_PORT" -uroot \
        --connect-timeout=2 ping >/dev/null 2>&1
}

start_mariadb() {
    part_pid mariadb >/dev/null && return 0
    require_free_port mariadb "$DB_PORT" STACK_DB_PORT
    local data="$STACK_DIR/mariadb/data"
    mkdir -p "$STACK_DIR/mariadb" "$LOG_DIR"
    if [ ! -d "$data/mysql" ]; then
        log "mariadb: initialising $data"
        rm -rf "$data"
        mkdir -p "$data"
        "$DB_INSTALL" --no-defaults --datadir="$data" --user="$(id -un)" \
            --auth-root-authentication-method=normal --skip-test-db \
            >>"$(part_log mariadb)" 2>&1 || fail_part mariadb "mariadb-install-db failed"
    fi
    # ROW binlog with full row images and a server id: what Debezium reads
    # (DESIGN.md section 9). MariaDB's default binlog_format is MIXED.
    # push-email's delivery log (database notifications) stays out of the binlog: the binlog
    # is the CDC feed, and one row event per email written there was read by Debezium only
    # to be dropped (its include list is userdata), which cost MariaDB and Connect CPU on
    # every email (bench/README.md). With ROW logging the filter is the changed table's
    # database, whatever the session's default. The bench's delivery-log databases likewise.
    # The price: those databases are in no binlog, so a replica or a binlog replay would not
    # carry them (there is neither here; see README "Operations").
    launch mariadb "$MARIADBD" --no-defaults \
        --user="$(id -un)" \
        --datadir="$data" \
        --pid-file="$STACK_DIR/mariadb/mariadbd.pid" \
        --socket="$DB_SOCK" \
        --bind-address="$HOST" \
        --port="$DB_PORT" \
        --skip-name-resolve \
        --server-id=1 \
        --log-bin=mariadb-bin \
        --binlog-format=ROW \
        --binlog-row-image=FULL \
        --binlog-expire-logs-seconds=604800 \
        --binlog-ignore-db=notifications \
        --binlog-ignore-db=notifications_bench \
        --binlog-ignore-db=notifications_bench_lat \
        --character-set-server=utf8mb4 \
        --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=128M \
        --max-connections=200
}

ready_mariadb() {
    wait_until mariadb "$START_TIMEOUT" "a ping on 127.0.0.1:$DB_PORT" db_ping
    # Databases, the services' users and the Debezium user; idempotent, so run on every up
    # (and it also repairs a password someone changed by hand).
    local app_pw dbz_pw pe_pw
    app_pw="$(secret userdata-db-password)"
    pe_pw="$(secret push-email-db-password)"
    dbz_pw="$(secret debezium-db-password)"
    {
        cat <<SQL
CREATE DATABASE IF NOT EXISTS userdata CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'userdata'@'127.0.0.1' IDENTIFIED BY '$app_pw';
CREATE USER IF NOT EXISTS 'userdata'@'localhost' IDENTIFIED BY '$app_pw';
ALTER USER 'userdata'@'127.0.0.1' IDENTIFIED BY '$app_pw';
ALTER USER 'userdata'@'localhost' IDENTIFIED BY '$app_pw';
GRANT ALL PRIVILEGES ON userdata.* TO 'userdata'@'127.0.0.1';
GRANT ALL PRIVILEGES ON userdata.* TO 'userdata'@'localhost';
CREATE DATABASE IF NOT EXISTS notifications CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'push_email'@'127.0.0.1' IDENTIFIED BY '$pe_pw';
ALTER USER 'push_email'@'127.0.0.1' IDENTIFIED BY '$pe_pw';
GRANT ALL PRIVILEGES ON notifications.* TO 'push_email'@'127.0.0.1';
SET @debezium_password = '$dbz_pw';
SET @debezium_host = '127.0.0.1';
SQL
        cat "$STACK_REPO/connector-config/debezium-user.sql"
    } | db_root >>"$(part_log mariadb)" 2>&1 || fail_part mariadb "creating the database and users failed"
}

desc_mariadb() { echo "127.0.0.1:$DB_PORT (root without password; userdata, debezium)"; }

# ---------------------------------------------------------------- kafka
kafka_props() { echo "$STACK_DIR/kafka/server.properties"; }

start_kafka() {
    part_pid kafka >/dev/null && return 0
    require_free_port kafka "$KAFKA_PORT" STACK_KAFKA_PORT
    require_free_port kafka "$CONTROLLER_PORT" STACK_CONTROLLER_PORT
    local dir="$STACK_DIR/kafka"
    KAFKA_DATA="$dir/data"
    mkdir -p "$dir" "$LOG_DIR"
    render "$STACK_REPO/stack/conf/kafka-server.properties.in" "$(kafka_props)" \
        KAFKA_PORT CONTROLLER_PORT KAFKA_DATA
    if [ ! -f "$KAFKA_DATA/meta.properties" ]; then
        local id
        if [ ! -s "$dir/cluster-id" ]; then
            java -cp "$(java_cp)" kafka.tools.StorageTool random-uuid >"$dir/cluster-id" 2>>"$(part_log kafka)" ||
                fail_part kafka "StorageTool random-uuid failed"
        fi
        id="$(tr -d '[:space:]' <"$dir/cluster-id")"
        log "kafka: formatting $KAFKA_DATA (cluster $id)"
        java -Dlog4j.configuration="file:$STACK_REPO/stack/conf/log4j-kafka.properties" \
            -cp "$(java_cp)" kafka.tools.StorageTool format -t "$id" -c "$(kafka_props)" \
            >>"$(part_log kafka)" 2>&1 || fail_part kafka "StorageTool format failed"
    fi
    # shellcheck disable=SC2086
    launch kafka java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$STACK_REPO/stack/conf/log4j-kafka.properties" \
        -Dkafka.logs.dir="$LOG_DIR" \
        -cp "$(java_cp)" kafka.Kafka "$(kafka_props)"
}

kafka_ready_check() {
    local md
    port_open "$KAFKA_PORT" || return 1
    # Captured, not piped into grep -q: with pipefail, grep -q exiting at the first match
    # makes kcat die of SIGPIPE on a long listing (many topics), and the check fail.
    md="$(kcat -b "$HOST:$KAFKA_PORT" -L -m 2 2>/dev/null)" || return 1
    grep -q '1 brokers:' <<<"$md"
}

ready_kafka() {
    wait_until kafka "$START_TIMEOUT" "broker metadata on 127.0.0.1:$KAFKA_PORT" kafka_ready_check
}

desc_kafka() { echo "127.0.0.1:$KAFKA_PORT (KRaft controller 127.0.0.1:$CONTROLLER_PORT)"; }

# ---------------------------------------------------------------- connect
connect_props() { echo "$STACK_DIR/connect/connect-distributed.properties"; }

start_connect() {
    part_pid connect >/dev/null && return 0
    require_free_port connect "$CONNECT_PORT" STACK_CONNECT_PORT
    mkdir -p "$STACK_DIR/connect" "$LOG_DIR"
    render "$STACK_REPO/stack/conf/connect-distributed.properties.in" "$(connect_props)" \
        KAFKA_PORT CONNECT_PORT PLUGIN_DIR
    # The connector JSON's ${env:CDC_*} placeholders are resolved from this environment
    # by the worker's EnvVarConfigProvider.
    # shellcheck disable=SC2086
    launch connect env \
        CDC_DB_HOST="$HOST" CDC_DB_PORT="$DB_PORT" CDC_DB_USER=debezium \
        CDC_DB_PASSWORD="$(secret debezium-db-password)" \
        CDC_KAFKA_BOOTSTRAP="$HOST:$KAFKA_PORT" \
        java $CONNECT_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
        -Dlog4j.configuration="file:$STACK_REPO/stack/conf/log4j-connect.properties" \
        -cp "$(java_cp)" org.apache.kafka.connect.cli.ConnectDistributed "$(connect_props)"
}

connect_ready_check() {
    curl -fsS --max-time 2 "http://$HOST:$CONNECT_PORT/connectors" >/dev/null 2>&1
}

ready_connect() {
    # /connectors answers only once the worker has joined its group and read the config
    # topic (before that: 503 or no listener).
    wait_until connect "$START_TIMEOUT" "the REST API on 127.0.0.1:$CONNECT_PORT" connect_ready_check
}

desc_connect() { echo "http://127.0.0.1:$CONNECT_PORT (distributed, group cdc-connect)"; }

# ---------------------------------------------------------------- maildev
start_maildev() {
    part_pid maildev >/dev/null && return 0
    require_free_port maildev "$SMTP_PORT" STACK_SMTP_PORT
    require_free_port maildev "$SMTP_HTTP_PORT" STACK_SMTP_HTTP_PORT
    mkdir -p "$STACK_DIR/maildev/mail"
    launch maildev node "$MAILDEV_DIR/node_modules/maildev/bin/maildev" \
        --smtp "$SMTP_PORT" --web "$SMTP_HTTP_PORT" --ip "$HOST" --web-ip "$HOST" \
        --mail-directory "$STACK_DIR/maildev/mail"
}

maildev_ready_check() {
    port_open "$SMTP_PORT" && curl -fsS --max-time 2 "http://$HOST:$SMTP_HTTP_PORT/email" >/dev/null 2>&1
}

ready_maildev() {
    wait_until maildev "$START_TIMEOUT" "SMTP 127.0.0.1:$SMTP_PORT and HTTP 127.0.0.1:$SMTP_HTTP_PORT" maildev_ready_check
}

desc_maildev() { echo "SMTP 127.0.0.1:$SMTP_PORT, web/API http://127.0.0.1:$SMTP_HTTP_PORT"; }

# ---------------------------------------------------------------- userdata
# userdata's settings as env assignments (the server and `userdata token` read the same
# ones). Secrets are passed as *_FILE paths, never on a command line.
userdata_env() {
    USERDATA_ENV=(USERDATA_LISTEN_ADDR="$HOST" USERDATA_PORT="$USERDATA_PORT"
        USERDATA_DB_HOST="$HOST" USERDATA_DB_PORT="$DB_PORT" USERDATA_DB_USER=userdata
        USERDATA_DB_PASSWORD_FILE="$SECRETS_DIR/userdata-db-password"
        USERDATA_DB_NAME=userdata USERDATA_JWT_SECRET_FILE="$JWT_SECRET_FILE")
}

ensure_jwt_secret() {
    if [ ! -s "$JWT_SECRET_FILE" ]; then
        (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$JWT_SECRET_FILE")
    fi
}

# stop_if_rebuilt PART BINARY: stops PART when it runs a binary other than BINARY's
# current file (rebuilt since it started: the linker wrote a new inode), so that the
# caller starts the new one.
stop_if_rebuilt() {
    local pid
    pid="$(part_pid "$1")" || return 0
    if [ -e "$2" ] && [ -e "/proc/$pid/exe" ] && ! [ "/proc/$pid/exe" -ef "$2" ]; then
        log "$1: $2 was rebuilt since pid $pid started; restarting it"
        stop_part "$1" 20
    fi
}

start_userdata() {
    stop_if_rebuilt userdata "$USERDATA_BIN"
    part_pid userdata >/dev/null && return 0
    require_free_port userdata "$USERDATA_PORT" STACK_USERDATA_PORT
    ensure_jwt_secret
    secret userdata-db-password >/dev/null
    userdata_env
    clean_env
    launch userdata env "${CLEAN_ENV[@]}" "${USERDATA_ENV[@]}" "$USERDATA_BIN" serve
}

userdata_ready_check() {
    curl -fsS --max-time 2 "http://$HOST:$USERDATA_PORT/readyz" >/dev/null 2>&1
}

ready_userdata() {
    wait_until userdata "$START_TIMEOUT" "GET /readyz on 127.0.0.1:$USERDATA_PORT" userdata_ready_check
}

desc_userdata() { echo "http://127.0.0.1:$USERDATA_PORT/api/v1/users"; }

# ---------------------------------------------------------------- push-email
# Started only when services/push-email exists (settings: services/push-email/main.c).
# maildev speaks no STARTTLS, hence PUSH_EMAIL_SMTP_STARTTLS=none.
start_push_email() {
    stop_if_rebuilt push-email "$PUSH_EMAIL_BIN"
    part_pid push-email >/dev/null && return 0
    require_free_port push-email "$PUSH_EMAIL_PORT" STACK_PUSH_EMAIL_PORT
    clean_env
    launch push-email env "${CLEAN_ENV[@]}" \
        PUSH_EMAIL_KAFKA_BROKERS="$HOST:$KAFKA_PORT" PUSH_EMAIL_TOPIC=cdc.info-user \
        PUSH_EMAIL_SMTP_URL="smtp://$HOST:$SMTP_PORT" PUSH_EMAIL_SMTP_STARTTLS=none \
        PUSH_EMAIL_HEALTH_ADDR="$HOST" PUSH_EMAIL_HEALTH_PORT="$PUSH_EMAIL_PORT" \
        PUSH_EMAIL_DB_HOST="$HOST" PUSH_EMAIL_DB_PORT="$DB_PORT" PUSH_EMAIL_DB_USER=push_email \
        PUSH_EMAIL_DB_PASSWORD_FILE="$SECRETS_DIR/push-email-db-password" \
        PUSH_EMAIL_DB_NAME=notifications \
        "$PUSH_EMAIL_BIN"
}

push_email_ready_check() {
    curl -fsS --max-time 2 "http://$HOST:$PUSH_EMAIL_PORT/healthz" >/dev/null 2>&1
}

ready_push_email() {
    wait_until push-email "$START_TIMEOUT" "GET /healthz on 127.0.0.1:$PUSH_EMAIL_PORT" push_email_ready_check
}

desc_push_email() { echo "health http://127.0.0.1:$PUSH_EMAIL_PORT/healthz"; }
