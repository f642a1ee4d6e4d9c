#!/usr/bin/env python3
"""watch.py: waits for a measured phase of bench/push-email/run.sh to finish, cheaply.

Every 0.2 s it counts the lines the sink has logged (reading only what was appended) and
appends the watched process's VmRSS (kB) to --rss. It exits 0 once the sink has logged
--count messages, 1 when the process exits first, 2 on --timeout. One process and no
forks: the shell loop it replaces (wc, awk, date and sleep five times a second) cost a few
per cent of a core during push-email's phase only, on a 2-core machine where that is the
margin being measured. run.sh runs it in both phases (push-email and the baseline).
"""
import argparse
import os
import sys
import time


def vm_rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--sink-log", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rss", required=True)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()

    deadline = time.monotonic() + a.timeout
    lines = 0
    with open(a.sink_log, "rb") as sink, open(a.rss, "a") as rss:
        while True:
            lines += sink.read().count(b"\n")
            if lines >= a.count:
                return 0
            kb = vm_rss_kb(a.pid)
            if kb is None:
                print(f"watch: process {a.pid} exited after {lines} of {a.count}", file=sys.stderr)
                return 1
            rss.write(f"{kb}\n")
            if time.monotonic() > deadline:
                print(f"watch: timeout after {lines} of {a.count}", file=sys.stderr)
                return 2
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
