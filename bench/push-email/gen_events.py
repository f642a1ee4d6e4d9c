#!/usr/bin/python3
"""bench/push-email/gen_events.py: N synthetic Debezium create events for push-email, one
"key<TAB>value" line each (for `kcat -P -K '\t'`).

Each event is a deep copy of the real cdc.info-user create event in
tests/unit/push-email/samples/create.json (Debezium 3.1 MariaDB connector envelope without
schema, captured from the local stack; see the README there), so its shape cannot drift
from the capture. Only these are changed: the after image's id, username, email, full_name,
locale and timestamps (password_changed_at, created_at, updated_at), the binlog position
(source.file/pos/gtid), and the ts_ms/ts_us/ts_ns of source and of the envelope. So each
event has its own id, address and dedupe key; locales rotate en / pt-BR / es (all have
templates); the other columns (date_of_birth, address, status, version) are the sample's.
The key is {"id": ...}, as Debezium's.

    gen_events.py N [RUN_TAG] > events.tsv
"""
import copy
import json
import os
import sys
import time
import uuid

SAMPLE = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                      "tests", "unit", "push-email", "samples", "create.json"))


def put(obj, key, value):
    """Sets obj[key], which the sample must have: a changed capture fails here, loudly."""
    if key not in obj:
        sys.exit(f"gen_events.py: {SAMPLE} has no field {key!r}: is it still a create event?")
    obj[key] = value


n = int(sys.argv[1])
tag = sys.argv[2] if len(sys.argv) > 2 else str(int(time.time()))
with open(SAMPLE, encoding="utf-8") as f:
    sample = json.load(f)
if sample.get("op") != "c" or "schema" in sample or not isinstance(sample.get("after"), dict):
    sys.exit(f"gen_events.py: {SAMPLE} is not a create event without schema")
locales = ["en", "pt-BR", "es"]
first = ["Ada", "Grace", "Alan", "Barbara", "Edsger", "Frances", "Ken", "Radia", "Niklaus",
         "Margaret"]
last = ["Lovelace", "Hopper", "Turing", "Liskov", "Dijkstra", "Allen", "Thompson",
        "Perlman", "Wirth", "Hamilton"]
now_us = int(time.time() * 1e6)
pos0 = 4_000_000
out = sys.stdout
for i in range(n):
    uid = str(uuid.uuid4())
    user = f"pe{tag}u{i}"
    us = now_us + i * 1000
    ms = us // 1000
    src_ms = ms - ms % 1000  # the binlog event's time: whole seconds, as captured
    ev = copy.deepcopy(sample)
    after = ev["after"]
    put(after, "id", uid)
    put(after, "username", user)
    put(after, "email", f"{user}@example.org")
    put(after, "full_name", f"{first[i % 10]} {last[(i // 10) % 10]}")
    put(after, "locale", locales[i % 3])
    for k in ("password_changed_at", "created_at", "updated_at"):
        put(after, k, us)
    source = ev["source"]
    put(source, "file", f"mariadb-bin.bench{tag}")
    put(source, "pos", pos0 + i * 1037)
    put(source, "gtid", f"0-1-{900000 + i}")
    put(source, "ts_ms", src_ms)
    put(source, "ts_us", src_ms * 1000)
    put(source, "ts_ns", src_ms * 1000000)
    put(ev, "ts_ms", ms + 60)
    put(ev, "ts_us", us + 60000)
    put(ev, "ts_ns", (us + 60000) * 1000)
    key = json.dumps({"id": uid}, separators=(",", ":"))
    out.write(key + "\t" + json.dumps(ev, separators=(",", ":")) + "\n")
