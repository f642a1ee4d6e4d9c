#!/usr/bin/env python3
"""e2e_rebalance: two push-email processes in one consumer group on a real broker, with
cooperative-sticky rebalances while events flow: every email exactly once, none lost.

The stack's cdc.info-user has one partition, so a second member would only wait. This test
uses its own topic, e2e.rebalance.<pid>, with 4 partitions (made with tools/kafka_topic), its
own group and its own delivery-log database (notifications_rebalance), and the stack's
Kafka, MariaDB and maildev. Events are Debezium create events in the exact shape of the real
ones (bench/push-email/gen_events.py), each with its own user, address and binlog position,
so each deserves exactly one welcome email.

1. push-email A starts alone and gets the 4 partitions; events flow at ~40/s.
2. push-email B joins the group mid-stream: an incremental rebalance moves some partitions
   from A (revoked: A flushes its marks and commits first) to B, which starts after A's
   commits: it reads none of A's events again (its deduped counter stays 0).
3. A gets SIGTERM mid-stream: it finishes the event in hand, commits, leaves (exit 0), and
   B takes over A's partitions from the committed offsets.
Every handover here is graceful, so not even the one in-flight duplicate that a kill -9 may
cause is allowed: each address gets exactly one welcome email, and both members sent some.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import Checks, Maildev, PushEmail, load_env, log, recipients  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GEN = os.path.join(REPO, "bench", "push-email", "gen_events.py")
N = int(os.environ.get("E2E_REBALANCE_EVENTS", "600"))
RATE = float(os.environ.get("E2E_REBALANCE_RATE", "40"))  # events/s
PARTITIONS = 4
DB = "notifications_rebalance"

env = load_env()
mail = Maildev(env)
t = Checks("e2e_rebalance")
tool = os.environ["E2E_KAFKA_TOPIC_BIN"]
brokers = env["KAFKA_BOOTSTRAP"]
tag = f"rb{os.getpid()}"
topic = f"e2e.rebalance.{os.getpid()}"
group = f"e2e-rebalance-{os.getpid()}"
overrides = {
    "PUSH_EMAIL_TOPIC": topic,
    "PUSH_EMAIL_DLQ_TOPIC": f"e2e.rebalance.{os.getpid()}.dlq",
    "PUSH_EMAIL_GROUP_ID": group,
    "PUSH_EMAIL_DB_NAME": DB,
}
base_port = int(os.environ.get("STACK_PUSH_EMAIL_PORT", "8181"))
a = PushEmail(env, name="e2e-push-email-a", port=base_port + 10, overrides=overrides)
b = PushEmail(env, name="e2e-push-email-b", port=base_port + 11, overrides=overrides)


def mysql(sql):
    subprocess.run(["mysql", "-h", env["MARIADB_HOST"], "-P", str(env["MARIADB_PORT"]), "-uroot",
                    "-e", sql], check=True)


def ours(ems):
    """Our welcome emails: (address, message-id) per email."""
    out = []
    for e in ems:
        for r in recipients(e):
            if r.startswith(f"pe{tag}u"):
                out.append(r)
    return out


def moved(text, what):
    """The partitions counted by the log lines `what` ("partitions assigned"/"revoked")."""
    n = 0
    for line in text.splitlines():
        if f'"msg":"{what}"' in line:
            m = re.search(r'"count":"(\d+)"', line)
            n += int(m.group(1)) if m else 0
    return n


def final_sent(text):
    """emails_sent of the last "consumer closed" line: the total after the stop, which
    includes what the last batch sent after a /metrics scrape. None when it is missing."""
    sent = None
    for line in text.splitlines():
        if '"msg":"consumer closed"' in line:
            m = re.search(r'"emails_sent":"(\d+)"', line)
            sent = int(m.group(1)) if m else None
    return sent


def cleanup():
    for p in (a, b):
        try:
            p.stop()
        except Exception as e:  # noqa: BLE001 - clean up as much as we can
            log(f"cleanup: {e}")
    subprocess.run([tool, brokers, "delete", topic], check=False)
    try:
        mysql(f"DROP DATABASE IF EXISTS {DB}")
    except subprocess.CalledProcessError as e:
        log(f"cleanup: {e}")


try:
    r = subprocess.run([tool, brokers, "create", topic, str(PARTITIONS)], capture_output=True,
                       text=True)
    print(r.stdout.strip(), r.stderr.strip())
    if not t.eq(r.returncode, 0, f"create topic {topic} with {PARTITIONS} partitions"):
        t.finish()
    mysql(f"DROP DATABASE IF EXISTS {DB}")
    events = subprocess.run([sys.executable, GEN, str(N), tag], check=True, capture_output=True,
                            text=True).stdout.splitlines()
    t.eq(len(events), N, "events generated")
    expected = {f"pe{tag}u{i}@example.org" for i in range(N)}

    a_off = os.path.getsize(a.log_path) if os.path.exists(a.log_path) else 0
    a.start()
    log(f"A (pid {a.pid()}) has the partitions; producing {N} events at {RATE:.0f}/s")
    producer = subprocess.Popen(["kcat", "-P", "-b", brokers, "-t", topic, "-K", "\t"],
                                stdin=subprocess.PIPE, text=True)

    def produce():
        for i, line in enumerate(events):
            producer.stdin.write(line + "\n")
            producer.stdin.flush()
            time.sleep(1.0 / RATE)
        producer.stdin.close()

    feeder = threading.Thread(target=produce)
    feeder.start()

    # B joins once a fifth of the emails are out, A leaves at three fifths.
    mail.wait_for(lambda e: len(ours(e)) >= N // 5, 120, "a fifth of the emails", settle_s=0,
                  poll_s=0.5)
    b_off = os.path.getsize(b.log_path) if os.path.exists(b.log_path) else 0
    b.start()
    time.sleep(2)  # B's first assignment may be empty: the partitions A gives up follow
    t.check(moved(a.log_since(a_off), "partitions revoked") >= 1,
            "A gave partitions up when B joined (incremental revoke)")
    mail.wait_for(lambda e: len(ours(e)) >= 3 * N // 5, 120, "three fifths of the emails",
                  settle_s=0, poll_s=0.5)
    pid = a.signal(signal.SIGTERM)
    rc = a.wait_exit(pid, 30)
    t.eq(rc, 0, "A exits 0 on SIGTERM mid-stream")
    a_sent = final_sent(a.log_since(a_off))
    t.check(a_sent is not None, "A logged its final totals when it stopped")
    a_sent = a_sent or 0
    feeder.join()
    producer.wait(timeout=30)
    t.eq(producer.returncode, 0, "kcat produced every event")

    ems = mail.wait_for(lambda e: len(ours(e)) >= N, 180, f"all {N} emails", settle_s=6,
                        poll_s=1)
    got = ours(ems)
    mb = b.metrics()
    b_sent = mb.get("push_email_emails_sent_total", 0)
    log(f"A sent {a_sent} in all; B sent {b_sent:.0f}; maildev has {len(got)}")
    dups = sorted({r for r in got if got.count(r) > 1})
    t.eq(dups[:5], [], "addresses that got the welcome email twice")
    t.eq(sorted(expected - set(got))[:5], [], "addresses whose email is missing")
    t.eq(len(got), N, "emails = events")
    t.check(a_sent > 0 and b_sent > 0, "both members sent emails")
    t.eq(a_sent + b_sent, N, "A's and B's sent counters add up to every email")
    # The broker took A's commits (the revoke's and the close's), so B started after them:
    # it met none of A's events again (the delivery log would have skipped their emails).
    t.eq(a.log_since(a_off).count("revoke: offsets not committed"), 0,
         "A's revoke commits the broker refused")
    t.eq(mb.get("push_email_emails_deduped_total", 0), 0,
         "emails B skipped because A had sent them (events read twice)")
    t.eq(moved(b.log_since(b_off), "partitions assigned"), PARTITIONS,
         "partitions B was given in all (some when it joined, A's others when A left)")
finally:
    cleanup()
t.finish()
