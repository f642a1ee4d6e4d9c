# shellcheck shell=bash
# stack-fetch.sh: installs what the local stack needs and is missing. Sourced by
# scripts/stack after stack-common.sh. Every download is skipped when its result is
# present, so a warm `up` downloads nothing; the services' builds are incremental and run
# on every `up`.
#
#  - Debian packages: `scripts/lib/install-deps.sh --only`, with exactly the missing
#    command and build packages named here (nothing else, no npm step)
#  - Kafka 3.9.0 + Connect jars and the Debezium plugin archives: Maven Central through
#    stack/pom.xml into $STACK_CACHE/kafka-libs and $STACK_CACHE/plugin-archives; the
#    archives are unpacked into $STACK_CACHE/connect-plugins (Connect's plugin.path)
#  - maildev: npm registry into $STACK_CACHE/maildev

# Debian packages the stack needs, by the command they provide. Only the packages of
# missing commands are passed on: e.g. `npm` is installed only when there is no npm
# command (NodeSource's nodejs ships its own npm, and Debian's npm package conflicts with
# it). Besides the commands, the packages the services' build needs are checked
# (`install-deps.sh --check`, dpkg only): a machine with all the commands but without, say,
# libmicrohttpd-dev could not build userdata. Only those: a package the stack does not use
# (valgrind, wrk, ...) missing, or without an install candidate, must not make every `up`
# run apt-get.
STACK_BUILD_PACKAGES=(build-essential pkg-config libmicrohttpd-dev libmariadb-dev libcjson-dev
    libcmocka-dev libsodium-dev libjwt-dev librdkafka-dev libcurl4-openssl-dev uuid-dev)
ensure_debian_tools() {
    local missing=() c pkgs=""
    for c in java:openjdk-17-jre-headless mvn:maven node:nodejs npm:npm jq:jq curl:curl \
        kcat:kcat mariadbd:mariadb-server mariadb-install-db:mariadb-server \
        mariadb-admin:mariadb-client mariadb:mariadb-client cmake:cmake flock:util-linux \
        setsid:util-linux; do
        local cmd="${c%%:*}" pkg="${c#*:}"
        if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ]; then
            case " ${missing[*]} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
        fi
    done
    if pkgs="$("$STACK_REPO/scripts/lib/install-deps.sh" --check "${STACK_BUILD_PACKAGES[@]}" 2>/dev/null)" &&
        ((${#missing[@]} == 0)); then
        return 0
    fi
    # Exactly what is missing, nothing else (--only): a package only the tests need,
    # missing or without an install candidate, cannot hold the stack up.
    local need=("${missing[@]}")
    [ -n "$pkgs" ] && mapfile -t -O "${#need[@]}" need <<<"$pkgs"
    log "missing packages: ${need[*]}; installing through scripts/lib/install-deps.sh --only"
    "$STACK_REPO/scripts/lib/install-deps.sh" --only "${need[@]}" || die "installing ${need[*]} failed"
}

# A stamp per pom content: changing a version in stack/pom.xml fetches again.
pom_stamp() {
    echo "$STACK_CACHE/.fetched-$(sha256sum "$STACK_REPO/stack/pom.xml" | cut -c1-16)"
}

ensure_jars() {
    local stamp
    stamp="$(pom_stamp)"
    if [ -f "$stamp" ] && [ -n "$(ls "$KAFKA_LIBS"/kafka_2.13-*.jar 2>/dev/null)" ]; then
        return 0
    fi
    log "fetching Kafka/Connect jars and Debezium plugins from Maven Central (stack/pom.xml)"
    local t0=$SECONDS
    mkdir -p "$LOG_DIR"
    rm -rf "$KAFKA_LIBS" "$STACK_CACHE/plugin-archives" "$PLUGIN_DIR"
    if ! mvn -B -q -f "$STACK_REPO/stack/pom.xml" -Dstack.cache="$STACK_CACHE" \
        process-resources >"$LOG_DIR/fetch.log" 2>&1; then
        tail -n 40 "$LOG_DIR/fetch.log" >&2
        die "mvn could not fetch the jars (log: $LOG_DIR/fetch.log)"
    fi
    mkdir -p "$PLUGIN_DIR"
    local a
    for a in "$STACK_CACHE"/plugin-archives/*.tar.gz; do
        tar -xzf "$a" -C "$PLUGIN_DIR" || die "cannot unpack $a"
    done
    touch "$stamp"
    log "jars fetched in $((SECONDS - t0))s: $(ls "$KAFKA_LIBS" | wc -l) jars, plugins: $(ls "$PLUGIN_DIR" | tr '\n' ' ')"
}

ensure_maildev() {
    if [ -f "$MAILDEV_DIR/node_modules/maildev/package.json" ] &&
        grep -q "\"version\": \"$MAILDEV_VERSION\"" "$MAILDEV_DIR/node_modules/maildev/package.json"; then
        return 0
    fi
    log "installing maildev $MAILDEV_VERSION from npm into $MAILDEV_DIR"
    mkdir -p "$MAILDEV_DIR" "$LOG_DIR"
    # 2.2.1, not 3.x: maildev 3.0.0 depends on an @zone-eu/mailsplit version that the
    # registry does not serve (ETARGET).
    if ! npm install --prefix "$MAILDEV_DIR" --no-save --no-package-lock --omit=dev \
        --no-audit --no-fund "maildev@$MAILDEV_VERSION" >"$LOG_DIR/npm.log" 2>&1; then
        tail -n 30 "$LOG_DIR/npm.log" >&2
        die "npm install maildev failed (log: $LOG_DIR/npm.log)"
    fi
}

# build_target TARGET: configures BUILD_DIR when it has no cache yet, then the incremental
# `cmake --build` of TARGET, on every `up` (about a second when nothing changed), so that
# `up` after a code change runs the new code, not a stale binary.
build_target() {
    if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
        cmake -S "$STACK_REPO" -B "$BUILD_DIR" || return 1
    fi
    cmake --build "$BUILD_DIR" --target "$1" -j "$(nproc)"
}

# A binary named by STACK_USERDATA_BIN / STACK_PUSH_EMAIL_BIN is the caller's (the tests
# pass the one their build made): used as it is when it exists, never rebuilt here.
ensure_userdata_bin() {
    if [ -n "${STACK_USERDATA_BIN:-}" ] && [ -x "$USERDATA_BIN" ]; then
        return 0
    fi
    log "building userdata: cmake --build $BUILD_DIR --target userdata"
    mkdir -p "$LOG_DIR"
    if ! build_target userdata >"$LOG_DIR/build.log" 2>&1; then
        tail -n 40 "$LOG_DIR/build.log" >&2
        die "building userdata failed (log: $LOG_DIR/build.log)"
    fi
    [ -x "$USERDATA_BIN" ] || die "build finished but $USERDATA_BIN does not exist"
}

# push-email is optional while it is being written: a build failure is reported loudly
# but does not stop the rest of the stack (returns 1; the caller skips push-email).
ensure_push_email_bin() {
    if [ -n "${STACK_PUSH_EMAIL_BIN:-}" ] && [ -x "$PUSH_EMAIL_BIN" ]; then
        return 0
    fi
    log "building push-email: cmake --build $BUILD_DIR --target push-email"
    mkdir -p "$LOG_DIR"
    if ! build_target push-email >"$LOG_DIR/build-push-email.log" 2>&1 ||
        [ ! -x "$PUSH_EMAIL_BIN" ]; then
        tail -n 20 "$LOG_DIR/build-push-email.log" >&2
        log "WARNING: building push-email failed (log: $LOG_DIR/build-push-email.log); push-email NOT started"
        return 1
    fi
}
