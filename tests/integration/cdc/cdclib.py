"""Helpers of the CDC integration tests: the stack's env file, REST calls to userdata,
reading cdc.info-user with kcat, and a check counter that prints a summary.

The stack is started by the ctest fixture (stack-fixture.sh up) on private ports; its
STACK_DIR is passed in the environment and $STACK_DIR/env holds URLs and a dev token.
"""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib"))
from checks import Checks, load_env  # noqa: E402,F401  (re-exported to the tests)

TOPIC = "cdc.info-user"


class Userdata:
    def __init__(self, env):
        self.base = env["USERDATA_URL"] + "/api/v1/users"
        self.token = env["USERDATA_TOKEN"]

    def call(self, method, path="", body=None, ctype="application/json", headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def create(self, **fields):
        return self.call("POST", "", fields)

    def patch(self, uid, **fields):
        return self.call("PATCH", "/" + uid, fields, ctype="application/merge-patch+json")

    def delete(self, uid):
        return self.call("DELETE", "/" + uid)


def unique_name(prefix):
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def consume_all(bootstrap, timeout_s=10):
    """Every message of cdc.info-user, as dicts {offset, key, value, raw_value}; value is
    None for a tombstone."""
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", TOPIC, "-o", "beginning", "-e", "-J", "-q"],
        capture_output=True, text=True, timeout=timeout_s + 30)
    if out.returncode != 0 and "Unknown topic" in out.stderr:
        return []  # nothing produced yet: the topic is made with the first event
    if out.returncode != 0:
        raise RuntimeError(f"kcat failed ({out.returncode}): {out.stderr.strip()}")
    msgs = []
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        m = json.loads(line)
        key = json.loads(m["key"]) if m.get("key") else None
        raw = m.get("payload")
        msgs.append({"offset": m["offset"], "key": key, "raw_value": raw,
                     "value": json.loads(raw) if raw is not None else None})
    return msgs


def wait_for(bootstrap, pred, timeout_s, what):
    """Consumes until pred(messages) is true; returns the messages (or the last seen ones
    after timeout_s, with a note)."""
    deadline = time.monotonic() + timeout_s
    msgs = []
    while time.monotonic() < deadline:
        msgs = consume_all(bootstrap)
        if pred(msgs):
            return msgs
        time.sleep(1)
    print(f"note: gave up waiting after {timeout_s}s for {what}", flush=True)
    return msgs


def for_key(msgs, uid):
    return [m for m in msgs if m["key"] == {"id": uid}]


def iso_to_epoch_us(s):
    """'2026-01-02T03:04:05.123456Z' -> epoch microseconds (Debezium's MicroTimestamp)."""
    dt = datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000 + dt.microsecond
