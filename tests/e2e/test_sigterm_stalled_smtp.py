#!/usr/bin/env python3
"""e2e_sigterm_stalled_smtp: SIGTERM while push-email waits on an SMTP server that accepted
the connection and never answers. push-email must exit 0 within seconds, not after its SMTP
timeouts (60 s here, as in production), and must not record the email as sent.

Its own topic (e2e.sigterm.<pid>, one create event), group and delivery-log database
(notifications_sigterm); the SMTP "server" is a socket in this test that accepts and stays
silent.
"""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (Checks, PushEmail, cleanup_private, load_env, log, mysql_root,  # noqa: E402
                    private_topic_with_events)

DB = "notifications_sigterm"

env = load_env()
t = Checks("e2e_sigterm_stalled_smtp")
topic = f"e2e.sigterm.{os.getpid()}"

silent = socket.socket()
silent.bind(("127.0.0.1", 0))
silent.listen(8)
held = []  # accepted connections, kept open and never written to


def accept_forever():
    while True:
        try:
            conn, _ = silent.accept()
        except OSError:
            return
        held.append(conn)


threading.Thread(target=accept_forever, daemon=True).start()
pe = PushEmail(env, name="e2e-push-email-sigterm",
               port=int(os.environ.get("STACK_PUSH_EMAIL_PORT", "8181")) + 12, overrides={
                   "PUSH_EMAIL_TOPIC": topic,
                   "PUSH_EMAIL_DLQ_TOPIC": f"{topic}.dlq",
                   "PUSH_EMAIL_GROUP_ID": f"e2e-sigterm-{os.getpid()}",
                   "PUSH_EMAIL_DB_NAME": DB,
                   "PUSH_EMAIL_SMTP_URL": f"smtp://127.0.0.1:{silent.getsockname()[1]}",
                   "PUSH_EMAIL_SMTP_CONNECT_TIMEOUT_MS": "60000",
                   "PUSH_EMAIL_SMTP_TIMEOUT_MS": "60000",
               })


try:
    mysql_root(env, f"DROP DATABASE IF EXISTS {DB}")
    ok, what = private_topic_with_events(env, topic, 1, f"st{os.getpid()}")
    if not t.check(ok, what):
        t.finish()
    pe.start()
    deadline = time.monotonic() + 60
    while not held and time.monotonic() < deadline:
        time.sleep(0.1)
    if not t.check(bool(held), "push-email connected to the silent SMTP server"):
        t.finish()
    time.sleep(1.5)  # well into the send
    t0 = time.monotonic()
    pid = pe.signal(signal.SIGTERM)
    rc = pe.wait_exit(pid, 30)
    took = time.monotonic() - t0
    log(f"exit status {rc} {took:.1f}s after SIGTERM")
    t.eq(rc, 0, "push-email exits 0 on SIGTERM during a stalled send")
    t.check(took < 10, f"... within 10 s, not after the 60 s SMTP timeout (took {took:.1f}s)")
    t.eq(mysql_root(env, f"SELECT COUNT(*) FROM {DB}.deliveries WHERE state = 'sent'"), "0",
         "the abandoned email is not recorded as sent")
finally:
    cleanup_private(env, pe, topic, DB)
    silent.close()
    for c in held:
        c.close()
t.finish()
