#!/usr/bin/env bash
# Runs one libFuzzer binary for a bounded time over a scratch copy of its seed corpus.
# ctest calls this for every fuzz target (label fuzz); it can also be run by hand.
#
# Usage: tests/fuzz/run-fuzzer.sh FUZZER_BINARY SEED_CORPUS_DIR WORK_DIR
#   FUZZ_SECONDS  total fuzzing time (default 30), passed as -max_total_time
#
# The seeds are copied to WORK_DIR/corpus (the fuzzer adds what it finds there; the
# committed seed corpus is never written). A crash, leak, timeout or OOM input is written
# to WORK_DIR/artifacts/ and makes this script exit non-zero, naming the file and the
# command that reproduces it.
set -euo pipefail

if (($# != 3)); then
    echo "usage: $0 FUZZER_BINARY SEED_CORPUS_DIR WORK_DIR" >&2
    exit 2
fi
fuzzer=$1
seeds=$2
work=$3
name=$(basename "$fuzzer")
seconds=${FUZZ_SECONDS:-30}

if [[ ! "$seconds" =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "run-fuzzer: FUZZ_SECONDS must be a positive integer, got '$seconds'" >&2
    exit 2
fi
if [[ ! -x "$fuzzer" ]]; then
    echo "run-fuzzer: fuzzer binary not found or not executable: $fuzzer" >&2
    exit 2
fi

# Every target has a committed seed corpus: a missing one is a broken checkout or a wrong
# path, and fuzzing from nothing would pass while testing far less.
if [[ ! -d "$seeds" ]]; then
    echo "run-fuzzer: seed corpus directory not found: $seeds" >&2
    echo "run-fuzzer: each fuzz target's seeds are committed under tests/fuzz/*/corpus/<name>/" >&2
    exit 2
fi

mkdir -p "$work"
work=$(cd "$work" && pwd)
fuzzer=$(cd "$(dirname "$fuzzer")" && pwd)/$(basename "$fuzzer")
corpus="$work/corpus"
artifacts="$work/artifacts"
rm -rf "$corpus"
mkdir -p "$corpus" "$artifacts"
cp -R "$seeds"/. "$corpus"/
nseeds=$(find "$corpus" -type f | wc -l)
if ((nseeds == 0)); then
    echo "run-fuzzer: seed corpus $seeds holds no file" >&2
    exit 2
fi

# Crash on any sanitizer report so that libFuzzer writes the input out. Callers may
# override these.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

marker="$work/.started"
: >"$marker"

echo "run-fuzzer: $name for ${seconds}s, $nseeds seed(s) from $seeds"
echo "run-fuzzer: corpus $corpus, artifacts $artifacts/"

# -max_total_time bounds the run; the outer timeout only guards against a wedged process.
rc=0
timeout --kill-after=30 "$((seconds * 2 + 120))" \
    "$fuzzer" \
    -max_total_time="$seconds" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    "$corpus" || rc=$?

mapfile -t found < <(find "$artifacts" -type f -newer "$marker" | sort)

if ((rc != 0)) || ((${#found[@]} > 0)); then
    echo "run-fuzzer: FAILED: $name exited with status $rc" >&2
    if ((${#found[@]} > 0)); then
        for f in "${found[@]}"; do
            echo "run-fuzzer: input that fails: $f" >&2
            echo "run-fuzzer: reproduce with: $fuzzer $f" >&2
        done
    else
        echo "run-fuzzer: no crash input was written (see the output above)" >&2
    fi
    ((rc != 0)) || rc=1
    exit "$rc"
fi
echo "run-fuzzer: OK: $name ran ${seconds}s without a finding; corpus now $(find "$corpus" -type f | wc -l) input(s)"
