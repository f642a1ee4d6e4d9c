#!/usr/bin/env python3
"""Connector restart: while a user is being updated continuously through REST, the
Kafka Connect worker is stopped (SIGTERM), restarted, then killed (SIGKILL) and
restarted again. Afterwards every change is on cdc.info-user: each version of the row
from 1 to the last appears at least once (duplicates are allowed: at-least-once), in
order of first appearance, and no change was re-read as a snapshot ('r').

Needs the stack of stack-fixture.sh (STACK_DIR and STACK_* in the environment)."""
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import os
import subprocess
import threading
import time

from cdclib import Checks, Userdata, for_key, load_env, unique_name, wait_for

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
STACK = os.path.join(REPO, "scripts", "stack")
PER_PHASE = int(os.environ.get("CDC_RESTART_UPDATES_PER_PHASE", "15"))

t = Checks("cdc_connect_restart")
env = load_env()
api = Userdata(env)
kafka = env["KAFKA_BOOTSTRAP"]

name = unique_name("rst")
status, user = api.create(username=name, email=f"{name}@example.org",
                          password="correct horse battery staple", full_name="n-0")
if not t.check(status == 201, f"POST /users -> 201 (got {status})"):
    t.finish()
uid = user["id"]
print(f"user {uid} ({name})", flush=True)


class Updater(threading.Thread):
    """PATCHes full_name n-1, n-2, ... one after the other until stopped."""

    def __init__(self):
        super().__init__(daemon=True)
        self.done = 0
        self.errors = []
        self.last_version = 1
        self.stop = threading.Event()

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            status, body = api.patch(uid, full_name=f"n-{i}")
            if status != 200:
                self.errors.append((i, status, body))
                continue
            self.last_version = body["version"]
            self.done = i
            time.sleep(0.05)

    def wait_done(self, n, timeout=120):
        """True once n updates are done; False after timeout."""
        deadline = time.monotonic() + timeout
        while self.done < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.done >= n


def stack(*args):
    t0 = time.monotonic()
    r = subprocess.run([STACK, *args], capture_output=True, text=True, timeout=600)
    print(f"$ scripts/stack {' '.join(args)}  ({time.monotonic() - t0:.1f} s, exit {r.returncode})",
          flush=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr, flush=True)
    return r.returncode


up = Updater()
up.start()
t.check(up.wait_done(PER_PHASE), f"{PER_PHASE} updates before the stop ({up.done} made)")
t.check(stack("stop", "connect") == 0, f"Connect stopped (SIGTERM) after {up.done} updates")
n_stop = up.done
t.check(up.wait_done(n_stop + PER_PHASE),
        f"updates went on while Connect was down ({up.done - n_stop} made)")
t.check(stack("up") == 0, f"scripts/stack up restarted Connect and the connector is RUNNING "
                          f"(update {up.done})")
n_up = up.done
t.check(up.wait_done(n_up + PER_PHASE), f"updates after the restart ({up.done - n_up} made)")
t.check(stack("stop", "connect", "--kill") == 0, f"Connect killed (SIGKILL) after {up.done} updates")
n_kill = up.done
t.check(up.wait_done(n_kill + PER_PHASE),
        f"updates went on while Connect was killed ({up.done - n_kill} made)")
t.check(stack("up") == 0, f"scripts/stack up restarted Connect after the kill (update {up.done})")
n_up = up.done
t.check(up.wait_done(n_up + PER_PHASE), f"updates after the second restart ({up.done - n_up} made)")
up.stop.set()
up.join(timeout=60)
last = up.last_version
t.check(not up.errors, f"every PATCH succeeded (errors: {up.errors[:3]})")
print(f"{up.done} updates made; last version {last}", flush=True)


def has_last(msgs):
    return any(m["value"] is not None and (m["value"].get("after") or {}).get("version") == last
               for m in for_key(msgs, uid))


t0 = time.monotonic()
msgs = wait_for(kafka, has_last, 180, f"version {last} of {uid}")
print(f"last version reached the topic {time.monotonic() - t0:.1f} s after the last update",
      flush=True)
mine = [m["value"] for m in for_key(msgs, uid) if m["value"] is not None]
versions = [(v.get("after") or {}).get("version") for v in mine]
seen = set(versions)
missing = [v for v in range(1, last + 1) if v not in seen]
dups = len(versions) - len(seen)
t.check(not missing, f"every version 1..{last} is on the topic (missing: {missing[:20]})")
first_seen = []
for v in versions:
    if v not in first_seen:
        first_seen.append(v)
t.check(first_seen == sorted(first_seen), "versions first appear in commit order")
ops = {v["op"] for v in mine}
t.check(ops <= {"c", "u"}, f"only c and u events, no snapshot re-read (ops: {sorted(ops)})")
updates = [v for v in mine if v["op"] == "u"]
bad = [v["after"]["version"] for v in updates
       if (v.get("before") or {}).get("version") is None
       or v["before"]["version"] + 1 != (v.get("after") or {}).get("version")]
t.check(len(updates) >= last - 1,
        f"an update event for each of versions 2..{last} ({len(updates)} update events)")
t.check(not bad, f"every update's before.version + 1 == after.version "
                 f"({len(updates)} compared; wrong at versions {bad[:10]})")
print(f"{len(versions)} events for {last} versions: {dups} duplicate(s) (allowed)", flush=True)
t.finish()
