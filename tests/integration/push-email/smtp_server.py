#!/usr/bin/python3
"""A tiny SMTP server for push-email's SMTP adapter tests (aiosmtpd, Debian python3-aiosmtpd).

Saves every accepted message (after dot-unstuffing) to DIR/msg-<n>.eml with DIR/msg-<n>.meta
(peer port, envelope sender, recipients, authenticated login, TLS, the EHLO name), appends the client port of
each new connection to DIR/connections (again after STARTTLS: count distinct ports), and
writes DIR/ready once it listens. Options make it offer
STARTTLS (and require it), require AUTH for one fixed user, answer 550 or 451 to given
recipients, refuse to relay to given recipients (554 5.7.1 Relay access denied, as Postfix
says it) or call them unknown in the relay recipient table (550 5.1.1, Postfix again), refuse given envelope senders (550 5.7.1, or 552 "too big"), refuse the message
itself at the end of DATA for given recipients (554 5.7.1), never answer the end of DATA for a
given recipient (a stalled server), accept a message for a given recipient but drop the
connection instead of answering the end of DATA, refuse the client at the greeting (554) or at
EHLO/HELO (550), never greet a client at all (a server that hangs), never answer QUIT, and offer AUTH GSSAPI and NTLM besides PLAIN and LOGIN
(failing them, and noting each try in DIR/mechanisms). Stops on SIGTERM.
"""
import argparse
import asyncio
import os
import signal
import ssl
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--require-tls", action="store_true")
    ap.add_argument("--auth", help="user:password required before MAIL")
    ap.add_argument("--reject550", action="append", default=[])
    ap.add_argument("--reject451", action="append", default=[])
    ap.add_argument("--relay-denied", action="append", default=[])
    ap.add_argument("--unknown-in-relay-table", action="append", default=[])
    ap.add_argument("--reject-sender", action="append", default=[])
    ap.add_argument("--reject552-sender", action="append", default=[])
    ap.add_argument("--stall-data-for", action="append", default=[])
    ap.add_argument("--reject-data-for", action="append", default=[])
    ap.add_argument("--drop-after-data-for", action="append", default=[])
    ap.add_argument("--refuse-greeting", action="store_true")
    ap.add_argument("--refuse-helo", action="store_true")
    ap.add_argument("--stall-greeting", action="store_true",
                    help="accept connections but never send the greeting")
    ap.add_argument("--silent-quit", action="store_true", help="never answer QUIT")
    ap.add_argument("--offer-gssapi", action="store_true",
                    help="offer AUTH GSSAPI and NTLM too, and fail them (no Kerberos here)")
    args = ap.parse_args()
    args_dir = args.dir

    lock = threading.Lock()
    counter = {"msg": 0}

    class Handler:
        async def handle_MAIL(self, server, session, envelope, address, mail_options):
            if address in args.reject_sender:
                return "550 5.7.1 <%s>: sender not allowed" % address
            if address in args.reject552_sender:
                return "552 5.3.4 message size exceeds fixed maximum message size"
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 OK"

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address in args.reject550:
                return "550 5.1.1 <%s>: mailbox unavailable" % address
            if address in args.relay_denied:
                return "554 5.7.1 <%s>: Relay access denied" % address
            if address in args.unknown_in_relay_table:
                return ("550 5.1.1 <%s>: Recipient address rejected: User unknown in relay "
                        "recipient table" % address)
            if address in args.reject451:
                return "451 4.3.0 <%s>: try again later" % address
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            if any(r in args.stall_data_for for r in envelope.rcpt_tos):
                await asyncio.sleep(3600)
            if any(r in args.reject_data_for for r in envelope.rcpt_tos):
                return "554 5.7.1 message content refused"
            with lock:
                counter["msg"] += 1
                n = counter["msg"]
            base = os.path.join(args.dir, "msg-%d" % n)
            with open(base + ".eml.tmp", "wb") as f:
                f.write(envelope.original_content)
            login = getattr(session, "auth_data", None) or b""
            login = login.decode() if isinstance(login, bytes) else str(login)
            with open(base + ".meta", "w") as f:
                f.write("peer_port=%d\nfrom=%s\nto=%s\nlogin=%s\ntls=%d\nhelo=%s\n" % (
                    session.peer[1], envelope.mail_from, ",".join(envelope.rcpt_tos), login,
                    1 if session.ssl else 0, session.host_name))
            os.rename(base + ".eml.tmp", base + ".eml")
            if any(r in args.drop_after_data_for for r in envelope.rcpt_tos):
                server.transport.abort()  # accepted, but the reply never goes out
            return "250 2.0.0 Message accepted for delivery"

    class GssapiHandler(Handler):
        # aiosmtpd offers a mechanism for each auth_<NAME> method of the handler.
        async def auth_GSSAPI(self, server, args):
            with open(os.path.join(args_dir, "mechanisms"), "a") as f:
                f.write("GSSAPI\n")
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 GSSAPI: no Kerberos credentials")

        async def auth_NTLM(self, server, args):
            with open(os.path.join(args_dir, "mechanisms"), "a") as f:
                f.write("NTLM\n")
            return AuthResult(success=False, handled=False,
                              message="535 5.7.8 NTLM: not available")

    class RefusingHelo(Handler):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            return ["550 5.7.1 client host refused"]

        async def handle_HELO(self, server, session, envelope, hostname):
            return "550 5.7.1 client host refused"

    def authenticator(server, session, envelope, mechanism, auth_data):
        if not args.auth or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, _, password = args.auth.partition(":")
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)

    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)

    class CountingSMTP(SMTP):
        def connection_made(self, transport):
            with open(os.path.join(args.dir, "connections"), "a") as f:
                peer = transport.get_extra_info("peername")
                f.write("%s\n" % (peer[1] if peer else "?"))
            if args.stall_greeting:
                self._stalled = transport  # held open, silent, until the client gives up
                return
            if args.refuse_greeting:
                transport.write(b"554 5.7.1 access denied\r\n")
                transport.close()
                return
            super().connection_made(transport)

        async def smtp_QUIT(self, arg):
            if args.silent_quit:
                await asyncio.sleep(3600)  # a server that has gone silent
            return await super().smtp_QUIT(arg)

    class CountingController(Controller):
        def factory(self):
            return CountingSMTP(self.handler, **self.SMTP_kwargs)

    kwargs = dict(authenticator=authenticator, auth_required=bool(args.auth),
                  auth_require_tls=bool(args.tls_cert))
    if tls_context is not None:
        kwargs.update(tls_context=tls_context, require_starttls=args.require_tls)
    handler = (RefusingHelo() if args.refuse_helo else
               GssapiHandler() if args.offer_gssapi else Handler())
    ctl = CountingController(handler, hostname="127.0.0.1", port=args.port, **kwargs)
    ctl.start()
    with open(os.path.join(args.dir, "ready.tmp"), "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(os.path.join(args.dir, "ready.tmp"), os.path.join(args.dir, "ready"))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    ctl.stop()


if __name__ == "__main__":
    main()
