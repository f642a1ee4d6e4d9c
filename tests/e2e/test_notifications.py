#!/usr/bin/env python3
"""e2e_notifications: REST change through userdata -> MariaDB -> Debezium -> Kafka ->
push-email -> SMTP -> maildev, for every rule of DESIGN.md section 6.

Each case empties maildev, makes its REST calls, waits (bounded) for the exact number of
emails it expects, watches a few seconds more for extras, then checks recipients,
subjects (per locale), multipart text+HTML, content, HTML escaping, and that no password
or hash appears anywhere in an email. A full_name with CR/LF must be refused (422) and
send nothing; written past userdata straight into the table, it must still add no header.
A case that expects no email ends with a visible change to the same user (a sentinel):
its one email proves push-email got that far, so "nothing else came" means something.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2elib import (Checks, Maildev, PushEmail, Userdata, all_recipients,  # noqa: E402
                    kcat_consume_json, load_env, log, message_id, recipients, summarize,
                    unique)

ARRIVAL_S = 90
APP = "cdc-notify"

env = load_env()
api = Userdata(env)
mail = Maildev(env)
t = Checks("e2e_notifications")
PushEmail(env).ensure_running()
secrets = []  # every password used: none may appear in an email


def new_user(name, locale, full_name, password):
    secrets.append(password)
    st, body = api.create(username=name, email=f"{name}@example.org", password=password,
                          full_name=full_name, locale=locale)
    t.eq(st, 201, f"POST {locale} user {name}: status")
    if st != 201:
        print(f"             body: {body}")
    return body if st == 201 else {}


def patch(uid, what, **fields):
    st, body = api.patch(uid, **fields)
    t.eq(st, 200, f"PATCH {what}: status")
    if st != 200:
        print(f"             body: {body}")
    return body


def common(em, what):
    """Checks every email must pass."""
    ctype = (em.get("headers") or {}).get("content-type", "")
    t.check(ctype.startswith("multipart/alternative"),
            f"{what}: Content-Type multipart/alternative (got {ctype!r})")
    t.check(bool((em.get("text") or "").strip()), f"{what}: has a text/plain part")
    t.check(bool((em.get("html") or "").strip()), f"{what}: has a text/html part")
    t.check(bool(message_id(em)), f"{what}: has a Message-ID")
    t.check(bool((em.get("headers") or {}).get("date")), f"{what}: has a Date")
    auto = (em.get("headers") or {}).get("auto-submitted")
    t.eq(auto, "auto-generated", f"{what}: Auto-Submitted: auto-generated (RFC 3834)")
    src = mail.source(em["id"])
    blobs = [em.get("subject") or "", em.get("text") or "", em.get("html") or "", src]
    leaked = [s for s in secrets if any(s in b for b in blobs)]
    t.check(not leaked, f"{what}: no password in subject/text/html/source (leaked: {leaked})")
    t.check(not any(("$argon2" in b or "password_hash" in b) for b in blobs),
            f"{what}: no password hash ($argon2 / password_hash) in the email")


def run_case(name, action, expect):
    """expect: list of (recipient, subject). Returns {recipient: email}."""
    log(f"--- case {name}")
    mail.clear()
    action()
    ems = mail.wait_count(len(expect), ARRIVAL_S, f"{name}: {len(expect)} email(s)")
    if not t.eq(len(ems), len(expect), f"{name}: number of emails"):
        for line in summarize(ems):
            print(f"             got: {line}")
    got = sorted((tuple(all_recipients(e)), e.get("subject")) for e in ems)
    want = sorted(((rcpt.lower(),), subj) for rcpt, subj in expect)
    t.eq(got, want, f"{name}: (recipients incl. cc/bcc/envelope, subject)")
    by_rcpt = {}
    for e in ems:
        common(e, f"{name} -> {recipients(e)}")
        for r in recipients(e):
            by_rcpt[r] = e
    return by_rcpt


def has(t_, hay, needle, what):
    return t_.check(needle in (hay or ""), f"{what}: contains {needle!r}")


def masked(addr):
    """How the notice to an old address names the new one: n***@example.org."""
    local, _, domain = addr.rpartition("@")
    return f"{local[:1]}***@{domain}"


def not_shown(em, needle, what):
    """The email shows needle nowhere: subject, text, HTML or source."""
    blobs = [em.get("subject") or "", em.get("text") or "", em.get("html") or "",
             mail.source(em["id"]) if em.get("id") else ""]
    return t.check(not any(needle in b for b in blobs), f"{what}: does not show {needle!r}")


def sql(query):
    # errors="replace": SHOW BINLOG EVENTS shows statements with their binary values.
    r = subprocess.run(["mariadb", "--no-defaults", "--protocol=tcp", "-h", env["MARIADB_HOST"],
                        "-P", env["MARIADB_PORT"], "-uroot", "-N", "-B", "-e", query],
                       capture_output=True, text=True, errors="replace", timeout=60)
    t.eq(r.returncode, 0, f"mariadb -e {query[:40]!r}: exit status ({r.stderr.strip()[:200]})")
    return r.stdout


def wait_cdc_event(uid, op, pred, what, timeout_s=ARRIVAL_S):
    """Waits until cdc.info-user holds an `op` event for user uid whose payload passes
    pred(payload); proves Debezium published the change a case relies on."""
    deadline = time.monotonic() + timeout_s
    while True:
        for m in kcat_consume_json(env["KAFKA_BOOTSTRAP"], "cdc.info-user"):
            if uid not in (m.get("key") or "") or not m.get("payload"):
                continue
            v = json.loads(m["payload"])
            v = v.get("payload", v) if isinstance(v, dict) and "schema" in v else v
            if isinstance(v, dict) and v.get("op") == op and pred(v):
                return t.check(True, f"{what}: Debezium published the {op!r} event")
        if time.monotonic() >= deadline:
            return t.check(False, f"{what}: no {op!r} event for {uid} on cdc.info-user "
                                  f"within {timeout_s}s")
        time.sleep(1)


def sentinel_after(action, uid, what):
    """Runs action (which must send no email), then a visible change to the SAME user: its
    events share a key, so one partition, read in order. When the sentinel's one email is
    there, push-email has handled everything action caused; that nothing else came is then
    a real "no email", not a slow consumer."""
    def run():
        action()
        patch(uid, f"{what}: sentinel address", address=f"1 Sentinel Road {unique('')}")
    return run


# ---------------------------------------------------------------- en user lifecycle
n1 = unique("ada")
addr1, addr2 = f"{n1}@example.org", f"{n1}-new@example.org"
u1 = {}
PW1, PW2 = "correct horse battery staple one", "another long passphrase two"
secrets.append(PW2)

got = run_case("create", lambda: u1.update(new_user(n1, "en", "Ada Lovelace", PW1)),
               [(addr1, f"Welcome to {APP}, Ada Lovelace")])
e = got.get(addr1, {})
has(t, e.get("text"), "Hello Ada Lovelace", "welcome text")
has(t, e.get("text"), n1, "welcome text (username)")
has(t, e.get("html"), "Ada Lovelace", "welcome html")
uid = u1.get("id", "missing")

got = run_case("update full_name", lambda: patch(uid, "full_name", full_name="Ada King"),
               [(addr1, f"Your {APP} profile was updated")])
e = got.get(addr1, {})
txt = e.get("text") or ""
has(t, txt, "Full name\r\n  Before: Ada Lovelace\r\n  Now: Ada King", "profile text")
t.eq(txt.count("Before:"), 1, "profile text lists exactly one changed field")
has(t, e.get("html"), "Ada Lovelace", "profile html (old)")
has(t, e.get("html"), "Ada King", "profile html (new)")

got = run_case("email change", lambda: patch(uid, "email", email=addr2),
               [(addr1, f"Security notice: the email address of your {APP} account was changed"),
                (addr2, f"This is now the email address of your {APP} account")])
# The new address gets every value; the old one, which may not be the owner's any more,
# the new address masked and the names of the changed fields only.
e = got.get(addr2, {})
has(t, e.get("text"), f"Before: {addr1}", f"email change text to {addr2}")
has(t, e.get("text"), f"Now: {addr2}", f"email change text to {addr2}")
e = got.get(addr1, {})
has(t, e.get("text"), masked(addr2), f"email change text to {addr1} (new address masked)")
has(t, e.get("html"), masked(addr2), f"email change html to {addr1} (new address masked)")
has(t, e.get("text"), "What changed:\r\n* Email address", f"email change text to {addr1} (labels)")
t.check("Before:" not in (e.get("text") or "") and "Now:" not in (e.get("text") or ""),
        f"email change text to {addr1}: no old or new values")
not_shown(e, addr2, f"email change to {addr1}")

got = run_case("password change", lambda: patch(uid, "password", password=PW2),
               [(addr2, f"Your {APP} password was changed")])
t.check("Before:" not in (got.get(addr2, {}).get("text") or ""),
        "password email lists no field change (password_changed_at is never listed)")



def no_visible_change():
    # Through REST, a PATCH to the values a user has writes nothing (no event at all).
    patch(uid, "same full_name", full_name="Ada King")
    # A write of columns nobody sees (version, updated_at): Debezium publishes a 'u' event,
    # and push-email must send nothing for it (DESIGN.md section 6).
    out = sql(f"UPDATE userdata.users SET version = version + 1, updated_at = NOW(6) "
              f"WHERE id = '{uid}'; SELECT version FROM userdata.users WHERE id = '{uid}'")
    ver = int(out.split()[-1]) if out.split() and out.split()[-1].isdigit() else -1
    wait_cdc_event(uid, "u", lambda v: (v.get("after") or {}).get("version") == ver
                   and (v.get("before") or {}).get("full_name") == "Ada King"
                   and (v.get("after") or {}).get("full_name") == "Ada King",
                   "invisible update (version, updated_at)")


got = run_case("no visible change", sentinel_after(no_visible_change, uid, "no visible change"),
               [(addr2, f"Your {APP} profile was updated")])
txt = got.get(addr2, {}).get("text") or ""
has(t, txt, "Sentinel Road", "the one email is the sentinel's")
t.eq(txt.count("Before:"), 1, "the sentinel's email lists only the address")

got = run_case("delete", lambda: t.eq(api.delete(uid)[0], 204, "DELETE: status"),
               [(addr2, f"Your {APP} account was deleted")])
has(t, got.get(addr2, {}).get("text"), "Ada King", "deleted text")

# ---------------------------------------------------------------- takeover pattern
# Email, password and language changed in one request: the old address (the one the owner
# still reads) hears of the email AND the password change, in the owner's language as it
# was; the new address gets both in the new language.
nt = unique("grace")
at1, at2 = f"{nt}@example.org", f"{nt}-x@example.org"
ut = {}
run_case("create (takeover)", lambda: ut.update(new_user(nt, "en", "Grace Hopper", PW1)),
         [(at1, f"Welcome to {APP}, Grace Hopper")])
PW3 = "a third long passphrase here"
secrets.append(PW3)
got = run_case("email + password + locale at once",
               lambda: patch(ut.get("id", "missing"), "email+password+locale", email=at2,
                             password=PW3, locale="es"),
               [(at1, f"Security notice: the email address of your {APP} account was changed"),
                (at1, f"Your {APP} password was changed"),
                (at2, f"Esta es ahora la dirección de correo de tu cuenta de {APP}"),
                (at2, f"Se cambió la contraseña de tu cuenta de {APP}")])
# Both emails to the old address keep the new one (the intruder's, here) masked, and the
# notice names the changed fields (in the owner's language as it was) without values; the
# new address hears the values, in its new language.
for e in mail.emails():
    subj, txt = e.get("subject") or "", e.get("text") or ""
    if at1 in recipients(e):
        not_shown(e, at2, f"takeover email {subj!r} to the old address")
    if at1 in recipients(e) and subj.startswith("Security notice"):
        has(t, txt, masked(at2), "takeover notice to the old address (masked)")
        has(t, txt, "* Email address", "takeover notice to the old address (labels)")
        has(t, txt, "* Language", "takeover notice to the old address (labels)")
        t.check("Spanish" not in txt and "English" not in txt,
                "takeover notice to the old address: no old or new language value")
    if at2 in recipients(e) and subj.startswith("Esta es ahora"):
        has(t, txt, f"Ahora: {at2}", "takeover confirmation to the new address (values)")

# ---------------------------------------------------------------- locales
npt, nes = unique("joao"), unique("inigo")
upt, ues = {}, {}


def create_locales():
    upt.update(new_user(npt, "pt-BR", "João Ninguém", "senha muito longa e secreta"))
    ues.update(new_user(nes, "es", "Íñigo Pérez", "contraseña muy larga y secreta"))


got = run_case("create pt-BR + es", create_locales,
               [(f"{npt}@example.org", f"Boas-vindas ao {APP}, João Ninguém"),
                (f"{nes}@example.org", f"Te damos la bienvenida a {APP}, Íñigo Pérez")])
got = run_case("update pt-BR + es", lambda: (
    patch(upt.get("id", "missing"), "pt-BR full_name", full_name="João Alguém"),
    patch(ues.get("id", "missing"), "es full_name", full_name="Íñigo López")),
    [(f"{npt}@example.org", f"Seu perfil no {APP} foi atualizado"),
     (f"{nes}@example.org", f"Se actualizó tu perfil de {APP}")])
has(t, got.get(f"{npt}@example.org", {}).get("text"), "João Alguém", "pt-BR profile text")
has(t, got.get(f"{nes}@example.org", {}).get("text"), "Íñigo López", "es profile text")
# Status values are told in the person's language (fields: status.CONFIRMED=...).
got = run_case("status pt-BR", lambda: patch(upt.get("id", "missing"), "pt-BR status",
                                             status="CONFIRMED"),
               [(f"{npt}@example.org", f"Seu perfil no {APP} foi atualizado")])
e = got.get(f"{npt}@example.org", {})
has(t, e.get("text"), "Ainda não confirmada", "pt-BR status text (old value in Portuguese)")
has(t, e.get("text"), "Confirmada", "pt-BR status text (new value in Portuguese)")
t.check("UNCONFIRMED" not in (e.get("text") or ""), "pt-BR status text: no raw UNCONFIRMED")

# ---------------------------------------------------------------- HTML escaping
nx = unique("html")
ux = {}
HOSTILE = '<b>x</b> & "q"'
got = run_case("html escaping", lambda: ux.update(new_user(nx, "en", HOSTILE, "hostile pass phrase")),
               [(f"{nx}@example.org", f"Welcome to {APP}, {HOSTILE}")])
e = got.get(f"{nx}@example.org", {})
has(t, e.get("html"), "&lt;b&gt;x&lt;/b&gt; &amp; &quot;q&quot;", "welcome html (escaped name)")
t.check("<b>x</b>" not in (e.get("html") or ""), "welcome html: raw <b>x</b> absent")
has(t, e.get("text"), HOSTILE, "welcome text (plain, unescaped)")

# ---------------------------------------------------------------- header injection
INJ = "x\r\nBcc: evil@example.org"


def injection():
    ni = unique("inj")
    st, body = api.create(username=ni, email=f"{ni}@example.org", password="injection pass phrase",
                          full_name=INJ, locale="en")
    t.eq(st, 422, "POST full_name with CR/LF Bcc: status")
    t.check("full_name" in str(body), f"POST 422 names full_name ({str(body)[:160]})")
    st, body = api.patch(ux.get("id", "missing"), full_name=INJ)
    t.eq(st, 422, "PATCH full_name with CR/LF Bcc: status")
    st, body = api.patch(ux.get("id", "missing"), full_name="y\nBcc: evil@example.org")
    t.eq(st, 422, "PATCH full_name with LF Bcc: status")
    st, body = api.call("GET", "/" + ux.get("id", "missing"))
    t.eq((body or {}).get("full_name") if isinstance(body, dict) else body, HOSTILE,
         "full_name unchanged after refused PATCHes")


got = run_case("header injection refused", sentinel_after(injection, ux.get("id", "missing"),
                                                         "header injection"),
               [(f"{nx}@example.org", f"Your {APP} profile was updated")])
has(t, (got.get(f"{nx}@example.org") or {}).get("text"), "Sentinel Road",
    "after the refused PATCHes, the one email is the sentinel's")


def no_header_line(em, what):
    """The raw message has no Bcc/Cc header and no header line that came from a name."""
    src = mail.source(em["id"]) if em.get("id") else ""
    head = src.split("\r\n\r\n", 1)[0]
    names = [ln.split(":", 1)[0].lower() for ln in head.split("\r\n") if ln and ln[0] not in " \t"]
    t.check("bcc" not in names and "cc" not in names, f"{what}: no Bcc/Cc header ({names})")
    t.check(all("evil@example.org" not in a for a in all_recipients(em)),
            f"{what}: evil@example.org is no recipient ({all_recipients(em)})")
    t.check("\n" not in (em.get("subject") or "") and "\r" not in (em.get("subject") or ""),
            f"{what}: subject on one line ({em.get('subject')!r})")


# The same names written past userdata's validation, straight into the table: push-email's
# own stripping must keep CR/LF out of every header (DESIGN.md section 6). A create (the
# name is in the welcome subject) and an update of a name (in the profile email).
nj = unique("sqlinj")
NAME_SQL = "CONCAT('x', CHAR(13), CHAR(10), 'Bcc: evil@example.org')"
got = run_case("header injection past userdata (create)", lambda: sql(
    "INSERT INTO userdata.users (id, username, email, password_hash, full_name, locale, "
    "created_at, updated_at) VALUES (UUID(), "
    f"'{nj}', '{nj}@example.org', 'not-a-hash', {NAME_SQL}, 'en', NOW(6), NOW(6))"),
    [(f"{nj}@example.org", f"Welcome to {APP}, xBcc: evil@example.org")])  # CR/LF removed
no_header_line(got.get(f"{nj}@example.org", {}), "welcome with a CR/LF name")
got = run_case("header injection past userdata (update)", lambda: sql(
    f"UPDATE userdata.users SET full_name = {NAME_SQL}, version = version + 1 "
    f"WHERE id = '{ux.get('id', 'missing')}'"),
    [(f"{nx}@example.org", f"Your {APP} profile was updated")])
no_header_line(got.get(f"{nx}@example.org", {}), "profile email with a CR/LF name")
has(t, (got.get(f"{nx}@example.org") or {}).get("text"), "Bcc: evil@example.org",
    "profile text shows the new name as text")
got = run_case("delete the row written past userdata",
               lambda: sql(f"DELETE FROM userdata.users WHERE username = '{nj}'"),
               [(f"{nj}@example.org", f"Your {APP} account was deleted")])
no_header_line(got.get(f"{nj}@example.org", {}), "account-deleted email with a CR/LF name")


# The delivery log is kept out of the binlog (binlog-ignore-db=notifications): the CDC feed
# carries the users table and none of push-email's marks, though the marks were written.
sent_rows = sql("SELECT COUNT(*) FROM notifications.deliveries WHERE state = 'sent'").strip()
t.check(sent_rows.isdigit() and int(sent_rows) > 0,
        f"the delivery log holds the sent marks ({sent_rows} rows)")
tables = set()
for line in sql("SHOW BINARY LOGS").splitlines():
    for ev in sql(f"SHOW BINLOG EVENTS IN '{line.split()[0]}'").splitlines():
        cols = ev.split("\t")
        if len(cols) > 5 and cols[2] == "Table_map":
            tables.add(cols[5].split("(")[-1].rstrip(")"))
t.check("userdata.users" in tables, f"the binlog carries userdata.users (tables: {sorted(tables)})")
t.check(not any(tb.startswith("notifications.") for tb in tables),
        f"the binlog carries no notifications.* table (tables: {sorted(tables)})")

t.finish()
