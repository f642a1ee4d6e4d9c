#!/usr/bin/env bash
# register.sh: registers (or updates) a Debezium connector with a Kafka Connect cluster
# and waits until the connector and every task are RUNNING.
#
#   connector-config/register.sh [CONNECTOR_JSON]
#
# CONNECTOR_JSON is {"name": ..., "config": {...}} (default: userdata-cdc.mariadb.json
# next to this script). The file is the single source of truth: it is sent as is. What
# differs per environment is written in it as ${env:CDC_*} placeholders, which the
# Connect worker resolves with its EnvVarConfigProvider; so the worker (not this script)
# needs CDC_DB_HOST, CDC_DB_PORT, CDC_DB_USER, CDC_DB_PASSWORD, CDC_KAFKA_BOOTSTRAP in its
# environment, and the worker config needs
#   config.providers=env
#   config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
#
# Idempotent: the desired config is compared with the one Connect has
# (GET /connectors/<name>/config); only a difference is PUT to /connectors/<name>/config,
# so running it twice changes nothing (no reconfiguration, no task restart). A connector
# or task found FAILED with an unchanged config is restarted once
# (POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true).
#
# Environment:
#   CONNECT_URL        Connect REST base URL (default http://127.0.0.1:8083)
#   REGISTER_TIMEOUT   seconds to wait for Connect, then for RUNNING (default 120 each)
#   REGISTER_STABLE_S  seconds the connector must stay RUNNING to count (default 3)
#   REGISTER_SETTLE_S  after a PUT or a restart, seconds during which a FAILED state is
#                      not final while it may still be the old one (default 30; see 3.)
#
# Exit status: 0 RUNNING; 1 failed (prints the connector's and tasks' traces); 2 usage.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
JSON="${1:-$HERE/userdata-cdc.mariadb.json}"
CONNECT_URL="${CONNECT_URL:-http://127.0.0.1:8083}"
CONNECT_URL="${CONNECT_URL%/}"
TIMEOUT="${REGISTER_TIMEOUT:-120}"
STABLE_S="${REGISTER_STABLE_S:-3}"
SETTLE_S="${REGISTER_SETTLE_S:-30}"

say() { printf 'register: %s\n' "$*" >&2; }
die() {
    printf 'register: error: %s\n' "$*" >&2
    exit 1
}

command -v curl >/dev/null || die "curl not found"
command -v jq >/dev/null || die "jq not found"
[ -r "$JSON" ] || {
    say "usage: $0 [CONNECTOR_JSON]; cannot read $JSON"
    exit 2
}
jq -e '.name and (.config | type == "object") and .config["connector.class"]' "$JSON" >/dev/null ||
    die "$JSON: expected {\"name\": ..., \"config\": {\"connector.class\": ...}}"

NAME="$(jq -r .name "$JSON")"
CLASS="$(jq -r '.config["connector.class"]' "$JSON")"
# Connect stores every value as a string; compare like with like.
DESIRED="$(jq -S '.config | map_values(tostring)' "$JSON")"

# http METHOD PATH [BODY]: sets HTTP_CODE and HTTP_BODY; fails only on no connection.
http() {
    local out
    if [ $# -ge 3 ]; then
        out="$(curl -sS --max-time 30 -X "$1" -H 'Content-Type: application/json' \
            -H 'Accept: application/json' --data-binary "$3" -w '\n%{http_code}' "$CONNECT_URL$2")" || return 1
    else
        out="$(curl -sS --max-time 30 -X "$1" -H 'Accept: application/json' \
            -w '\n%{http_code}' "$CONNECT_URL$2")" || return 1
    fi
    HTTP_CODE="${out##*$'\n'}"
    HTTP_BODY="${out%$'\n'*}"
}

# 1. Connect's REST API answers and the plugin is installed.
deadline=$((SECONDS + TIMEOUT))
until http GET / 2>/dev/null && [ "$HTTP_CODE" = 200 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "Kafka Connect at $CONNECT_URL not answering after ${TIMEOUT}s"
    sleep 0.5
done
say "Kafka Connect $(jq -r .version <<<"$HTTP_BODY") at $CONNECT_URL"
http GET /connector-plugins || die "GET /connector-plugins failed"
if ! jq -e --arg c "$CLASS" 'any(.[]; .class == $c)' <<<"$HTTP_BODY" >/dev/null; then
    die "plugin $CLASS is not installed in this worker (plugin.path); installed: $(jq -r '[.[].class] | join(", ")' <<<"$HTTP_BODY")"
fi

# failure_sig STATUS_JSON: the FAILED parts with their traces, one a line ("" if none).
failure_sig() {
    jq -r '[.connector + {id: "connector"}, .tasks[]] | map(select(.state == "FAILED"))
           | map("\(.id) \(.worker_id) \(.trace // "")") | sort | join("\n")' <<<"$1" 2>/dev/null || true
}

# The failed parts Connect reports now: after a PUT or a restart, Connect writes the new
# status asynchronously, so for a while the status can still show these old failures.
stale_failure() {
    if http GET "/connectors/$NAME/status" && [ "$HTTP_CODE" = 200 ]; then
        failure_sig "$HTTP_BODY"
    fi
}

# 2. Create or update, only when the config differs.
http GET "/connectors/$NAME/config" || die "GET /connectors/$NAME/config failed"
case "$HTTP_CODE" in
200)
    CURRENT="$(jq -S 'del(.name)' <<<"$HTTP_BODY")"
    if [ "$CURRENT" = "$DESIRED" ]; then
        say "connector $NAME: config unchanged"
        CHANGED=0
    else
        CHANGED=1
    fi
    ;;
404) CHANGED=1 ;;
*) die "GET /connectors/$NAME/config: HTTP $HTTP_CODE: $HTTP_BODY" ;;
esac

stale=""
if [ "$CHANGED" = 1 ]; then
    stale="$(stale_failure)"
    http PUT "/connectors/$NAME/config" "$DESIRED" || die "PUT /connectors/$NAME/config failed"
    case "$HTTP_CODE" in
    201) say "connector $NAME: created" ;;
    200) say "connector $NAME: config updated" ;;
    *) die "PUT /connectors/$NAME/config: HTTP $HTTP_CODE: $HTTP_BODY" ;;
    esac
fi

print_failure() {
    say "connector $NAME status:"
    jq -r '"  connector: \(.connector.state) on \(.connector.worker_id)",
           (.connector.trace // empty | "  connector trace:\n" + .),
           (.tasks[] | . as $t | "  task \($t.id): \($t.state) on \($t.worker_id)",
                       ($t.trace // empty | "  task \($t.id) trace:\n" + .))' \
        <<<"$1" >&2 || printf '%s\n' "$1" >&2
}

# 3. Wait until the connector and all its tasks are RUNNING, and stay so for STABLE_S
#    (a task that cannot reach the database fails a moment after it starts).
#    After a PUT or a restart, a FAILED state is final only once it cannot be the old one
#    still being reported: when everything has been RUNNING since, when its trace differs
#    from the failure seen before (or there was none), or after SETTLE_S seconds.
deadline=$((SECONDS + TIMEOUT))
restarted=$CHANGED
settle_until=-1
[ "$CHANGED" = 1 ] && settle_until=$((SECONDS + SETTLE_S))
running_since=-1
status=""
while :; do
    if http GET "/connectors/$NAME/status" && [ "$HTTP_CODE" = 200 ]; then
        status="$HTTP_BODY"
        cstate="$(jq -r .connector.state <<<"$status")"
        ntasks="$(jq -r '.tasks | length' <<<"$status")"
        failed="$(jq -r '[.connector.state, .tasks[].state] | map(select(. == "FAILED")) | length' <<<"$status")"
        notrunning="$(jq -r '[.tasks[].state] | map(select(. != "RUNNING")) | length' <<<"$status")"
        if [ "$failed" -gt 0 ]; then
            if [ "$restarted" = 0 ]; then
                say "connector $NAME has failed parts with an unchanged config; restarting them once"
                stale="$(failure_sig "$status")"
                http POST "/connectors/$NAME/restart?includeTasks=true&onlyFailed=true" "" ||
                    die "POST restart failed"
                restarted=1
                settle_until=$((SECONDS + SETTLE_S))
                running_since=-1
                sleep 1
                continue
            fi
            if [ "$SECONDS" -lt "$settle_until" ] && [ "$SECONDS" -lt "$deadline" ] && [ -n "$stale" ] &&
                [ "$(failure_sig "$status")" = "$stale" ]; then
                # Possibly the failure from before the PUT/restart, not yet overwritten.
                running_since=-1
                sleep 0.5
                continue
            fi
            print_failure "$status"
            die "connector $NAME FAILED"
        fi
        if [ "$cstate" = RUNNING ] && [ "$ntasks" -ge 1 ] && [ "$notrunning" = 0 ]; then
            # Everything RUNNING since the PUT/restart: a FAILED seen from now on is new.
            settle_until=-1
            [ "$running_since" -ge 0 ] || running_since=$SECONDS
            if [ $((SECONDS - running_since)) -ge "$STABLE_S" ]; then
                say "connector $NAME and its $ntasks task(s) are RUNNING"
                exit 0
            fi
        else
            running_since=-1
        fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        [ -n "$status" ] && print_failure "$status"
        die "connector $NAME not RUNNING after ${TIMEOUT}s"
    fi
    sleep 0.5
done
