#!/usr/bin/python3
"""bench/push-email/sink.py: an SMTP sink for the push-email bench (aiosmtpd, Debian's
python3-aiosmtpd; run it with /usr/bin/python3).

Accepts every message and discards it. For each accepted message it appends one line to
LOG: "<time.time() at end of DATA>\t<first recipient>\t<size>" (flushed per message, so
`wc -l LOG` is the number of messages accepted so far). With --raw it writes, instead, one
JSON object per message {"t":..., "rcpt":..., "data": <the message as latin-1 text>} so
the latency analysis can decode bodies afterwards (decoding here would slow the sink).
--sample FILE saves the first message's bytes (the baseline sends that many bytes).

    /usr/bin/python3 sink.py --port 2525 --log /tmp/sink.log [--raw] [--sample FILE]
"""
import argparse
import asyncio
import json
import signal
import time

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self, log, raw, sample):
        self.log = log
        self.raw = raw
        self.sample = sample

    async def handle_DATA(self, server, session, envelope):
        t = time.time()
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        data = envelope.original_content or b""
        if self.sample is not None:
            with open(self.sample, "wb") as f:
                f.write(data)
            self.sample = None
        if self.raw:
            self.log.write(json.dumps({"t": t, "rcpt": rcpt,
                                       "data": data.decode("latin-1")}) + "\n")
        else:
            self.log.write(f"{t:.6f}\t{rcpt}\t{len(data)}\n")
        self.log.flush()
        return "250 OK"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--log", required=True)
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--sample")
    a = ap.parse_args()

    log = open(a.log, "a", buffering=1 << 16)
    handler = Handler(log, a.raw, a.sample)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # decode_data=False, no size limit worth hitting; no AUTH, no STARTTLS (push-email's
    # opportunistic STARTTLS then stays on plain text, as the baseline does).
    server = loop.run_until_complete(loop.create_server(
        lambda: SMTP(handler, hostname="bench-sink", ident="bench-sink",
                     data_size_limit=10 * 1024 * 1024),
        a.host, a.port))
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    print(f"sink listening on {a.host}:{a.port}", flush=True)
    loop.run_until_complete(stop.wait())
    server.close()
    log.flush()
    log.close()


if __name__ == "__main__":
    main()
