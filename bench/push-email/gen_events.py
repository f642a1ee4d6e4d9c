#!/usr/bin/python3
"""bench/push-email/gen_events.py: N synthetic Debezium create events for push-email, one
"key<TAB>value" line each (for `kcat -P -K '\t'`).

Same shape as a real cdc.info-user create event (captured from the local stack with
`kcat -C -b 127.0.0.1:9092 -t cdc.info-user -o beginning -e -q | grep '"op":"c"'`): Debezium
3.1 MariaDB connector envelope without schema, key {"id": ...}. Each event has its own id,
username, email, full name, timestamps and binlog position (source.file/pos/gtid), so each
has its own dedupe key; locales rotate en / pt-BR / es (all have templates).

    gen_events.py N [RUN_TAG] > events.tsv
"""
import json
import sys
import time
import uuid

n = int(sys.argv[1])
tag = sys.argv[2] if len(sys.argv) > 2 else str(int(time.time()))
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
    ev = {
        "before": None,
        "after": {
            "id": uid,
            "username": user,
            "email": f"{user}@example.org",
            "password_changed_at": us,
            "full_name": f"{first[i % 10]} {last[(i // 10) % 10]}",
            "date_of_birth": None,
            "address": None,
            "locale": locales[i % 3],
            "status": "UNCONFIRMED",
            "created_at": us,
            "updated_at": us,
            "version": 1,
        },
        "source": {
            "version": "3.1.0.Final", "connector": "mariadb", "name": "cdc",
            "ts_ms": ms - ms % 1000, "snapshot": "false", "db": "userdata",
            "sequence": None, "ts_us": (ms - ms % 1000) * 1000,
            "ts_ns": (ms - ms % 1000) * 1000000, "table": "users", "server_id": 1,
            "gtid": f"0-1-{900000 + i}", "file": f"mariadb-bin.bench{tag}",
            "pos": pos0 + i * 1037, "row": 0, "thread": None, "query": None,
        },
        "transaction": None,
        "op": "c",
        "ts_ms": ms + 60,
        "ts_us": us + 60000,
        "ts_ns": (us + 60000) * 1000,
    }
    key = json.dumps({"id": uid}, separators=(",", ":"))
    out.write(key + "\t" + json.dumps(ev, separators=(",", ":")) + "\n")
