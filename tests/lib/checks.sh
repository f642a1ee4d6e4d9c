# shellcheck shell=bash
# checks.sh: the check/summary helpers of the shell tests, printed in cmocka's style.
#   check 'CONDITION' "what it checks"    evaluates CONDITION, counts and prints the result
#   checks_finish NAME                    prints the summary; exits 1 when a check failed
#                                         or none ran
pass=0
fail=0
check() {
    if eval "$1"; then
        pass=$((pass + 1))
        echo "[       OK ] $2"
    else
        fail=$((fail + 1))
        echo "[  FAILED  ] $2"
    fi
}
checks_finish() {
    echo "[==========] $1: $((pass + fail)) checks ran."
    echo "[  PASSED  ] $pass checks."
    if [ "$fail" != 0 ] || [ "$pass" = 0 ]; then
        echo "[  FAILED  ] $fail checks."
        exit 1
    fi
    exit 0
}
