#!/usr/bin/env bash
# push-email refuses, at start and before it waits for anything, a configuration that would
# fail every email later: exit 2 and one stderr line naming the problem. A good
# configuration gets past that check (it then waits for the database, which is not there
# here), and SIGTERM while it waits is a clean exit 0. No server is needed.
#
# Usage: test_config.sh PUSH_EMAIL_BINARY TEMPLATES_DIR
set -u
BIN=$1
TEMPLATES=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
passed=0
failed=0

ok() { echo "[       OK ] $*"; passed=$((passed + 1)); }
bad() { echo "[  FAILED  ] $*"; failed=$((failed + 1)); }

# Nothing listens on 127.0.0.1:9 (discard): the database is "down".
base=(PUSH_EMAIL_DB_HOST=127.0.0.1 PUSH_EMAIL_DB_PORT=9 PUSH_EMAIL_DB_WAIT_S=1
      PUSH_EMAIL_DB_CONNECT_TIMEOUT_S=1 PUSH_EMAIL_LOG_LEVEL=error
      PUSH_EMAIL_HEALTH_PORT=0 PUSH_EMAIL_TEMPLATES_DIR="$TEMPLATES")

# expect_2 NAME MUST-CONTAIN VAR=VALUE...
expect_2() {
    local name=$1 must=$2
    shift 2
    local out rc
    out=$(env "${base[@]}" "$@" timeout 20 "$BIN" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq 2 && $(printf '%s\n' "$out" | wc -l) -eq 1 && "$out" == *"$must"* ]]; then
        ok "$name: exit 2: $out"
    else
        bad "$name: want exit 2 and one line with '$must'; got $rc: $out"
    fi
}

# expect_1 NAME VAR=VALUE...: the settings pass the start-up check; it then fails on the
# database, which is not there: exit 1, naming it (not any other exit 1).
expect_1() {
    local name=$1
    shift
    local out rc
    out=$(env "${base[@]}" "$@" timeout 30 "$BIN" 2>&1)
    rc=$?
    if [[ $rc -eq 1 && "$out" == *"connect to 127.0.0.1:9"* ]]; then
        ok "$name: passes the check (then no database: exit 1)"
    else
        bad "$name: want exit 1 naming the database, got $rc: $out"
    fi
}

# A copy of the real templates with one change.
copy() {
    rm -rf "$WORK/t" && cp -r "$TEMPLATES" "$WORK/t"
}

expect_2 "Message-ID domain with an empty label" "PUSH_EMAIL_MESSAGE_ID_DOMAIN" \
    PUSH_EMAIL_MESSAGE_ID_DOMAIN=example..org
expect_2 "default locale without templates" "default locale fr has no fields file" \
    PUSH_EMAIL_DEFAULT_LOCALE=fr
copy && rm "$WORK/t/en/welcome.html"
expect_2 "a kind without its HTML part" "locale en has only 2 of welcome.subject" \
    PUSH_EMAIL_TEMPLATES_DIR="$WORK/t"
copy && rm "$WORK/t/es/password_changed.txt"
expect_2 "a half-translated kind in another locale" "locale es has only 2 of password_changed" \
    PUSH_EMAIL_TEMPLATES_DIR="$WORK/t"
copy && rm "$WORK/t/pt-BR/fields"
expect_2 "a locale without its field labels" "locale pt-BR has no fields file" \
    PUSH_EMAIL_TEMPLATES_DIR="$WORK/t"
copy && sed -i 's/{{full_name}}/{{ful_name}}/' "$WORK/t/es/welcome.txt"
expect_2 "a typo in a variable name" "unknown variable {{ful_name}}" \
    PUSH_EMAIL_TEMPLATES_DIR="$WORK/t"
copy && printf 'Hola {{#changes}}{{label}}\n' > "$WORK/t/es/profile_changed.txt"
expect_2 "a template with an unclosed section" "profile_changed email in locale es" \
    PUSH_EMAIL_TEMPLATES_DIR="$WORK/t"

# Settings checked before anything waits (they used to fail late, after the database wait,
# with exit 1 and no variable named).
expect_2 "a host name as the health address" "PUSH_EMAIL_HEALTH_ADDR: must be a numeric" \
    PUSH_EMAIL_HEALTH_ADDR=localhost
expect_2 "an address with a port as the health address" "PUSH_EMAIL_HEALTH_ADDR" \
    PUSH_EMAIL_HEALTH_ADDR=0.0.0.0:8081
expect_2 "a database name that is not an identifier" "PUSH_EMAIL_DB_NAME: must be 1 to 64" \
    PUSH_EMAIL_DB_NAME=notifications-db
expect_2 "a migrations directory that is not there" \
    "PUSH_EMAIL_MIGRATIONS_DIR: cannot open directory /nonexistent/m" \
    PUSH_EMAIL_MIGRATIONS_DIR=/nonexistent/m
expect_2 "a CA file that is not there" \
    "PUSH_EMAIL_SMTP_CA_FILE: cannot read /nonexistent/ca.pem: No such file or directory" \
    PUSH_EMAIL_SMTP_CA_FILE=/nonexistent/ca.pem
expect_2 "a directory as the CA file" "PUSH_EMAIL_SMTP_CA_FILE: cannot read $WORK: not a regular file" \
    PUSH_EMAIL_SMTP_CA_FILE="$WORK"
expect_2 "an SMTP URL of another scheme" "PUSH_EMAIL_SMTP_URL: must be smtp://host[:port] or smtps://" \
    PUSH_EMAIL_SMTP_URL=http://127.0.0.1:1025
expect_2 "an SMTP URL without a host" "PUSH_EMAIL_SMTP_URL: must be" PUSH_EMAIL_SMTP_URL=smtp://
expect_2 "an SMTP URL with a bad port" "PUSH_EMAIL_SMTP_URL: must be" \
    PUSH_EMAIL_SMTP_URL=smtp://mail.example.org:99999
expect_2 "credentials in the SMTP URL" "PUSH_EMAIL_SMTP_URL: must not hold a user" \
    PUSH_EMAIL_SMTP_URL=smtp://u:p@mail.example.org PUSH_EMAIL_SMTP_STARTTLS=required
expect_2 "a password that could go in clear (STARTTLS opportunistic, the default)" \
    "PUSH_EMAIL_SMTP_STARTTLS: must be required when a username is set" \
    PUSH_EMAIL_SMTP_USERNAME=notify@example.org PUSH_EMAIL_SMTP_PASSWORD=pw
expect_2 "a username without a password" "PUSH_EMAIL_SMTP_PASSWORD: must be set when the username is" \
    PUSH_EMAIL_SMTP_USERNAME=notify@example.org PUSH_EMAIL_SMTP_STARTTLS=required
expect_2 "an unknown SASL mechanism" "PUSH_EMAIL_SMTP_AUTH_MECHS: must be SASL mechanisms" \
    PUSH_EMAIL_SMTP_AUTH_MECHS="PLAIN XOAUTH2"
expect_2 "no Kafka brokers" "PUSH_EMAIL_KAFKA_BROKERS: must not be empty" PUSH_EMAIL_KAFKA_BROKERS=
expect_2 "a blank group id" "PUSH_EMAIL_GROUP_ID: must not be empty" "PUSH_EMAIL_GROUP_ID=  "
expect_2 "no topic" "PUSH_EMAIL_TOPIC: must not be empty" PUSH_EMAIL_TOPIC=
expect_2 "the DLQ as the topic" "PUSH_EMAIL_DLQ_TOPIC: must differ from PUSH_EMAIL_TOPIC" \
    PUSH_EMAIL_DLQ_TOPIC=cdc.info-user
printf -- '-----BEGIN CERTIFICATE-----\n' > "$WORK/ca.pem"
expect_1 "a readable CA file" PUSH_EMAIL_SMTP_CA_FILE="$WORK/ca.pem"
expect_1 "an empty CA file setting (the system CAs, as unset)" PUSH_EMAIL_SMTP_CA_FILE=

# A migration file no retry can mend (a bad name) fails at once, not after the database
# wait: exit 1 within seconds though PUSH_EMAIL_DB_WAIT_S is 60.
mkdir -p "$WORK/mig" && printf 'SELECT 1;\n' > "$WORK/mig/V1_one_underscore.sql"
t0=$SECONDS
out=$(env "${base[@]}" PUSH_EMAIL_DB_WAIT_S=60 PUSH_EMAIL_LOG_LEVEL=info \
      PUSH_EMAIL_MIGRATIONS_DIR="$WORK/mig" timeout 50 "$BIN" 2>&1)
rc=$?
if [[ $rc -eq 1 && $((SECONDS - t0)) -le 10 && "$out" == *"waiting cannot help"* &&
      "$out" == *"V1_one_underscore.sql"* ]]; then
    ok "a badly named migration: exit 1 after $((SECONDS - t0)) s, no wait"
else
    bad "a badly named migration: want exit 1 at once naming the file, got $rc after $((SECONDS - t0)) s: $(printf '%s' "$out" | tail -2)"
fi

# A good configuration passes the check and fails later, on the absent database: exit 1.
expect_1 "the shipped templates"
expect_1 "SMTP credentials with STARTTLS required" PUSH_EMAIL_SMTP_USERNAME=notify@example.org \
    PUSH_EMAIL_SMTP_PASSWORD=pw PUSH_EMAIL_SMTP_STARTTLS=required
expect_1 "SMTP credentials on smtps://, LOGIN or CRAM-MD5" PUSH_EMAIL_SMTP_URL=smtps://mail.example.org \
    PUSH_EMAIL_SMTP_USERNAME=n PUSH_EMAIL_SMTP_PASSWORD=pw PUSH_EMAIL_SMTP_AUTH_MECHS=login,cram-md5

# SIGTERM while it waits for the database: exit 0.
env "${base[@]}" PUSH_EMAIL_DB_WAIT_S=60 "$BIN" >"$WORK/wait.log" 2>&1 &
pid=$!
sleep 2
kill -TERM "$pid"
t0=$SECONDS
wait "$pid"
rc=$?
if [[ $rc -eq 0 && $((SECONDS - t0)) -le 10 ]]; then
    ok "SIGTERM while waiting for the database: exit 0 in $((SECONDS - t0)) s"
else
    bad "SIGTERM while waiting for the database: want exit 0, got $rc after $((SECONDS - t0)) s: $(tail -3 "$WORK/wait.log")"
fi

echo "push_email_config: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
