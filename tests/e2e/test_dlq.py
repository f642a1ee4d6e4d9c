#!/usr/bin/env python3
"""e2e_dlq: garbage on cdc.info-user (a value that is not JSON, and a JSON envelope with op
"x") lands in cdc.info-user.dlq with the original value, a dlq.reason header and the
dlq.origin.* headers; push-email keeps going: the same process then sends the welcome
email of a REST create, exactly once.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (DLQ_TOPIC, TOPIC, Checks, Maildev, PushEmail, Userdata, kcat_consume,  # noqa: E402
                    kcat_produce, load_env, log, recipients, unique, wait_dlq)

env = load_env()
boot = env["KAFKA_BOOTSTRAP"]
api = Userdata(env)
mail = Maildev(env)
pe = PushEmail(env)
t = Checks("e2e_dlq")
pe.ensure_running()
pid = pe.pid()
m0 = pe.metrics()

mk = unique("m")
bad = {
    f"notjson-{mk}": f"not json {mk}",
    f"opx-{mk}": '{"before":null,"after":{"id":"%s"},"source":{},"op":"x","ts_ms":1}' % mk,
}
log(f"producing {len(bad)} garbage values to {TOPIC} (marker {mk})")
kcat_produce(boot, TOPIC, list(bad.values()))
found = wait_dlq(boot, [f"not json {mk}", f'"id":"{mk}"'], timeout_s=60)

for label, marker in (("not json", f"not json {mk}"), ('op "x"', f'"id":"{mk}"')):
    msgs = found[marker]
    t.eq(len(msgs), 1, f"{label}: messages in {DLQ_TOPIC}")
    if not msgs:
        continue
    m = msgs[0]
    h = m["headers"]
    print(f"             dlq: {h} {m.get('payload')}")
    t.check(bool(h.get("dlq.reason")), f"{label}: dlq.reason set ({h.get('dlq.reason')!r})")
    t.eq(h.get("dlq.origin.topic"), TOPIC, f"{label}: dlq.origin.topic")
    t.eq(h.get("dlq.origin.partition"), "0", f"{label}: dlq.origin.partition")
    t.check((h.get("dlq.origin.offset") or "").isdigit(),
            f"{label}: dlq.origin.offset is an offset ({h.get('dlq.origin.offset')!r})")
    t.eq(h.get("dlq.service"), "push-email", f"{label}: dlq.service")
    want = bad[f"notjson-{mk}"] if label == "not json" else bad[f"opx-{mk}"]
    t.eq(m.get("payload"), want, f"{label}: payload is the original value")
t.check("json" in found[f"not json {mk}"][0]["headers"].get("dlq.reason", "").lower()
        if found[f"not json {mk}"] else False, "not json: the reason says JSON")
t.check("op" in found[f'"id":"{mk}"'][0]["headers"].get("dlq.reason", "").lower()
        if found[f'"id":"{mk}"'] else False, 'op "x": the reason names op')
# The -f '%h %s' view the brief asks for, as evidence in the log.
for line in kcat_consume(boot, DLQ_TOPIC, fmt="%h %s\n"):
    if mk in line:
        print(f"             kcat %h %s: {line}")

m1 = pe.metrics()
t.eq(m1.get("push_email_dlq_total", 0) - m0.get("push_email_dlq_total", 0), 2,
     "push_email_dlq_total grew by 2")

# ---- the service keeps going
t.eq(pe.pid(), pid, "push-email is still the same process")
mail.clear()
name = unique("afterdlq")
st, _ = api.create(username=name, email=f"{name}@example.org", password="after dlq pass phrase",
                   full_name="After Dlq", locale="en")
t.eq(st, 201, "POST after the garbage: status")
ems = mail.wait_count(1, 90, "welcome email after the garbage")
t.eq(len(ems), 1, "emails after the garbage")
t.eq([(recipients(e), e.get("subject")) for e in ems],
     [([f"{name}@example.org"], "Welcome to cdc-notify, After Dlq")], "the welcome email")
t.eq(pe.pid(), pid, "push-email is still the same process after the create")
t.finish()
