#!/usr/bin/env python3
"""e2e_metrics_sigterm: push-email's /metrics counts what it does, and SIGTERM makes it
exit 0 within 10 s.

The running push-email is stopped and started again by this test (same group), so that it
is this process's child and its exit status can be read. Two garbage values and one REST
create then must move push_email_dlq_total by exactly 2 (so >= 2) and
push_email_emails_sent_total by exactly 1. Then SIGTERM: exit status 0 within 10 s. A fresh
push-email is started afterwards for the tests that follow.
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (TOPIC, Checks, Maildev, PushEmail, Userdata, kcat_produce, load_env,  # noqa: E402
                    log, unique, wait_dlq)

SIGTERM_BOUND_S = 10

env = load_env()
boot = env["KAFKA_BOOTSTRAP"]
api = Userdata(env)
mail = Maildev(env)
pe = PushEmail(env)
t = Checks("e2e_metrics_sigterm")

pe.stop()
t.check(pe.pid() is None, "the previous push-email stopped")
pid = pe.start()  # our child now
t.check(pe.proc is not None and pe.proc.pid == pid, f"push-email pid {pid} is this test's child")

m0 = pe.metrics()
for name in ("push_email_emails_sent_total", "push_email_dlq_total"):
    t.check(name in m0, f"/metrics has {name}")
mk = unique("mt")
kcat_produce(boot, TOPIC, [f"not json {mk}", '{"op":"x","after":{"id":"%s"}}' % mk])
found = wait_dlq(boot, [f"not json {mk}", f'"id":"{mk}"'], timeout_s=60)
t.check(all(found.values()), "both garbage values reached the DLQ")

mail.clear()
name = unique("metrics")
st, _ = api.create(username=name, email=f"{name}@example.org", password="metrics pass phrase",
                   full_name="Metrics Person", locale="en")
t.eq(st, 201, "POST: status")
t.eq(len(mail.wait_count(1, 90, "welcome email", settle_s=2)), 1, "welcome emails")
deadline = time.monotonic() + 10
while True:  # the counter is bumped right after SMTP accepts; give it a moment
    m1 = pe.metrics()
    if (m1.get("push_email_emails_sent_total", 0) > m0.get("push_email_emails_sent_total", 0)
            or time.monotonic() > deadline):
        break
    time.sleep(0.2)
sent = m1.get("push_email_emails_sent_total", 0) - m0.get("push_email_emails_sent_total", 0)
dlq = m1.get("push_email_dlq_total", 0) - m0.get("push_email_dlq_total", 0)
log(f"metrics: sent {m0.get('push_email_emails_sent_total')} -> "
    f"{m1.get('push_email_emails_sent_total')}, dlq {m0.get('push_email_dlq_total')} -> "
    f"{m1.get('push_email_dlq_total')}")
t.eq(sent, 1, "push_email_emails_sent_total increase")
t.eq(dlq, 2, "push_email_dlq_total increase")
t.check(m1.get("push_email_dlq_total", 0) >= 2, "push_email_dlq_total >= 2")

# ---- SIGTERM
t0 = time.monotonic()
pe.signal(signal.SIGTERM)
rc = pe.wait_exit(pid, SIGTERM_BOUND_S)
secs = time.monotonic() - t0
log(f"SIGTERM -> exit status {rc} after {secs:.2f}s")
t.check(rc is not None, f"push-email exited within {SIGTERM_BOUND_S}s of SIGTERM ({secs:.2f}s)")
t.eq(rc, 0, "exit status after SIGTERM")
if rc is None:
    os.kill(pid, signal.SIGKILL)
    pe.wait_exit(pid, 10)
tail = pe.log_tail(5)
t.check('"msg":"stopped"' in tail, "the log ends with \"stopped\"")

pe.start()  # leave the stack as found
t.finish()
