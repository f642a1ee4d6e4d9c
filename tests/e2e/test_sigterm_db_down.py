#!/usr/bin/env python3
"""e2e_sigterm_db_down: the delivery log's database goes away while push-email has a `sent`
mark it cannot commit; SIGTERM must still end push-email with status 0 within seconds
(DESIGN section 7), and once the database is back a restart loses no email.

Its own topic (e2e.dbdown.<pid>, three create events A, B, C produced before push-email
starts, so one fetch and one prefetch cover them), group, delivery-log database
(notifications_dbdown) and SMTP sink (aiosmtpd in this process). push-email reaches MariaDB
through a TCP proxy in this process. When the sink accepts the first email it takes the
database away (the proxy closes every connection and its listening socket), then answers
250: push-email has sent A and cannot commit A's mark. B's send then waits at its gate for
A's mark, is abandoned before its end of data (the sink never gets it) and retried with
backoff. SIGTERM then: push-email waits a bounded time for the mark (it cannot come) and exits
0. The bound checked is 20 s: 10 s for the consumer's last flush plus 3 s for the log's
writer, where it once took 30 s (three 10 s flushes of the same mark).

Then the proxy listens again and push-email restarts with the same group: B and C arrive once.
A's offset was never stored (its mark was not durable), so A is read again; its mark was lost
with the process, so A is sent again: the documented cost of a database that is away when the
process stops, with the SAME Message-ID. So A may arrive twice, with one Message-ID, and every
other email exactly once.
"""
import collections
import os
import select
import signal
import socket
import sys
import threading
import time

from aiosmtpd.controller import Controller

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (Checks, PushEmail, cleanup_private, load_env, log, mysql_root,  # noqa: E402
                    private_topic_with_events)

DB = "notifications_dbdown"
EXIT_BOUND_S = 20


class Proxy:
    """A TCP proxy to the database that can be taken down (every connection closed, the
    listening socket closed: connects are refused) and brought back on the same port."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lock = threading.Lock()
        self.socks = []
        self.listener = None
        self.port = 0
        self.up()

    def up(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self):
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.socks = []

    def _accept(self, lsock):
        while True:
            try:
                c, _ = lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                c.close()
                continue
            with self.lock:
                if self.listener is not lsock:
                    c.close()
                    u.close()
                    return
                self.socks += [c, u]
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        peer = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    peer[s].sendall(data)
        except (OSError, ValueError):
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass


class Sink:
    """Keeps each message's Message-ID and recipients; takes the database away while it
    accepts the first message."""

    def __init__(self, proxy):
        self.proxy = proxy
        self.messages = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            first = not self.messages
            mid = ""
            for line in envelope.content.decode(errors="replace").split("\r\n"):
                if line.lower().startswith("message-id:"):
                    mid = line.split(":", 1)[1].strip()
                if line == "":
                    break
            self.messages.append((mid, tuple(envelope.rcpt_tos)))
        if first:
            log("sink: first message in; taking the database away before answering 250")
            self.proxy.down()
        return "250 2.0.0 accepted"

    def snapshot(self):
        with self.lock:
            return list(self.messages)


env = load_env()
t = Checks("e2e_sigterm_db_down")
topic = f"e2e.dbdown.{os.getpid()}"
proxy = Proxy((env["MARIADB_HOST"], int(env["MARIADB_PORT"])))
sink = Sink(proxy)
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    smtp_port = probe.getsockname()[1]
smtp = Controller(sink, hostname="127.0.0.1", port=smtp_port)
smtp.start()
pe = PushEmail(env, name="e2e-push-email-dbdown",
               port=int(os.environ.get("STACK_PUSH_EMAIL_PORT", "8181")) + 13, overrides={
                   "PUSH_EMAIL_TOPIC": topic,
                   "PUSH_EMAIL_DLQ_TOPIC": f"{topic}.dlq",
                   "PUSH_EMAIL_GROUP_ID": f"e2e-dbdown-{os.getpid()}",
                   "PUSH_EMAIL_DB_NAME": DB,
                   "PUSH_EMAIL_DB_HOST": "127.0.0.1",
                   "PUSH_EMAIL_DB_PORT": str(proxy.port),
                   "PUSH_EMAIL_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                   "PUSH_EMAIL_SMTP_STARTTLS": "none",
               })


try:
    mysql_root(env, f"DROP DATABASE IF EXISTS {DB}")
    ok, what = private_topic_with_events(env, topic, 3, f"dd{os.getpid()}")
    if not t.check(ok, what):
        t.finish()
    pe.start()

    # A is accepted (and the database taken away), then B is tried and abandoned.
    deadline = time.monotonic() + 60
    m = {}
    while time.monotonic() < deadline:
        m = pe.metrics()
        if sink.snapshot() and m.get("push_email_retries_total", 0) >= 1:
            break
        time.sleep(0.2)
    t.eq(len(sink.snapshot()), 1, "the sink got A, then the database went away")
    t.check(m.get("push_email_retries_total", 0) >= 1,
            "B was abandoned and retried (its gate found A's mark not committed)")
    t.eq(m.get("push_email_offsets_waiting", -1), 1, "A's offset waits for its mark")

    t0 = time.monotonic()
    pid = pe.signal(signal.SIGTERM)
    rc = pe.wait_exit(pid, 60)
    took = time.monotonic() - t0
    log(f"exit status {rc} {took:.1f}s after SIGTERM")
    t.eq(rc, 0, "push-email exits 0 on SIGTERM with the database away")
    t.check(took < EXIT_BOUND_S, f"... within {EXIT_BOUND_S} s (took {took:.1f}s)")
    t.eq(len(sink.snapshot()), 1, "nothing else was sent while the database was away")

    # The database is back: a restart sends B and C, and A again (same Message-ID).
    proxy.up()
    pe.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len({mid for mid, _ in sink.snapshot()}) < 3:
        time.sleep(0.2)
    time.sleep(3)  # anything more would show up now
    msgs = sink.snapshot()
    ids = collections.Counter(mid for mid, _ in msgs)
    first_id = msgs[0][0]
    log(f"after the restart: {len(msgs)} messages, Message-IDs {dict(ids)}")
    t.eq(len(ids), 3, "an email for each of A, B and C")
    t.check(all(mid for mid in ids), "every email has a Message-ID")
    t.check(all(n == 1 for mid, n in ids.items() if mid != first_id),
            "B and C arrived exactly once")
    t.check(ids[first_id] <= 2, "A arrived at most twice, both with one Message-ID")
    t.eq(mysql_root(env, f"SELECT COUNT(*) FROM {DB}.deliveries WHERE state = 'sent'"), "3",
         "the delivery log holds 3 sent marks")
finally:
    cleanup_private(env, pe, topic, DB)
    proxy.down()
    smtp.stop()
t.finish()
