#!/usr/bin/env python3
"""e2e_smtp_outage: the SMTP sink is down for 30 s while 20 updates happen; once it is back
every email arrives, none twice, within a bounded wait.

maildev is stopped with `scripts/stack stop maildev` and started again with `scripts/stack
up` (which starts the parts that are missing and leaves the others alone). push-email runs
with PUSH_EMAIL_RETRY_MAX_MS=5000 (e2elib), so after the sink is back the next retry comes
within about 5 s. maildev keeps emails in memory: only post-outage emails are counted (the
store is emptied before the outage).
"""
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (Checks, Maildev, PushEmail, Userdata, load_env, log, message_id,  # noqa: E402
                    port_open, recipients, stack, unique)

OUTAGE_S = float(os.environ.get("E2E_OUTAGE_S", "30"))
USERS, ROUNDS = 5, 4  # 20 updates
RETRY_MAX_S = float(os.environ.get("E2E_RETRY_MAX_MS", "5000")) / 1000
ARRIVAL_BOUND_S = float(os.environ.get("E2E_OUTAGE_ARRIVAL_S", "60"))

env = load_env()
api = Userdata(env)
mail = Maildev(env)
pe = PushEmail(env)
t = Checks("e2e_smtp_outage")
pe.ensure_running()
smtp_port = int(env["SMTP_PORT"])

prefix = unique("outage")
users = []
mail.clear()
for i in range(USERS):
    name = f"{prefix}-{i}"
    st, body = api.create(username=name, email=f"{name}@example.org",
                          password="outage test pass phrase", full_name=f"{name} v0", locale="en")
    if not t.eq(st, 201, f"create {name}: status"):
        t.finish()
    users.append(body)
t.eq(len(mail.wait_count(USERS, 90, "welcome emails", settle_s=1)), USERS, "welcome emails")
mail.clear()
m0 = pe.metrics()

# ---- outage
log("stopping maildev (scripts/stack stop maildev)")
t_down = time.monotonic()
stack("stop", "maildev")
t.check(not port_open(smtp_port), f"SMTP port {smtp_port} closed after the stop")

expected = []
for j in range(1, ROUNDS + 1):
    for u in users:
        new = f"{u['username']} v{j}"
        st, body = api.patch(u["id"], full_name=new)
        t.eq(st, 200, f"PATCH {u['username']} -> {new}: status")
        if st == 200 and body.get("full_name") != u["full_name"]:
            expected.append((u["email"].lower(), new))
            u["full_name"] = body["full_name"]
    # pace the 20 updates over the first two thirds of the outage
    time.sleep(OUTAGE_S * 2 / 3 / ROUNDS)
t.eq(len(expected), USERS * ROUNDS, "updates that changed a visible field")

# push-email must notice the outage (a transient failure, retried) before the sink returns
retries_seen = False
while time.monotonic() - t_down < OUTAGE_S:
    m = pe.metrics()
    retries_seen = m.get("push_email_retries_total", 0) > m0.get("push_email_retries_total", 0)
    time.sleep(1)
t.check(retries_seen, "push_email_retries_total grew during the outage")
m = pe.metrics()
t.eq(m.get("push_email_emails_sent_total", 0) - m0.get("push_email_emails_sent_total", 0), 0,
     "emails sent during the outage")
t.eq(m.get("push_email_emails_failed_total", 0) - m0.get("push_email_emails_failed_total", 0), 0,
     "emails finally failed during the outage")
t.check(pe.pid() is not None, "push-email still runs during the outage")

# ---- the sink comes back
log(f"outage lasted {time.monotonic() - t_down:.1f}s; restarting maildev (scripts/stack up)")
t_up = time.monotonic()
stack("up")
t.check(port_open(smtp_port), f"SMTP port {smtp_port} open again")
ems = mail.wait_count(len(expected), ARRIVAL_BOUND_S, f"{len(expected)} post-outage emails",
                      settle_s=max(8, 2 * RETRY_MAX_S))
log(f"checked {time.monotonic() - t_up:.1f}s after `scripts/stack up` began (incl. the settle)")

t.eq(len(ems), len(expected), "emails after the outage (exactly one per update)")
ids = collections.Counter(message_id(e) for e in ems)
dups = {k: v for k, v in ids.items() if v > 1}
t.check(not dups, f"no duplicate Message-ID ({dups})")
content = collections.Counter((tuple(recipients(e)), e.get("subject"), e.get("text")) for e in ems)
t.check(all(v == 1 for v in content.values()), "no duplicate (recipient, subject, body)")
found = collections.Counter()
for e in ems:
    for line in (e.get("text") or "").split("\r\n"):
        if line.startswith("  Now: "):
            for r in recipients(e):
                found[(r, line[len("  Now: "):])] += 1
missing = [x for x in expected if found[x] == 0]
twice = [(x, found[x]) for x in expected if found[x] > 1]
t.check(not missing, f"no expected email missing ({missing})")
t.check(not twice, f"no expected email twice ({twice})")
m2 = pe.metrics()
log("push-email: retries=%d sent=%d failed=%d" % (
    m2.get("push_email_retries_total", -1) - m0.get("push_email_retries_total", 0),
    m2.get("push_email_emails_sent_total", -1) - m0.get("push_email_emails_sent_total", 0),
    m2.get("push_email_emails_failed_total", -1) - m0.get("push_email_emails_failed_total", 0)))
t.finish()
