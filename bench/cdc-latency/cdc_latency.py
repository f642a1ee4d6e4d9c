#!/usr/bin/env python3
"""Commit-to-topic latency of the CDC pipeline: userdata REST PATCH -> MariaDB binlog ->
Debezium (Kafka Connect) -> cdc.info-user -> a consumer on the same machine.

For each of N updates of one user, the latency is the consumer's receive clock minus the
row's updated_at (DATETIME(6), set by userdata in the updating transaction; Debezium sends
it as epoch microseconds). Same host, same clock. Also split at the Kafka message
timestamp (CreateTime, set by Connect's producer): row -> produced, produced -> received.

  . .stack/env   # or STACK_DIR=...; needs a running `scripts/stack up`
  bench/cdc-latency/cdc_latency.py [--updates 1000] [--rate 20]

--rate is updates per second (0 = back to back, each PATCH waits for the previous one).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid


def load_env():
    env = {}
    path = os.path.join(os.environ.get("STACK_DIR", os.path.join(
        os.path.dirname(__file__), "..", "..", ".stack")), "env")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].strip().split("=", 1)
                env[k] = v
    return env


def call(env, method, path, body, ctype="application/json"):
    req = urllib.request.Request(env["USERDATA_URL"] + "/api/v1/users" + path,
                                 data=json.dumps(body).encode(), method=method)
    req.add_header("Authorization", "Bearer " + env["USERDATA_TOKEN"])
    req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    env = load_env()

    # Consumer from the end of the topic; receive time taken when kcat's line arrives.
    kc = subprocess.Popen(["kcat", "-C", "-b", env["KAFKA_BOOTSTRAP"], "-t", "cdc.info-user",
                           "-o", "end", "-J", "-q", "-u", "-X", "fetch.wait.max.ms=10"],
                          stdout=subprocess.PIPE, text=True, bufsize=1)
    got = {}  # version -> (recv_us, updated_at_us, kafka_ts_ms)
    done = threading.Event()
    created = threading.Event()
    uid = None

    def reader():
        for line in kc.stdout:
            recv_us = time.time_ns() // 1000
            m = json.loads(line)
            if uid is None or not m.get("payload") or json.loads(m["key"]) != {"id": uid}:
                continue
            v = json.loads(m["payload"])
            if v.get("op") == "c":
                created.set()
            after = v.get("after") or {}
            if v.get("op") == "u" and after.get("version") not in got:
                got[after["version"]] = (recv_us, after["updated_at"], m["ts"])
                if len(got) >= a.updates:
                    done.set()
                    return

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(2)  # let kcat reach the end of the topic
    # The user is created once the consumer runs, and the updates start only when its
    # create event has arrived: then the consumer is positioned and sees every update.
    name = "lat" + uuid.uuid4().hex[:10]
    uid = call(env, "POST", "", {"username": name, "email": name + "@example.org",
                                 "password": "correct horse battery staple"})["id"]
    if not created.wait(60):
        print("cdc-latency: the create event did not arrive within 60 s", file=sys.stderr)
        kc.terminate()
        return 1

    gap = 1.0 / a.rate if a.rate > 0 else 0.0
    t0 = time.monotonic()
    for i in range(1, a.updates + 1):
        call(env, "PATCH", "/" + uid, {"full_name": f"bench {i}"},
             ctype="application/merge-patch+json")
        if gap:
            next_t = t0 + i * gap
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    sent_s = time.monotonic() - t0
    done.wait(a.timeout)
    kc.terminate()

    lat = sorted((r - u) / 1000.0 for r, u, _ in got.values())
    produce = sorted((ts * 1000 - u) / 1000.0 for _, u, ts in got.values())
    deliver = sorted((r - ts * 1000) / 1000.0 for r, _, ts in got.values())
    print(f"cdc-latency: {len(got)}/{a.updates} updates received "
          f"(sent in {sent_s:.1f} s, rate {'max' if not a.rate else a.rate}/s)")
    for label, vals in (("commit->consumer", lat), ("  commit->produced", produce),
                        ("  produced->consumer", deliver)):
        print(f"{label:22s} p50 {pct(vals, 50):8.1f} ms   p99 {pct(vals, 99):8.1f} ms   "
              f"max {max(vals) if vals else float('nan'):8.1f} ms")
    # Kafka timestamps are milliseconds: the split has +-1 ms resolution.
    return 0 if len(got) == a.updates else 1


if __name__ == "__main__":
    sys.exit(main())
