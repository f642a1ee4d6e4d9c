#!/usr/bin/env bash
# selftest.sh: proves that the k8s and Dockerfile checks can fail. Each case copies k8s/,
# connector-config/ and the Dockerfiles to a scratch dir, breaks one thing, and expects
# validate.mjs / dockerfile-lint.mjs to exit 1 naming it. Nothing in the tree is touched.
#
#   tests/k8s/selftest.sh REPO_DIR [USERDATA_BINARY]
#
# Exit 0: every break was caught; 1: some break went unnoticed; 77: no kustomize.
# $V and $L are split on purpose (node + script); $M is a mktemp path.
# shellcheck disable=SC2086
set -u
SRC=$(cd "${1:?usage: selftest.sh REPO_DIR [USERDATA_BINARY]}" && pwd)
BIN=${2:-}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
V="node $HERE/validate.mjs"
L="node $HERE/dockerfile-lint.mjs"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
M=$WORK/mut
missed=0 caught=0
# The cases edit copies only: copies are made with -L (a symlinked REPO_DIR or k8s/ must
# never lead sed -i back into the real tree), and the tree is checksummed before/after.
tree_sum() { (cd "$SRC" && find k8s connector-config services/userdata/Dockerfile services/push-email/Dockerfile -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
BEFORE=$(tree_sum)
fresh() {
    rm -rf "$M" && mkdir -p "$M/services/userdata" "$M/services/push-email" &&
        cp -rL "$SRC/k8s" "$SRC/connector-config" "$M/" &&
        cp -L "$SRC/services/userdata/Dockerfile" "$M/services/userdata/" &&
        cp -L "$SRC/services/push-email/Dockerfile" "$M/services/push-email/" || exit 2
    if [ -n "$(find "$M" -type l)" ]; then echo "selftest: symlinks in the copy; refusing"; exit 2; fi
}
expect_fail() { # name, command...
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq 77 ]; then echo "selftest: SKIPPED: $(tail -1 <<<"$out")"; exit 77; fi
    if [ $rc -eq 1 ] && grep -q '^FAIL' <<<"$out"; then
        caught=$((caught + 1))
        echo "caught  $name: $(grep -m1 '^FAIL' <<<"$out")"
    else
        missed=$((missed + 1))
        echo "MISSED  $name (exit $rc)"
        tail -3 <<<"$out"
    fi
}
PROD="--external-secret mariadb-credentials,userdata-jwt,smtp-credentials"
fresh; sed -i 's/replicas: 2/replicas: "2"/' $M/k8s/overlays/prod/userdata-replicas.yaml
expect_fail "wrong type (replicas string)" $V --repo $M --overlay prod $PROD
fresh; sed -i '0,/        - name: userdata$/s//        - nameX: userdata/' $M/k8s/base/userdata/deployment.yaml
expect_fail "missing required field (container name)" $V --repo $M --overlay dev
fresh; sed -i 's#containerPort: 8081#containerPort: "8081"#' $M/k8s/base/push-email/deployment.yaml
expect_fail "wrong type (containerPort string)" $V --repo $M --overlay dev
fresh; sed -i 's#image: localhost:32000/push-email#image: docker.io/someone/push-email:1.0#' $M/k8s/base/push-email/deployment.yaml
expect_fail "push-email image not from localhost:32000" $V --repo $M --overlay dev
fresh; sed -i 's#image: localhost:32000/userdata#image: ghcr.io/x/userdata:1.0#' $M/k8s/base/userdata/deployment.yaml
expect_fail "userdata image not from localhost:32000" $V --repo $M --overlay prod $PROD
fresh; sed -i '/name: localhost:32000\/userdata/{n;s/newTag: dev/newTag: latest/}' $M/k8s/overlays/dev/kustomization.yaml
expect_fail "userdata :latest tag" $V --repo $M --overlay dev
fresh; sed -i '/livenessProbe:/,/port:/s/port: health/port: http/' $M/k8s/base/userdata/deployment.yaml
expect_fail "userdata liveness probe behind the API's workers (port http)" $V --repo $M --overlay dev
fresh; sed -i '/name: USERDATA_HEALTH_PORT/,+1d' $M/k8s/base/userdata/deployment.yaml
expect_fail "userdata probes' port never opened (no USERDATA_HEALTH_PORT)" $V --repo $M --overlay dev
fresh; sed -i '/name: mariadb-clients/,/^---/{/app.kubernetes.io\/name: push-email/s/push-email/push-mail/}' $M/k8s/base/network-policies.yaml
expect_fail "network policy: push-email cannot reach MariaDB" $V --repo $M --overlay dev
fresh; sed -i '/name: kafka-clients/,/^---/s/- port: kafka/- port: 9093/' $M/k8s/base/network-policies.yaml
expect_fail "network policy: Kafka's port not the one clients use" $V --repo $M --overlay prod $PROD
fresh; sed -i 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' $M/k8s/base/userdata/deployment.yaml
expect_fail "userdata root fs writable" $V --repo $M --overlay dev
fresh; sed -i 's#path: /readyz#path: /ready#' $M/k8s/base/push-email/deployment.yaml
expect_fail "push-email readiness path" $V --repo $M --overlay dev
fresh; sed -i 's#runAsNonRoot: true##' $M/k8s/base/kafka/statefulset.yaml
expect_fail "kafka runAsNonRoot missing" $V --repo $M --overlay dev
fresh; sed -i 's#secretName: userdata-jwt#secretName: userdata-jwt-typo#' $M/k8s/base/userdata/deployment.yaml
expect_fail "secret name typo" $V --repo $M --overlay dev
fresh; sed -i '/fsGroup: 10001/d' $M/k8s/base/push-email/deployment.yaml
expect_fail "push-email secret files unreadable (0440, no fsGroup)" $V --repo $M --overlay dev
fresh; sed -i '/fsGroup: 10001/d; 0,/defaultMode: 0440/s//defaultMode: 0400/' $M/k8s/base/userdata/deployment.yaml
expect_fail "userdata secret files unreadable (0400, no fsGroup)" $V --repo $M --overlay prod $PROD
fresh; sed -i 's#key: debezium-password#key: debezium-pasword#' $M/k8s/base/connect/deployment.yaml
expect_fail "secret key typo" $V --repo $M --overlay dev
fresh; sed -i '/^          resources:/,/^          securityContext:/{/securityContext:/!d}' $M/k8s/base/connect/deployment.yaml
expect_fail "connect without resources" $V --repo $M --overlay dev
# connector JSON byte-identity: the ConfigMap generated from a copy that differs by one byte
fresh; sed 's/"tasks.max": "1"/"tasks.max": "2"/' $M/connector-config/userdata-cdc.mariadb.json > $M/connector-config/copy.txt
sed -i 's#      - userdata-cdc.mariadb.json#      - userdata-cdc.mariadb.json=copy.txt#' $M/connector-config/kustomization.yaml
expect_fail "connector JSON in ConfigMap differs" $V --repo $M --overlay dev --connector-config $M/connector-config
fresh; sed -i '/      - userdata-cdc.mysql.json/d' $M/connector-config/kustomization.yaml
expect_fail "connector JSON missing from ConfigMap" $V --repo $M --overlay prod --connector-config $M/connector-config
fresh; sed -i 's#/etc/connector-config/userdata-cdc.mariadb.json#/etc/connector-config/userdata-cdc.json#' $M/k8s/base/connect/register-job.yaml
expect_fail "register Job runs a file the ConfigMap lacks" $V --repo $M --overlay dev --connector-config $M/connector-config
# Dockerfiles
UD="--service userdata --env USERDATA_LISTEN_ADDR=0.0.0.0 --env USERDATA_MIGRATIONS_DIR=/usr/share/userdata/migrations --env USERDATA_OPENAPI_PATH=/usr/share/userdata/openapi.yaml"
fresh; sed -i 's/libmicrohttpd12 libmariadb3/libmicrohttpd12 libmariadb-dev libmariadb3/' $M/services/userdata/Dockerfile
expect_fail "runtime installs a -dev package" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; sed -i 's/      librdkafka1 libcurl4/      gcc librdkafka1 libcurl4/' $M/services/push-email/Dockerfile
expect_fail "runtime installs a compiler" $L --dockerfile $M/services/push-email/Dockerfile --service push-email
fresh; sed -i '/^USER /d' $M/services/userdata/Dockerfile
expect_fail "no USER" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; sed -i 's/^USER 10001:10001/USER userdata/' $M/services/push-email/Dockerfile
expect_fail "non-numeric USER" $L --dockerfile $M/services/push-email/Dockerfile --service push-email
fresh; sed -i 's/^USER 10001:10001/USER 0/' $M/services/userdata/Dockerfile
expect_fail "USER 0" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; echo 'HEALTHCHECK CMD ["/usr/local/bin/userdata", "--version"]' >> $M/services/userdata/Dockerfile
expect_fail "HEALTHCHECK" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; sed -i 's/ libjwt0 / /' $M/services/userdata/Dockerfile
if [ -n "$BIN" ] && [ -x "$BIN" ]; then
    expect_fail "runtime lacks libjwt0 (binary needs libjwt.so.0)" $L --dockerfile $M/services/userdata/Dockerfile $UD --binary "$BIN"
fi
fresh; sed -i 's/libjwt0/libjwt1/' $M/services/userdata/Dockerfile
expect_fail "runtime package not in Debian 12" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; sed -i 's#USERDATA_MIGRATIONS_DIR=/usr/share/userdata/migrations#USERDATA_MIGRATIONS_DIR=/src/services/userdata/migrations#' $M/services/userdata/Dockerfile
expect_fail "migrations env default wrong" $L --dockerfile $M/services/userdata/Dockerfile $UD
fresh; sed -i 's#--target userdata#--target all#' $M/services/userdata/Dockerfile
expect_fail "builds more than the service target" $L --dockerfile $M/services/userdata/Dockerfile $UD

if [ "$(tree_sum)" != "$BEFORE" ]; then
    echo "selftest: ERROR: the source tree changed while the selftest ran"
    exit 1
fi
echo "selftest: $caught break(s) caught, $missed missed"
[ "$missed" -eq 0 ] && [ "$caught" -gt 0 ]
