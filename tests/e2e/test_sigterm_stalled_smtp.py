#!/usr/bin/env python3
"""e2e_sigterm_stalled_smtp: SIGTERM while push-email waits on an SMTP server that accepted
the connection and never answers. push-email must exit 0 within seconds, not after its SMTP
timeouts (60 s here, as in production), and must not record the email as sent.

Its own topic (e2e.sigterm.<pid>, one create event), group and delivery-log database
(notifications_sigterm); the SMTP server is the integration tests' aiosmtpd server
(tests/integration/push-email/smtp_server.py) with --stall-greeting: it accepts every
connection, notes it, and never sends its greeting.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (REPO, Checks, PushEmail, cleanup_private, load_env, log,  # noqa: E402
                    mysql_root, private_topic_with_events)

DB = "notifications_sigterm"
SMTP_SERVER = os.path.join(REPO, "tests", "integration", "push-email", "smtp_server.py")

env = load_env()
t = Checks("e2e_sigterm_stalled_smtp")
topic = f"e2e.sigterm.{os.getpid()}"

work = tempfile.mkdtemp(prefix="e2e-stalled-smtp-")
with socket.socket() as s:  # a port that was free a moment ago
    s.bind(("127.0.0.1", 0))
    smtp_port = s.getsockname()[1]
server_log = open(os.path.join(work, "server.log"), "wb")
server = subprocess.Popen(["/usr/bin/python3", SMTP_SERVER, "--port", str(smtp_port), "--dir",
                           work, "--stall-greeting"], stdout=server_log,
                          stderr=subprocess.STDOUT)


def connections():
    """Connections the server accepted, but for its own start-up probe."""
    try:
        with open(os.path.join(work, "connections")) as f:
            return max(0, len(f.read().split()) - 1)
    except OSError:
        return 0


deadline = time.monotonic() + 30
while not os.path.exists(os.path.join(work, "ready")) and time.monotonic() < deadline:
    time.sleep(0.1)
if not t.check(os.path.exists(os.path.join(work, "ready")), "the stalled SMTP server started"):
    server.terminate()
    t.finish()
pe = PushEmail(env, name="e2e-push-email-sigterm",
               port=int(os.environ.get("STACK_PUSH_EMAIL_PORT", "8181")) + 12, overrides={
                   "PUSH_EMAIL_TOPIC": topic,
                   "PUSH_EMAIL_DLQ_TOPIC": f"{topic}.dlq",
                   "PUSH_EMAIL_GROUP_ID": f"e2e-sigterm-{os.getpid()}",
                   "PUSH_EMAIL_DB_NAME": DB,
                   "PUSH_EMAIL_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
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
    while not connections() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not t.check(connections() > 0, "push-email connected to the stalled SMTP server"):
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
    server.terminate()
    server.wait(timeout=10)
    server_log.close()
    shutil.rmtree(work, ignore_errors=True)
t.finish()
