#!/usr/bin/env bash
# The connector configs against the real Kafka Connect worker of the CDC stack:
#
#  1. userdata-cdc.mysql.json (MySQL 8) is accepted by Debezium's MySqlConnector plugin:
#     Connect's validate endpoint (which resolves the ${env:CDC_*} placeholders, checks every
#     option and opens a connection as the least-privilege `debezium` user) reports 0
#     errors. No MySQL 8 server can be had on this machine (Debian 12 ships MariaDB only), so
#     the connection half runs against the stack's MariaDB, which speaks the same protocol;
#     a wrong password must turn the same call into an error (the check can fail).
#  2. The MySQL and MariaDB configs differ only where the two connectors must differ.
#  3. register.sh fails loudly: a config Connect refuses, and a connector whose task fails
#     (a user without the replication privileges), make it exit 1 with the reason, the
#     connector's status and the task's trace. The broken connector is deleted afterwards. This runs after cdc_register_idempotent (ctest
#     DEPENDS), which counts task starts.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
: "${STACK_CONNECT_PORT:?}" "${STACK_DB_PORT:?}"
URL="http://127.0.0.1:$STACK_CONNECT_PORT"
CFG="$REPO/connector-config"
# shellcheck source=../../lib/checks.sh
. "$REPO/tests/lib/checks.sh"
validate() { # class, json file with {config..., name}: prints error_count and the errors
    curl -sS -m 120 -X PUT -H 'Content-Type: application/json' --data-binary @"$2" \
        "$URL/connector-plugins/$1/config/validate" |
        jq -r '"error_count=\(.error_count)",
               (.configs[] | select((.value.errors | length) > 0) |
                "  \(.value.name): \(.value.errors | join("; "))")'
}
tmp=$(mktemp -d)
broken=userdata-cdc-broken-$$
cleanup() {
    curl -sS -m 30 -X DELETE "$URL/connectors/$broken" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# 1. MySQL 8 config through the MySqlConnector plugin.
mysql_class=$(jq -r .config.\"connector.class\" "$CFG/userdata-cdc.mysql.json")
check '[ "$mysql_class" = io.debezium.connector.mysql.MySqlConnector ]' "mysql config names MySqlConnector"
jq '.config + {name: .name}' "$CFG/userdata-cdc.mysql.json" >"$tmp/mysql.json"
out=$(validate "$mysql_class" "$tmp/mysql.json" 2>&1) || true
echo "$out"
check 'grep -qx "error_count=0" <<<"$out"' "MySqlConnector validates userdata-cdc.mysql.json with 0 errors"
jq '. + {"database.password": "not-the-password"}' "$tmp/mysql.json" >"$tmp/mysql-bad.json"
out=$(validate "$mysql_class" "$tmp/mysql-bad.json" 2>&1) || true
echo "$out"
check 'grep -q "^error_count=[1-9]" <<<"$out"' "the same validation with a wrong password reports an error"

# 2. The two configs differ only in the connector class, the TLS mode, the schema history
#    topic and the name.
differ=$(jq -n --slurpfile a "$CFG/userdata-cdc.mariadb.json" --slurpfile b "$CFG/userdata-cdc.mysql.json" \
    '[($a[0].config + $b[0].config | keys[]) as $k | select($a[0].config[$k] != $b[0].config[$k]) | $k] | sort | join(",")')
echo "keys that differ: $differ"
check '[ "$differ" = "\"connector.class,database.ssl.mode,schema.history.internal.kafka.topic\"" ]' \
    "mariadb and mysql configs differ only in class, ssl mode and history topic"

# 3. register.sh with a connector whose task fails at run time: a database user that may
#    log in (so Connect's validation on PUT accepts the config) but lacks the replication
#    and snapshot privileges of connector-config/debezium-user.sql. A wrong password is
#    refused earlier, by the PUT itself: that must fail register.sh too.
jq --arg n "$broken" '.name = $n | .config += {
        "database.password": "not-the-password",
        "database.server.id": "184099",
        "topic.prefix": "broken",
        "schema.history.internal.kafka.topic": "cdc.schema-history.broken"}' \
    "$CFG/userdata-cdc.mariadb.json" >"$tmp/badpass.json"
out=$(CONNECT_URL="$URL" REGISTER_TIMEOUT=90 "$CFG/register.sh" "$tmp/badpass.json" 2>&1) && rc=0 || rc=$?
echo "$out" | head -n 5
check '[ "$rc" = 1 ]' "register.sh exits 1 when Connect refuses the config (wrong password)"
check 'grep -q "HTTP 400" <<<"$out" && grep -qi "access denied" <<<"$out"' "it prints Connect's reason"

mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$STACK_DB_PORT" -uroot -e \
    "CREATE USER IF NOT EXISTS 'cdc_noprivs'@'127.0.0.1' IDENTIFIED BY 'noprivs-pass';
     GRANT SELECT ON userdata.* TO 'cdc_noprivs'@'127.0.0.1';"
jq --arg n "$broken" '.name = $n | .config += {
        "database.user": "cdc_noprivs",
        "database.password": "noprivs-pass",
        "database.server.id": "184099",
        "topic.prefix": "broken",
        "schema.history.internal.kafka.topic": "cdc.schema-history.broken"}' \
    "$CFG/userdata-cdc.mariadb.json" >"$tmp/broken.json"
t0=$SECONDS
out=$(CONNECT_URL="$URL" REGISTER_TIMEOUT=90 "$CFG/register.sh" "$tmp/broken.json" 2>&1) && rc=0 || rc=$?
echo "$out" | cut -c1-200 | head -n 30
echo "register.sh exited $rc after $((SECONDS - t0))s"
check '[ "$rc" = 1 ]' "register.sh exits 1 for a connector whose task FAILED"
check 'grep -q "connector $broken FAILED" <<<"$out"' "it says the connector failed"
check 'grep -q "task 0: FAILED" <<<"$out"' "it prints each task's state"
check 'grep -q "task 0 trace:" <<<"$out" && grep -q "DebeziumException" <<<"$out"' "it prints the task's trace"
check '! grep -q "^jq: error" <<<"$out"' "the status is printed without a jq error"

checks_finish connector_configs
