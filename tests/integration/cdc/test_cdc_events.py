#!/usr/bin/env python3
"""CDC events: a REST create, update and delete of a user each produce the matching
Debezium event on cdc.info-user (op c/u/d, before/after, key = {"id": ...}), no event
carries password_hash, and a tombstone follows the delete.

Needs the stack of stack-fixture.sh (STACK_DIR in the environment)."""
import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import json
from datetime import date

from cdclib import Checks, Userdata, consume_all, for_key, iso_to_epoch_us, load_env, \
    unique_name, wait_for

t = Checks("cdc_events")
env = load_env()
api = Userdata(env)
kafka = env["KAFKA_BOOTSTRAP"]

name = unique_name("cdc")
status, user = api.create(username=name, email=f"{name}@example.org",
                          password="correct horse battery staple", full_name="Ada Lovelace",
                          date_of_birth="1990-12-10", locale="en")
if not t.check(status == 201, f"POST /users -> 201 (got {status}: {user})"):
    t.finish()
uid = user["id"]
print(f"user {uid} ({name})", flush=True)

status, upd = api.patch(uid, full_name="Ada King", password="another long passphrase")
t.check(status == 200, f"PATCH /users/{uid} -> 200 (got {status}: {upd})")
status, _ = api.delete(uid)
t.check(status == 204, f"DELETE /users/{uid} -> 204 (got {status})")


def complete(msgs):
    mine = for_key(msgs, uid)
    return len(mine) >= 4 and mine[-1]["value"] is None


msgs = wait_for(kafka, complete, 90, f"c, u, d and a tombstone for {uid}")
mine = for_key(msgs, uid)
ops = ["tombstone" if m["value"] is None else m["value"]["op"] for m in mine]
print("events for the user:", ops, flush=True)
t.check(ops == ["c", "u", "d", "tombstone"], f"events in order c, u, d, tombstone (got {ops})")

by_op = {}
for m in mine:
    by_op.setdefault("tombstone" if m["value"] is None else m["value"]["op"], m)

c = by_op.get("c", {}).get("value")
u = by_op.get("u", {}).get("value")
d = by_op.get("d", {}).get("value")
if c:
    t.check(c["before"] is None, "create: before is null")
    a = c["after"] or {}
    t.check(a.get("id") == uid and a.get("username") == name and
            a.get("email") == f"{name}@example.org" and a.get("full_name") == "Ada Lovelace",
            "create: after has the user's id, username, email, full_name")
    days = (date(1990, 12, 10) - date(1970, 1, 1)).days
    t.check(a.get("date_of_birth") == days,
            f"create: DATE as days since epoch (1990-12-10 = {days}; got {a.get('date_of_birth')})")
    t.check(a.get("updated_at") == iso_to_epoch_us(user["updated_at"]),
            "create: updated_at as epoch microseconds, equal to the REST response's")
    t.check(c["source"]["db"] == "userdata" and c["source"]["table"] == "users",
            "create: source is userdata.users")
if u:
    t.check((u["before"] or {}).get("full_name") == "Ada Lovelace" and
            (u["after"] or {}).get("full_name") == "Ada King",
            "update: before.full_name is the old, after.full_name the new value")
    t.check((u["before"] or {}).get("password_changed_at") !=
            (u["after"] or {}).get("password_changed_at"),
            "update: the password change shows as a new password_changed_at")
    t.check((u["after"] or {}).get("version") == (u["before"] or {}).get("version", 0) + 1,
            "update: version incremented")
if d:
    t.check((d["before"] or {}).get("id") == uid and d["after"] is None,
            "delete: before is the row, after is null")
    t.check((d["before"] or {}).get("full_name") == "Ada King",
            "delete: before has the last values")
for m in mine:
    t.check(m["key"] == {"id": uid}, f"offset {m['offset']}: key is {{\"id\": \"{uid}\"}}")
    raw = m["raw_value"] or ""
    t.check("password_hash" not in raw and "$argon2" not in raw,
            f"offset {m['offset']}: no password_hash (nor an argon2 hash) in the value")
    if m["value"] is not None:
        for side in ("before", "after"):
            row = m["value"].get(side)
            if row is not None:
                t.check("password_hash" not in row, f"offset {m['offset']}: {side} has no password_hash column")

# The whole topic: no event ever carried the column.
all_msgs = consume_all(kafka)
t.check(all(("password_hash" not in (m["raw_value"] or "")) for m in all_msgs),
        f"none of the {len(all_msgs)} messages on {json.dumps('cdc.info-user')} has password_hash")
t.finish()
