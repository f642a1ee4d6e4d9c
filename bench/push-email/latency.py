#!/usr/bin/python3
"""bench/push-email/latency.py: end-to-end latency REST commit -> email accepted by SMTP.

userdata PATCH (commit) -> binlog -> Debezium/Connect -> cdc.info-user -> push-email ->
SMTP sink (sink.py --raw, which stamps time.time() when a message's DATA ends). Same host,
same clock. Needs the local stack (. .stack/env) and a push-email consuming cdc.info-user
into the sink; run.sh starts both.

Creates USERS users (their welcome emails are waited for, not measured), then does UPDATES
PATCHes of full_name, one at a time, INTERVAL s apart, recording time.time() right after
each 200. An update's full_name is "Lat <tag> <i>"; its profile_changed email (to that
user's address) carries it in the decoded text body, which is how it is matched.
latency = sink accept time - REST response time. The users are deleted at the end.

    latency.py --sink-log FILE [--users 10] [--updates 300] [--interval 0.1] [--out DIR]
"""
import argparse
import email
import email.policy
import json
import os
import re
import sys
import time
import urllib.request


def load_env():
    env = dict(os.environ)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".stack", "env")
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].strip().split("=", 1)
                env.setdefault(k, v)
    return env


def call(env, method, path, body=None, ctype="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(env["USERDATA_URL"] + "/api/v1/users" + path, data=data,
                                 method=method)
    req.add_header("Authorization", "Bearer " + env["USERDATA_TOKEN"])
    if data is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def pct(vals, p):
    k = min(len(vals) - 1, max(0, int(round(p / 100.0 * len(vals) + 0.5)) - 1))
    return vals[k]


class SinkReader:
    """Follows the sink's JSON-lines log; keeps (t, rcpt, text body) of our recipients."""

    def __init__(self, path, rcpts):
        self.path, self.rcpts, self.off, self.msgs = path, rcpts, 0, []

    def poll(self):
        with open(self.path, encoding="utf-8") as f:
            f.seek(self.off)
            while True:
                line = f.readline()
                if not line.endswith("\n"):
                    break
                self.off = f.tell()
                m = json.loads(line)
                if m["rcpt"].lower() not in self.rcpts:
                    continue
                msg = email.message_from_bytes(m["data"].encode("latin-1"),
                                               policy=email.policy.default)
                body = msg.get_body(preferencelist=("plain",))
                text = body.get_content() if body is not None else ""
                self.msgs.append((m["t"], m["rcpt"].lower(), str(msg["Subject"]), text))
        return self.msgs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sink-log", required=True)
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    env = load_env()
    tag = str(int(time.time()))
    users = []
    for k in range(a.users):
        name = f"pelat{tag}u{k}"
        st, u = call(env, "POST", "", {"username": name, "email": f"{name}@example.org",
                                       "password": "correct horse battery", "locale": "en",
                                       "full_name": f"Lat {tag} start"})
        users.append((u["id"], u["email"].lower()))
    rcpts = {e for _, e in users}
    sink = SinkReader(a.sink_log, rcpts)
    deadline = time.time() + a.timeout
    while len(sink.poll()) < a.users and time.time() < deadline:
        time.sleep(0.2)
    print(f"welcome emails seen: {len(sink.msgs)}/{a.users}", file=sys.stderr)
    time.sleep(1.0)

    sent = {}  # i -> (rcpt, t_response)
    pat = re.compile(r"Lat %s (\d+)\b" % tag)
    for i in range(a.updates):
        uid, addr = users[i % len(users)]
        st, _ = call(env, "PATCH", "/" + uid, {"full_name": f"Lat {tag} {i}"},
                     "application/merge-patch+json")
        t = time.time()
        if st != 200:
            print(f"PATCH {i}: HTTP {st}", file=sys.stderr)
            continue
        sent[i] = (addr, t)
        time.sleep(a.interval)

    lat = {}
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        sink.poll()
        # match: for each message, the highest i in it is the update that caused it
        lat = {}
        for t, rcpt, subj, text in sink.msgs:
            ids = [int(x) for x in pat.findall(text)]
            if not ids:
                continue
            i = max(ids)
            if i in sent and sent[i][0] == rcpt and i not in lat:
                lat[i] = t - sent[i][1]
        if len(lat) >= len(sent):
            break
        time.sleep(0.5)

    for uid, _ in users:
        try:
            call(env, "DELETE", "/" + uid)
        except Exception as e:  # noqa: BLE001
            print(f"DELETE {uid}: {e}", file=sys.stderr)

    vals = sorted(v * 1000 for v in lat.values())
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "latency_ms.txt"), "w") as f:
        for i in sorted(lat):
            f.write(f"{i}\t{lat[i] * 1000:.3f}\n")
    if not vals:
        print("latency: no matched emails")
        return 1
    print(f"latency: matched {len(vals)}/{len(sent)} updates; ms p50 {pct(vals, 50):.1f} "
          f"p90 {pct(vals, 90):.1f} p99 {pct(vals, 99):.1f} max {vals[-1]:.1f} "
          f"min {vals[0]:.1f}")
    return 0 if len(vals) == len(sent) else 1


if __name__ == "__main__":
    sys.exit(main())
