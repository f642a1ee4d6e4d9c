#!/usr/bin/env bash
# test_image.sh SERVICE OUT_DIR: builds services/SERVICE/Dockerfile without a container
# engine (tests/images/build-image.py: debootstrapped Debian 12 roots, the Dockerfile's
# steps in a chroot), then checks the runtime image as Kubernetes would run it:
#
#   - USER is numeric and not root; no compiler, build tool or -dev package is installed
#   - every shared library of the binary resolves inside the image (ldd)
#   - as that user, `SERVICE --version` works
#   - the service runs from the image's ENTRYPOINT/CMD and ENV (its default paths inside
#     the image) against the real test MariaDB (TEST_DB_* from scripts/test): userdata
#     answers /healthz, /readyz and /openapi.yaml, mints a token and creates a user;
#     push-email applies its migrations, loads its templates and answers /healthz and
#     /metrics; both exit 0 on SIGTERM.
#
# Needs root (debootstrap, chroot, mount) and Debian's archive. Label: integration.
set -euo pipefail
SERVICE=${1:?usage: test_image.sh SERVICE OUT_DIR}
OUT=${2:?usage: test_image.sh SERVICE OUT_DIR}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${TEST_DB_HOST:?}" "${TEST_DB_PORT:?}" "${TEST_DB_USER:?}" "${TEST_DB_PASSWORD:?}"
ROOT="$OUT/rootfs"
# shellcheck source=../lib/checks.sh
. "$REPO/tests/lib/checks.sh"

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "FAIL: debootstrap is missing (scripts/lib/install-deps.sh installs it)"
    exit 1
fi
python3 "$REPO/tests/images/build-image.py" --dockerfile "$REPO/services/$SERVICE/Dockerfile" \
    --context "$REPO" --out "$OUT"

manifest() { python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$OUT/manifest.json" "$1"; }
user=$(manifest 'm["user"]')
entry=$(manifest '" ".join(m["entrypoint"] or [])')
cmd=$(manifest '" ".join(m["cmd"] or [])')
echo "image: USER $user, ENTRYPOINT $entry, CMD ${cmd:-(none)}"

# --- static checks
check '[[ "$user" =~ ^[1-9][0-9]*(:[1-9][0-9]*)?$ ]]' "USER is numeric and not root ($user)"
pkgs=$(chroot "$ROOT" dpkg-query -W -f '${Package}\n')
bad=$(grep -E -- '-dev$|^(gcc|g\+\+|cpp|clang|binutils|make|cmake|build-essential|libc6-dev)(-[0-9.]+)?$' <<<"$pkgs" || true)
check '[ -z "$bad" ]' "no compiler, build tool or -dev package in the image${bad:+ (found: $(tr '\n' ' ' <<<"$bad"))}"
check '! ls "$ROOT"/usr/bin/{gcc,cc,c++,cmake,make,ld} >/dev/null 2>&1' "no gcc, cc, cmake, make or ld in /usr/bin"
bin=${entry%% *}
missing=$(chroot "$ROOT" ldd "$bin" | grep 'not found' || true)
check '[ -z "$missing" ]' "every library of $bin resolves in the image${missing:+: $missing}"
uid=${user%%:*}
gid=${user#*:}
[ "$gid" = "$user" ] && gid=$uid
version=$(chroot --userspec="$uid:$gid" "$ROOT" "$bin" --version 2>&1) || true
check '[[ "$version" == "$SERVICE "* ]]' "$SERVICE --version as $uid:$gid: $version"

# --- run it as Kubernetes would: ENTRYPOINT + CMD, the image's ENV, its user
mounted=()
svc_pid=""
cleanup() {
    [ -n "$svc_pid" ] && kill -KILL "$svc_pid" 2>/dev/null || true
    for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT
for sub in proc dev; do
    mkdir -p "$ROOT/$sub"
done
mount -t proc proc "$ROOT/proc" && mounted+=("$ROOT/proc")
mount --bind /dev "$ROOT/dev" && mounted+=("$ROOT/dev")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
image_env=()
while IFS= read -r kv; do image_env+=("$kv"); done < <(manifest '"\n".join(k+"="+v for k,v in m["env"].items())')
log="$OUT/run.log"
http() { curl -sS -o "$OUT/body" -w '%{http_code}' --max-time 5 "$@" 2>/dev/null || true; }
wait_http() { # url: waits up to 60 s for a 200
    local i
    for i in $(seq 1 240); do
        [ "$(http "$1")" = 200 ] && return 0
        kill -0 "$svc_pid" 2>/dev/null || return 1
        sleep 0.25
    done
    return 1
}
run_env=()
case "$SERVICE" in
userdata)
    db=userdata_image_test_$$
    run_env=("${image_env[@]}" USERDATA_LISTEN_ADDR=127.0.0.1 "USERDATA_PORT=$port"
        "USERDATA_DB_HOST=$TEST_DB_HOST" "USERDATA_DB_PORT=$TEST_DB_PORT"
        "USERDATA_DB_USER=$TEST_DB_USER" "USERDATA_DB_PASSWORD=$TEST_DB_PASSWORD"
        "USERDATA_DB_NAME=$db" "USERDATA_JWT_SECRET=image-test-secret-0123456789abcdef"
        USERDATA_PWHASH_OPSLIMIT=1 USERDATA_PWHASH_MEMLIMIT_KIB=8192)
    base="http://127.0.0.1:$port"
    ;;
push-email)
    db=userdata_image_notifications_$$
    run_env=("${image_env[@]}" PUSH_EMAIL_HEALTH_ADDR=127.0.0.1 "PUSH_EMAIL_HEALTH_PORT=$port"
        "PUSH_EMAIL_DB_HOST=$TEST_DB_HOST" "PUSH_EMAIL_DB_PORT=$TEST_DB_PORT"
        "PUSH_EMAIL_DB_USER=$TEST_DB_USER" "PUSH_EMAIL_DB_PASSWORD=$TEST_DB_PASSWORD"
        "PUSH_EMAIL_DB_NAME=$db" "PUSH_EMAIL_KAFKA_BROKERS=127.0.0.1:$(free_port)")
    base="http://127.0.0.1:$port"
    ;;
*)
    echo "unknown service $SERVICE"
    exit 2
    ;;
esac
# shellcheck disable=SC2086 # entry and cmd are the image's argv words
env -i "${run_env[@]}" chroot --userspec="$uid:$gid" "$ROOT" $entry $cmd >"$log" 2>&1 &
svc_pid=$!
if wait_http "$base/healthz"; then
    check true "$SERVICE started from the image (ENTRYPOINT $entry ${cmd}) and /healthz is 200"
else
    check false "$SERVICE started from the image and /healthz is 200 (log: $(tail -5 "$log"))"
fi
case "$SERVICE" in
userdata)
    check '[ "$(http "$base/readyz")" = 200 ]' "/readyz 200 (migrations from /usr/share/userdata/migrations applied)"
    check '[ "$(http "$base/openapi.yaml")" = 200 ] && head -c 20 "$OUT/body" | grep -q "^openapi: 3.1"' "/openapi.yaml served from /usr/share/userdata/openapi.yaml"
    token=$(env -i "${run_env[@]}" chroot --userspec="$uid:$gid" "$ROOT" "$bin" token 2>>"$log" || true)
    code=$(http -X POST "$base/api/v1/users" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' \
        -d '{"username":"imageuser","email":"image@example.org","password":"image test pass"}')
    check '[ "$code" = 201 ]' "userdata token + POST /api/v1/users: $code"
    ;;
push-email)
    check '[ "$(http "$base/metrics")" = 200 ] && grep -q "^push_email_events_total" "$OUT/body"' "/metrics 200 with push_email_* series"
    check 'grep -q "push-email consuming" "$log"' "templates from /usr/share/push-email/templates and migrations applied (it reached the consumer loop)"
    ;;
esac
kill -TERM "$svc_pid"
rc=0
for _ in $(seq 1 80); do
    kill -0 "$svc_pid" 2>/dev/null || break
    sleep 0.25
done
wait "$svc_pid" || rc=$?
svc_pid=""
check '[ "$rc" = 0 ]' "SIGTERM: exit 0 (got $rc)"
mariadb --no-defaults --protocol=tcp -h "$TEST_DB_HOST" -P "$TEST_DB_PORT" -u "$TEST_DB_USER" \
    -p"$TEST_DB_PASSWORD" -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
checks_finish "image_$SERVICE"
