#!/usr/bin/env python3
"""e2e_crash_restart: kill -9 of push-email in the middle of 200 updates, then a restart
with the same consumer group: every expected email arrives exactly once.

20 users get 10 full_name changes each (200 PATCHes, each a distinct old -> new pair, so
each email has distinct content). When about a third of the 200 profile emails are in
maildev, push-email is killed with SIGKILL and started again (same group id, same delivery
log). Expected = the PATCHes that changed a visible field (all 200). Every expected
(recipient, new name) must be there, none lost.

Exactly once, with one exception that no design can remove: the email in flight at the
kill. Between the SMTP server accepting it and push-email committing its `sent` mark (one
autocommit round trip) a crash leaves no trace of the send, so the restarted push-email
sends it again, with the SAME Message-ID (derived from the dedupe key), which lets a mail
system drop the copy. The test kills right after maildev accepted an email, i.e. often in
that window (the code before the delivery-log changes hit it in 1 run of 5 as well). So:
at most one email may arrive twice, and only as two copies with one Message-ID; anything
more (a second duplicate, a copy with another Message-ID, a lost email) fails. The
negative control below (E2E_CRASH_WIPE_DELIVERY_LOG=1, run by ctest as
e2e_crash_restart_catches_duplicates) sends every email twice, and this test must fail.
"""
import collections
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (Checks, Maildev, PushEmail, Userdata, load_env, log, message_id,  # noqa: E402
                    recipients, unique)

USERS = int(os.environ.get("E2E_CRASH_USERS", "20"))
ROUNDS = int(os.environ.get("E2E_CRASH_ROUNDS", "10"))
KILL_AT = float(os.environ.get("E2E_CRASH_KILL_FRACTION", "0.33"))
SUBJECT = "Your cdc-notify profile was updated"

env = load_env()
api = Userdata(env)
mail = Maildev(env)
pe = PushEmail(env)
t = Checks("e2e_crash_restart")
pe.ensure_running()

# ---- 20 users; their welcome emails are waited for, then dropped
prefix = unique("crash")
users = []
mail.clear()
for i in range(USERS):
    name = f"{prefix}-{i:02d}"
    st, body = api.create(username=name, email=f"{name}@example.org",
                          password="crash test pass phrase", full_name=f"{name} v00", locale="en")
    if not t.eq(st, 201, f"create {name}: status"):
        print(f"             body: {body}")
        t.finish()
    users.append(body)
ems = mail.wait_count(USERS, 90, f"{USERS} welcome emails", settle_s=2)
t.eq(len(ems), USERS, "welcome emails before the updates")
mail.clear()

# ---- 200 PATCHes in a background thread
expected = []  # (recipient, old full_name, new full_name)
patch_errors = []


def updates():
    for j in range(1, ROUNDS + 1):
        for u in users:
            old = u["full_name"]
            new = f"{u['username']} v{j:02d}"
            st, body = api.patch(u["id"], full_name=new)
            if st != 200:
                patch_errors.append((u["username"], j, st, body))
                continue
            if body.get("full_name") != old:  # a visible field changed: one email
                expected.append((u["email"].lower(), old, new))
            u["full_name"] = body.get("full_name")


total = USERS * ROUNDS
kill_at = int(total * KILL_AT)
t0 = time.monotonic()
worker = threading.Thread(target=updates)
worker.start()

# ---- kill -9 after ~1/3 of the emails arrived
count = 0
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    count = len(mail.emails())
    if count >= kill_at:
        break
    time.sleep(0.05)
pid = pe.signal(signal.SIGKILL)
killed_at = len(mail.emails())
log(f"kill -9 push-email pid {pid} with {count} emails seen (>= {kill_at} wanted), "
    f"{killed_at} right after; PATCHes done so far: {len(expected)}")
t.check(count >= kill_at, f"{kill_at} emails arrived before the kill (saw {count})")
t.check(killed_at < total, f"the kill came before the last email ({killed_at} < {total})")
t.check(pe.wait_exit(pid, 10) is not None, f"push-email pid {pid} gone after SIGKILL")

worker.join(timeout=300)
t.check(not worker.is_alive(), "the update loop finished")
t.eq(patch_errors, [], "PATCH errors")
log(f"{len(expected)} PATCHes changed a visible field, "
    f"in {time.monotonic() - t0:.1f}s")

# Negative control (ctest e2e_crash_restart_catches_duplicates, through
# expect_caught.py): forget what was sent, as a lost delivery log would, and restart in a
# new consumer group, so that every event of the topic is read again (with the same group
# only the last second's uncommitted offsets are, which could be none). Every update's
# email then comes twice, and this test must say so.
if os.environ.get("E2E_CRASH_WIPE_DELIVERY_LOG") == "1":
    log("NEGATIVE CONTROL: deleting every row of notifications.deliveries; new group")
    subprocess.run(["mariadb", "--no-defaults", "--protocol=tcp", "-h", env["MARIADB_HOST"],
                    "-P", env["MARIADB_PORT"], "-uroot", "-e",
                    "DELETE FROM notifications.deliveries"], check=True)
    pe.overrides["PUSH_EMAIL_GROUP_ID"] = unique("e2e-negative-control-")

# ---- restart with the same group; wait for everything
t_restart = time.monotonic()
pe.start()
log(f"push-email restarted (group unchanged) in {time.monotonic() - t_restart:.1f}s")
# (In the negative control, wait for the copies too: the emails sent before the kill come
# again, and so do the 20 welcome emails.)
want_n = len(expected)
if os.environ.get("E2E_CRASH_WIPE_DELIVERY_LOG") == "1":
    # The new group reads the whole topic: other tests' events come again first. Count and
    # keep only this run's users' emails.
    want_n += killed_at + USERS

    def ours(em):
        return any(r.startswith(prefix) for r in recipients(em))

    ems = [e for e in mail.wait_for(lambda es: sum(map(ours, es)) >= want_n, 180,
                                    f"{want_n} emails to this run's users", settle_s=8)
           if ours(e)]
else:
    ems = mail.wait_count(want_n, 180, f"{want_n} profile emails", settle_s=8)
log(f"all emails in {time.monotonic() - t0:.1f}s since the first PATCH")

# ---- exact accounting
t.eq(len(expected), total, "updates that changed a visible field")
by_id = collections.defaultdict(list)
by_content = collections.defaultdict(list)
for e in ems:
    by_id[message_id(e)].append(e)
    by_content[(tuple(recipients(e)), e.get("subject"), e.get("text"))].append(e)
dup_ids = {k: len(v) for k, v in by_id.items() if len(v) > 1}
dup_content = [(k[0], len(v), [message_id(x) for x in v]) for k, v in by_content.items()
               if len(v) > 1]
in_flight_resent = (len(dup_content) == 1 and dup_content[0][1] == 2
                    and len(set(dup_content[0][2])) == 1 and len(dup_ids) == 1)
if dup_content:
    log(f"sent twice: {dup_content[:5]} "
        f"({'the email in flight at the kill, same Message-ID' if in_flight_resent else 'MORE than the email in flight'})")
t.check(not dup_content or in_flight_resent,
        f"no email twice, but for at most the one in flight at the kill, with one Message-ID "
        f"({len(dup_content)} sent twice: {dup_content[:5]})")
t.eq(len(ems), len(expected) + (1 if in_flight_resent else 0),
     "emails in maildev (one per update, plus the in-flight one if it was sent again)")
t.eq(len(by_id), len(expected), "distinct Message-IDs = updates")
t.check(all(e.get("subject") == SUBJECT for e in ems), "every email is a profile update")

found = collections.Counter()
for e in ems:
    for r in recipients(e):
        txt = e.get("text") or ""
        for line in txt.split("\r\n"):
            if line.startswith("  Now: "):
                found[(r, line[len("  Now: "):])] += 1
missing = [(r, new) for r, _, new in expected if found[(r, new)] == 0]
twice = [(r, new, found[(r, new)]) for r, _, new in expected if found[(r, new)] > 1]
extra = [k for k in found if k not in {(r, new) for r, _, new in expected}]
t.check(not missing, f"no expected email missing ({len(missing)} missing: {missing[:10]})")
t.check(len(twice) <= (1 if in_flight_resent else 0),
        f"no expected email twice but the in-flight one ({twice[:10]})")
t.check(not extra, f"no unexpected email ({extra[:10]})")
try:
    m = pe.metrics()
    log("after restart: sent=%d deduped=%d failed=%d" % (
        m.get("push_email_emails_sent_total", -1), m.get("push_email_emails_deduped_total", -1),
        m.get("push_email_emails_failed_total", -1)))
except (OSError, RuntimeError) as err:
    log(f"metrics unavailable: {err}")
t.finish()
