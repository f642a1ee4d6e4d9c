/* Unit tests of the notifier with fake ports: dedupe, transient and permanent failures,
 * locale fallback, and what reaches the mail sender. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "interactors/notifier.h"
#include "interactors/retry_policy.h"
#include "tests/lib/base64_decode.h"

/* --- fake mail sender: records messages, answers from a script ---------------------- */
#define MAX_SENT 16
struct fake_sender {
    enum mail_result script[MAX_SENT]; /* answer for call i; MAIL_SENT after the script */
    size_t calls;
    size_t n_sent;
    char to[MAX_SENT][256];
    char *data[MAX_SENT];
    /* What the delivery log said when the gate let message i go (written, durable). */
    uint64_t gate_written[MAX_SENT], gate_durable[MAX_SENT];
    void *log; /* struct fake_log *, to read those from */
};

static uint64_t fl_written(void *self);
static uint64_t fl_durable(void *self);

/* Like a server: a message that would be accepted first passes the gate, as the SMTP
 * sender asks it before the end of data; a refusal means nothing was accepted. */
static enum mail_result fs_send(void *self, const char *from, const char *to, const char *data,
                                size_t len, const struct mail_gate *gate, char *err, size_t errlen)
{
    struct fake_sender *s = self;
    enum mail_result r = s->calls < MAX_SENT ? s->script[s->calls] : MAIL_SENT;
    (void)from;
    s->calls++;
    if (r == MAIL_SENT && gate != NULL && gate->ready(gate->ctx) != 0) {
        snprintf(err, errlen, "not sent: the gate refused it");
        return MAIL_TRANSIENT;
    }
    if (r == MAIL_SENT && s->n_sent < MAX_SENT) {
        s->gate_written[s->n_sent] = fl_written(s->log);
        s->gate_durable[s->n_sent] = fl_durable(s->log);
    }
    if (r == MAIL_SENT && s->n_sent < MAX_SENT) {
        snprintf(s->to[s->n_sent], sizeof s->to[0], "%s", to);
        s->data[s->n_sent] = strndup(data, len);
        s->n_sent++;
    }
    snprintf(err, errlen, "%s", r == MAIL_TRANSIENT ? "451 try later" : "550 no such user");
    return r;
}
static const struct mail_sender_ops fake_sender_ops = {fs_send};

/* --- fake delivery log: a small map that writes `sent` behind, like the MariaDB one ----- */
struct fake_log {
    char keys[32][512];
    enum delivery_state states[32];
    unsigned attempts[32];
    size_t n;
    bool down;
    bool fail_mark_sent;
    bool fail_flush;           /* the marks cannot be committed now (flush times out) */
    uint64_t written, durable; /* tickets: mark_sent writes, flush (or a test) commits */
    char prefetched[8][512];   /* the keys of the last prefetch */
    size_t n_prefetched;
};

static int fl_find(struct fake_log *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->keys[i], key) == 0)
            return (int)i;
    }
    return -1;
}

static enum delivery_log_err fl_begin(void *self, const char *key, const char *kind,
                                      const char *recipient, enum delivery_state *state)
{
    struct fake_log *l = self;
    (void)kind;
    (void)recipient;
    if (l->down)
        return DELIVERY_LOG_UNAVAILABLE;
    int i = fl_find(l, key);
    *state = i < 0 ? DELIVERY_PENDING : l->states[i]; /* records nothing */
    return DELIVERY_LOG_OK;
}

/* Upsert of key's state. */
static enum delivery_log_err fl_set(struct fake_log *l, const char *key, enum delivery_state s)
{
    if (l->down)
        return DELIVERY_LOG_UNAVAILABLE;
    int i = fl_find(l, key);
    if (i < 0) {
        assert_true(l->n < 32);
        i = (int)l->n++;
        snprintf(l->keys[i], sizeof l->keys[i], "%s", key);
    }
    if (!(l->states[i] == DELIVERY_SENT && s == DELIVERY_FAILED))
        l->states[i] = s;
    return DELIVERY_LOG_OK;
}

static enum delivery_log_err fl_sent(void *self, const char *key, const char *kind,
                                     const char *recipient)
{
    struct fake_log *l = self;
    (void)kind;
    (void)recipient;
    if (l->fail_mark_sent)
        return DELIVERY_LOG_UNAVAILABLE;
    enum delivery_log_err e = fl_set(l, key, DELIVERY_SENT);
    if (e == DELIVERY_LOG_OK)
        l->written++;
    return e;
}

static enum delivery_log_err fl_failed(void *self, const char *key, const char *kind,
                                       const char *recipient, const char *error)
{
    (void)kind;
    (void)recipient;
    (void)error;
    return fl_set(self, key, DELIVERY_FAILED);
}

static enum delivery_log_err fl_attempt(void *self, const char *key, const char *kind,
                                        const char *recipient, const char *error)
{
    struct fake_log *l = self;
    (void)error;
    enum delivery_state st = DELIVERY_PENDING;
    int i = fl_find(l, key);
    if (i >= 0)
        st = l->states[i];
    enum delivery_log_err e = fl_set(l, key, st);
    (void)kind;
    (void)recipient;
    if (e == DELIVERY_LOG_OK)
        l->attempts[fl_find(l, key)]++;
    return e;
}

static enum delivery_log_err fl_ping(void *self)
{
    return ((struct fake_log *)self)->down ? DELIVERY_LOG_UNAVAILABLE : DELIVERY_LOG_OK;
}

static uint64_t fl_written(void *self)
{
    return ((struct fake_log *)self)->written;
}

static uint64_t fl_durable(void *self)
{
    return ((struct fake_log *)self)->durable;
}

static enum delivery_log_err fl_flush(void *self, int timeout_ms)
{
    struct fake_log *l = self;
    (void)timeout_ms;
    if (l->down || l->fail_flush)
        return DELIVERY_LOG_UNAVAILABLE;
    l->durable = l->written;
    return DELIVERY_LOG_OK;
}

static void fl_prefetch(void *self, const char *const *keys, size_t n)
{
    struct fake_log *l = self;
    l->n_prefetched = n;
    for (size_t i = 0; i < n && i < 8; i++)
        snprintf(l->prefetched[i], sizeof l->prefetched[i], "%s", keys[i]);
}

static const struct delivery_log_ops fake_log_ops = {
    fl_begin,   fl_sent,    fl_failed, fl_attempt,  fl_ping,
    fl_written, fl_durable, fl_flush,  fl_prefetch,
};

/* --- fake templates: en complete, pt-BR only for welcome --------------------------------- */
static bool g_typo;                  /* en's welcome.txt says {{ful_name}} */
static bool g_pt_fields;             /* pt-BR has a fields file */
static const char *g_en_fields;      /* en's fields file instead of the one below */
static const char *g_en_override[2]; /* en's file [0] says [1] instead of what is below */
static const char *ft_get(void *self, const char *locale, const char *name)
{
    (void)self;
    static const char *const en[][2] = {
        {"welcome.subject", "Welcome, {{full_name}}"},
        {"welcome.txt", "Hello {{full_name}}"},
        {"welcome.html", "<p>Hello {{full_name}}</p>"},
        {"profile_changed.subject", "{{#changes}}{{label}}: {{old}} -> {{new}}{{/changes}}"},
        {"profile_changed.txt", "{{#changes}}{{label}}: {{old}} -> {{new}}\n{{/changes}}"},
        {"profile_changed.html", "<ul>{{#changes}}<li>{{label}}</li>{{/changes}}</ul>"},
        {"email_changed_old.subject", "Your email changed"},
        {"email_changed_old.txt", "now {{new_email_masked}}: {{#changes}}{{label}};{{/changes}}"},
        {"email_changed_old.html", "<p>now {{new_email_masked}}</p>"},
        {"email_changed_new.subject", "Email confirmed"},
        {"email_changed_new.txt", "was {{old_email}}"},
        {"email_changed_new.html", "<p>was {{old_email}}</p>"},
        {"password_changed.subject", "Password changed"},
        {"password_changed.txt", "pw"},
        {"password_changed.html", "<p>pw</p>"},
        {"account_deleted.subject", "Goodbye {{username}}"},
        {"account_deleted.txt", "bye"},
        {"account_deleted.html", "<p>bye</p>"},
        {"fields", "full_name=Full name\nemail=Email\nlocale=Language\n"
                   "locale.pt-BR=Portuguese (Brazil)\n"},
    };
    static const char *const pt[][2] = {
        {"welcome.subject", "Bem-vindo, {{full_name}}"},
        {"welcome.txt", "Ola {{full_name}}"},
        {"welcome.html", "<p>Ola {{full_name}}</p>"},
        /* half a kind: a locale without all three files falls back as a whole */
        {"account_deleted.subject", "Adeus {{username}}"},
    };
    if (g_pt_fields && strcmp(locale, "pt-BR") == 0 && strcmp(name, "fields") == 0)
        return "full_name=Nome\n";
    if (g_typo && strcmp(locale, "en") == 0 && strcmp(name, "welcome.txt") == 0)
        return "Hello {{ful_name}}";
    if (g_en_fields != NULL && strcmp(locale, "en") == 0 && strcmp(name, "fields") == 0)
        return g_en_fields;
    if (g_en_override[0] != NULL && strcmp(locale, "en") == 0 &&
        strcmp(name, g_en_override[0]) == 0)
        return g_en_override[1];
    if (strcmp(locale, "en") == 0) {
        for (size_t i = 0; i < sizeof en / sizeof en[0]; i++) {
            if (strcmp(en[i][0], name) == 0)
                return en[i][1];
        }
    }
    if (strcmp(locale, "pt-BR") == 0) {
        for (size_t i = 0; i < sizeof pt / sizeof pt[0]; i++) {
            if (strcmp(pt[i][0], name) == 0)
                return pt[i][1];
        }
    }
    return NULL;
}
static const struct template_store_ops fake_templates_ops = {ft_get};

static int64_t fe_now(void *self)
{
    (void)self;
    return 1795000000;
}

static void fe_mid(void *self, const char *key, char *out, size_t outlen)
{
    (void)self;
    unsigned long h = 5381;
    for (const char *p = key; *p; p++)
        h = h * 33 + (unsigned char)*p;
    snprintf(out, outlen, "<%lx@test.example>", h);
}
static const struct notify_env_ops fake_env_ops = {fe_now, fe_mid};

/* --- fixture ------------------------------------------------------------------------------ */
struct fixture {
    struct fake_sender sender;
    struct fake_log log;
    struct notifier *n;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    static const char *const locales[] = {"en", "es", "pt-BR"};
    struct notifier_config cfg = {"no-reply@cdc-notify.example", "cdc-notify", "en", locales, 3};
    if (fx == NULL)
        return -1;
    fx->sender.log = &fx->log;
    fx->n = notifier_new((struct mail_sender){&fake_sender_ops, &fx->sender},
                         (struct delivery_log){&fake_log_ops, &fx->log},
                         (struct template_store){&fake_templates_ops, NULL},
                         (struct notify_env){&fake_env_ops, NULL}, &cfg);
    *state = fx;
    return fx->n ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    g_en_fields = NULL;
    g_en_override[0] = g_en_override[1] = NULL;
    for (size_t i = 0; i < fx->sender.n_sent; i++)
        free(fx->sender.data[i]);
    notifier_free(fx->n);
    free(fx);
    return 0;
}

static void image(struct user_image *u, const char *email, const char *full_name,
                  const char *locale)
{
    memset(u, 0, sizeof *u);
    snprintf(u->id, sizeof u->id, "123e4567-e89b-42d3-a456-426614174000");
    snprintf(u->username, sizeof u->username, "ana");
    snprintf(u->email, sizeof u->email, "%s", email);
    snprintf(u->full_name, sizeof u->full_name, "%s", full_name);
    snprintf(u->locale, sizeof u->locale, "%s", locale);
    snprintf(u->status, sizeof u->status, "UNCONFIRMED");
    u->version = 1;
}

static struct user_change change(enum change_op op, long pos)
{
    struct user_change c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.source.server_id = 1;
    snprintf(c.source.file, sizeof c.source.file, "mariadb-bin.000001");
    c.source.pos = pos;
    return c;
}

/* Ana changes her address from old@ to new@example.com (two emails) at binlog position pos. */
static struct user_change email_change(long pos)
{
    struct user_change c = change(CHANGE_UPDATE, pos);
    c.has_before = c.has_after = true;
    image(&c.before, "old@example.com", "Ana", "en");
    image(&c.after, "new@example.com", "Ana", "en");
    return c;
}

/* The text/plain part of a written message, decoded (malloc'd; the test frees). */
static char *text_part(const char *msg)
{
    static const char mark[] = "Content-Type: text/plain; charset=UTF-8\r\n"
                               "Content-Transfer-Encoding: base64\r\n\r\n";
    const char *p = strstr(msg, mark);
    char *out;

    assert_non_null(p);
    p += strlen(mark);
    const char *end = strstr(p, "\r\n--"); /* the next boundary */
    size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
    out = calloc(1, n + 1);
    assert_non_null(out);
    b64_decode(p, n, out);
    return out;
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 0;
        if (n == 0)
            return false;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
        }
        p += n;
    }
    return true;
}

static void welcome_is_sent_once_even_when_redelivered(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_CREATE, 100);
    c.has_after = true;
    image(&c.after, "ana@example.com", "Ana Lima", "en");

    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(rep.sent, 1);
    assert_int_equal(fx->sender.n_sent, 1);
    assert_string_equal(fx->sender.to[0], "ana@example.com");
    assert_non_null(strstr(fx->sender.data[0], "Subject: Welcome, Ana Lima\r\n"));

    /* The same event again (a restart, a rebalance, Debezium re-emitting): no email. */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(rep.deduped, 1);
    assert_int_equal(rep.sent, 0);
    assert_int_equal(fx->sender.n_sent, 1);
}

/* The log writes `sent` behind: the notifier hands out its tickets so that the consumer
 * stores an offset only once the event's marks are durable. */
static void tickets_tell_when_the_sent_marks_are_durable(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_CREATE, 150);
    c.has_after = true;
    image(&c.after, "ana@example.com", "Ana Lima", "en");

    assert_int_equal(notifier_ticket(fx->n), 0);
    assert_true(notifier_durable(fx->n) >= notifier_ticket(fx->n));
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(notifier_ticket(fx->n), 1);
    assert_int_equal(notifier_durable(fx->n), 0); /* not committed yet */
    fx->log.down = true;
    assert_int_equal(notifier_flush(fx->n, 100), -1);
    fx->log.down = false;
    assert_int_equal(notifier_flush(fx->n, 100), 0);
    assert_int_equal(notifier_durable(fx->n), 1);
    /* Deduped and invisible changes write nothing: the ticket stays. */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(rep.deduped, 1);
    assert_int_equal(notifier_ticket(fx->n), 1);
}

/* The log commits a mark while the next email is under way: each send's gate makes every
 * mark before it durable before the server can accept the message, so at most one
 * accepted email ever lacks a committed mark. When the marks cannot be committed, the
 * send is abandoned (nothing accepted) and the event retried. */
static void each_send_waits_for_the_marks_before_it(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = email_change(155);

    /* An email change: two emails, the second gated on the first one's mark. */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(fx->sender.n_sent, 2);
    assert_int_equal(fx->sender.gate_written[0], 0);
    assert_int_equal(fx->sender.gate_durable[0], 0);
    assert_int_equal(fx->sender.gate_written[1], 1);
    assert_int_equal(fx->sender.gate_durable[1], 1); /* committed before it could go */
    assert_int_equal(notifier_ticket(fx->n), 2);
    assert_int_equal(notifier_durable(fx->n), 1); /* the last one commits behind */

    /* The database is away: the next send is abandoned at its gate, nothing accepted. */
    struct user_change d = change(CHANGE_DELETE, 156);
    d.has_before = true;
    image(&d.before, "new@example.com", "Ana", "en");
    fx->log.fail_flush = true;
    assert_int_equal(notifier_handle(fx->n, &d, &rep), NOTIFY_RETRY);
    assert_int_equal(rep.sent, 0);
    assert_int_equal(rep.transient, 1);
    assert_non_null(strstr(rep.reason, "gate"));
    assert_int_equal(fx->sender.n_sent, 2);
    assert_int_equal(notifier_durable(fx->n), 1);

    /* It is back: the retry commits the mark before and sends the goodbye. */
    fx->log.fail_flush = false;
    assert_int_equal(notifier_handle(fx->n, &d, &rep), NOTIFY_DONE);
    assert_int_equal(rep.sent, 1);
    assert_int_equal(fx->sender.n_sent, 3);
    assert_int_equal(fx->sender.gate_durable[2], 2);
}

/* A batch's emails are looked up in one go: the keys handle() will ask about. */
static void prefetch_asks_for_every_email_of_the_batch(void **state)
{
    struct fixture *fx = *state;
    struct user_change create = change(CHANGE_CREATE, 160);
    create.has_after = true;
    image(&create.after, "ana@example.com", "Ana", "en");
    struct user_change snapshot = change(CHANGE_READ, 161);
    snapshot.has_after = true;
    image(&snapshot.after, "bob@example.com", "Bob", "en");
    struct user_change move = change(CHANGE_UPDATE, 170);
    move.has_before = move.has_after = true;
    image(&move.before, "old@example.com", "Ana", "en");
    image(&move.after, "new@example.com", "Ana", "en");
    const struct user_change *batch[] = {&create, &snapshot, &move};

    notifier_prefetch(fx->n, batch, 3);
    assert_int_equal(fx->log.n_prefetched, 3); /* welcome + old and new address */
    assert_non_null(strstr(fx->log.prefetched[0], ":welcome:ana@example.com"));
    assert_non_null(strstr(fx->log.prefetched[1], ":email_changed_old:old@example.com"));
    assert_non_null(strstr(fx->log.prefetched[2], ":email_changed_new:new@example.com"));
    assert_int_equal(fx->sender.n_sent, 0); /* a lookup only */
}

static void locale_falls_back_by_case_language_and_default(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_CREATE, 200);
    c.has_after = true;
    image(&c.after, "ana@example.com", "Ana", "pt-br"); /* lower-case region */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_non_null(strstr(fx->sender.data[0], "Subject: Bem-vindo, Ana\r\n"));

    /* pt-BR has no delete template: English is used. */
    struct user_change d = change(CHANGE_DELETE, 300);
    d.has_before = true;
    image(&d.before, "ana@example.com", "Ana", "pt-BR");
    assert_int_equal(notifier_handle(fx->n, &d, &rep), NOTIFY_DONE);
    assert_non_null(strstr(fx->sender.data[1], "Subject: Goodbye ana\r\n"));

    /* An unknown locale: English too. */
    struct user_change e = change(CHANGE_CREATE, 400);
    e.has_after = true;
    image(&e.after, "zed@example.com", "Zed", "xx-YY");
    assert_int_equal(notifier_handle(fx->n, &e, &rep), NOTIFY_DONE);
    assert_non_null(strstr(fx->sender.data[2], "Subject: Welcome, Zed\r\n"));

    /* pt-PT and pt have no templates: pt-BR, the same language, before English. */
    const char *const pts[] = {"pt-PT", "pt"};
    for (size_t i = 0; i < 2; i++) {
        struct user_change p = change(CHANGE_CREATE, 500 + (long)i);
        p.has_after = true;
        image(&p.after, "rui@example.com", "Rui", pts[i]);
        assert_int_equal(notifier_handle(fx->n, &p, &rep), NOTIFY_DONE);
        assert_non_null(strstr(fx->sender.data[3 + i], "Subject: Bem-vindo, Rui\r\n"));
    }
}

/* A locale value in another case (pt-br) is still named in the locale's words. */
static void a_locale_value_is_named_whatever_its_case(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_UPDATE, 600);
    c.has_before = c.has_after = true;
    image(&c.before, "ana@example.com", "Ana", "en");
    image(&c.after, "ana@example.com", "Ana", "pt-br");
    snprintf(c.after.locale, sizeof c.after.locale, "pt-br");
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(fx->sender.n_sent, 1);
    /* the fake profile_changed.subject lists the changes (the bodies are base64) */
    assert_non_null(strstr(fx->sender.data[0], "Subject: Language: en -> Portuguese (Brazil)\r\n"));
}

/* A template that names a variable nobody has (a typo) is an error, not a blank: the
 * start-up self-check refuses it, and a send would not go out with the gap. */
static void a_typo_in_a_variable_name_is_an_error(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    char err[256];
    static const char *const locales[] = {"en", "pt-BR"};

    g_typo = true;
    int checked = notifier_selfcheck(fx->n, locales, 2, err, sizeof err);
    struct user_change c = change(CHANGE_CREATE, 700);
    c.has_after = true;
    image(&c.after, "ana@example.com", "Ana", "en");
    enum notify_outcome o = notifier_handle(fx->n, &c, &rep);
    g_typo = false;
    assert_int_equal(checked, -1);
    assert_non_null(strstr(err, "unknown variable {{ful_name}}"));
    assert_int_equal(o, NOTIFY_RETRY);
    assert_int_equal(fx->sender.n_sent, 0);
}

/* The self-check refuses a locale with only some files of a kind (pt-BR here has
 * account_deleted.subject alone) and a locale without its fields file. */
static void the_selfcheck_refuses_half_a_kind_and_no_fields(void **state)
{
    struct fixture *fx = *state;
    char err[256];
    static const char *const en[] = {"en"};
    static const char *const with_pt[] = {"en", "pt-BR"};

    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), 0);
    assert_int_equal(notifier_selfcheck(fx->n, with_pt, 2, err, sizeof err), -1);
    assert_non_null(strstr(err, "locale pt-BR has no fields file"));
    g_pt_fields = true;
    int half = notifier_selfcheck(fx->n, with_pt, 2, err, sizeof err);
    g_pt_fields = false;
    assert_int_equal(half, -1);
    assert_non_null(strstr(err, "locale pt-BR has only 1 of account_deleted.subject"));
}

/* The old address may no longer be the owner's: its notice names the new address masked
 * and which fields changed, never their values. */
static void the_old_address_notice_masks_the_new_one(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    static const char *const cases[][2] = {
        {"new@example.com", "n***@example.com"},
        {"n@example.com", "n***@example.com"},
        {"\xc3\xa9lan@exemple.fr", "\xc3\xa9***@exemple.fr"},
        {"odd\"@\"local@example.com", "o***@example.com"},
        {"no-at-sign", "n***"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct user_change c = email_change(1000 + (long)i);
        snprintf(c.after.email, sizeof c.after.email, "%s", cases[i][0]);
        snprintf(c.after.full_name, sizeof c.after.full_name, "Ana Secret");
        snprintf(c.after.address, sizeof c.after.address, "1 Hidden Road");
        size_t first = fx->sender.n_sent;
        /* The new address may be undeliverable (a failure for the DLQ): the old one is not. */
        (void)notifier_handle(fx->n, &c, &rep);
        assert_true(fx->sender.n_sent > first);
        assert_string_equal(fx->sender.to[first], "old@example.com");
        char *text = text_part(fx->sender.data[first]);
        char want[128];
        snprintf(want, sizeof want, "now %s: Email;Full name;address;", cases[i][1]);
        assert_string_equal(text, want);
        assert_null(strstr(fx->sender.data[first], cases[i][0]));
        free(text);
    }
}

/* ... and a template that would show them anyway is refused at start. */
static void the_selfcheck_refuses_values_in_the_old_address_notice(void **state)
{
    struct fixture *fx = *state;
    char err[256] = "";
    static const char *const en[] = {"en"};
    static const char *const leaks[][2] = {
        {"now {{new_email}}", "{{new_email}}"},
        {"{{#changes}}{{label}}: {{old}}{{/changes}}", "{{old}}"},
        {"{{#changes}}{{label}}: {{new}}{{/changes}}", "{{new}}"},
    };

    for (size_t i = 0; i < sizeof leaks / sizeof leaks[0]; i++) {
        g_en_override[0] = "email_changed_old.txt";
        g_en_override[1] = leaks[i][0];
        assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), -1);
        if (strstr(err, "email_changed_old") == NULL || strstr(err, leaks[i][1]) == NULL)
            fail_msg("%s: %s", leaks[i][0], err);
    }
    g_en_override[0] = g_en_override[1] = NULL;
    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), 0);
}

/* The password notice also goes to the old address when the email changed with it (a
 * takeover): its template may not show the new address, and the start-up check says so. */
static void the_selfcheck_refuses_the_new_address_in_the_password_notice(void **state)
{
    struct fixture *fx = *state;
    char err[256] = "";
    static const char *const en[] = {"en"};
    static const char *const files[] = {"password_changed.subject", "password_changed.txt",
                                        "password_changed.html"};

    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        g_en_override[0] = files[i];
        g_en_override[1] = "changed for {{new_email}}";
        assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), -1);
        if (strstr(err, files[i]) == NULL || strstr(err, "{{new_email}}") == NULL)
            fail_msg("%s: %s", files[i], err);
        /* what it may show: the recipient, the masked address, the address before */
        g_en_override[1] = "{{email}} {{new_email_masked}} {{old_email}}";
        assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), 0);
    }
    g_en_override[0] = g_en_override[1] = NULL;
}

/* A label longer than its place is cut at a character boundary, never inside one. */
static void a_long_label_is_cut_between_characters(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    static char fields[512];
    char a94[95], b158[159], want[400];
    struct user_change c = change(CHANGE_UPDATE, 1100);

    memset(a94, 'a', 94);
    a94[94] = '\0';
    memset(b158, 'b', 158);
    b158[158] = '\0';
    /* 94 + 2 + 2 bytes for a 96-byte place, 158 + 2 for a 160-byte one */
    snprintf(fields, sizeof fields, "full_name=%s\xc3\xa9\xc3\xa9\nstatus.CONFIRMED=%s\xc3\xbc\n",
             a94, b158);
    g_en_fields = fields;
    c.has_before = c.has_after = true;
    image(&c.before, "ana@example.com", "Ana", "en");
    image(&c.after, "ana@example.com", "Ana Lima", "en");
    snprintf(c.after.status, sizeof c.after.status, "CONFIRMED");
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(fx->sender.n_sent, 1);
    char *text = text_part(fx->sender.data[0]);
    assert_true(utf8_valid(text));
    snprintf(want, sizeof want, "%s: Ana -> Ana Lima\r\nstatus: UNCONFIRMED -> %s\r\n", a94, b158);
    assert_string_equal(text, want);
    free(text);
}

/* The start-up check refuses such a label instead, naming the file and the key. */
static void the_selfcheck_refuses_a_label_too_long_for_its_place(void **state)
{
    struct fixture *fx = *state;
    char err[256] = "";
    static char fields[512];
    static const char *const en[] = {"en"};
    char a[200];

    g_en_fields = fields;
    memset(a, 'a', sizeof a);
    snprintf(fields, sizeof fields, "email=Email\nfull_name=%.95s\nnot_set=-\nstatus.X=%.159s\n", a,
             a);
    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), 0); /* just fits */
    snprintf(fields, sizeof fields, "email=Email\nfull_name=%.96s\n", a);
    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), -1);
    if (strstr(err, "en/fields") == NULL || strstr(err, "full_name") == NULL)
        fail_msg("%s", err);
    snprintf(fields, sizeof fields, "not_set=%.96s\n", a);
    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), -1);
    assert_non_null(strstr(err, "not_set"));
    snprintf(fields, sizeof fields, "full_name=Name\r\nlocale.pt-BR=%.160s\r\n", a);
    assert_int_equal(notifier_selfcheck(fx->n, en, 1, err, sizeof err), -1);
    if (strstr(err, "en/fields") == NULL || strstr(err, "locale.pt-BR") == NULL)
        fail_msg("%s", err);
    assert_null(strchr(err, '\n'));
}

/* POSIX spells locales with '_' (pt_BR): read as pt-BR, not as an unknown locale. */
static void an_underscore_locale_reads_as_a_hyphen(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    static const char *const locales[] = {"pt_BR", "pt_br", "PT_BR", "pt_PT"};

    for (size_t i = 0; i < sizeof locales / sizeof locales[0]; i++) {
        struct user_change c = change(CHANGE_CREATE, 1200 + (long)i);
        c.has_after = true;
        image(&c.after, "ana@example.com", "Ana", locales[i]);
        assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
        if (strstr(fx->sender.data[i], "Subject: Bem-vindo, Ana\r\n") == NULL)
            fail_msg("%s was not read as pt-BR", locales[i]);
    }
    /* A locale value with '_' is named in the locale's words too. */
    struct user_change u = change(CHANGE_UPDATE, 1300);
    u.has_before = u.has_after = true;
    image(&u.before, "ana@example.com", "Ana", "en");
    image(&u.after, "ana@example.com", "Ana", "pt_BR");
    assert_int_equal(notifier_handle(fx->n, &u, &rep), NOTIFY_DONE);
    assert_non_null(strstr(fx->sender.data[4], "Subject: Language: en -> Portuguese (Brazil)\r\n"));
}

static void transient_failure_retries_and_sends_nothing_twice(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = email_change(500);
    c.after.version = 2;

    /* Email change: two emails; the second send fails transiently. */
    fx->sender.script[1] = MAIL_TRANSIENT;
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_RETRY);
    assert_int_equal(rep.sent, 1);
    assert_int_equal(rep.transient, 1);
    assert_non_null(strstr(rep.reason, "451"));
    assert_int_equal(fx->sender.n_sent, 1);

    /* The retry sends only the one that is missing. */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(rep.deduped, 1);
    assert_int_equal(rep.sent, 1);
    assert_int_equal(fx->sender.n_sent, 2);
    assert_string_not_equal(fx->sender.to[0], fx->sender.to[1]);
}

static void permanent_failure_reports_for_the_dlq_and_moves_on(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = email_change(600);

    fx->sender.script[0] = MAIL_PERMANENT;
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_FAILED);
    assert_int_equal(rep.failed, 1);
    assert_int_equal(rep.sent, 1);
    assert_non_null(strstr(rep.reason, "550"));

    /* Redelivered: the failed one still sends the event to the DLQ, nothing is mailed. */
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_FAILED);
    assert_int_equal(rep.failed, 1);
    assert_int_equal(rep.deduped, 1);
    assert_int_equal(fx->sender.calls, 2);
}

static void undeliverable_recipient_is_a_permanent_failure(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_CREATE, 700);
    c.has_after = true;
    image(&c.after, "ana@example.com\r\nBcc: victim@example.com", "Ana", "en");

    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_FAILED);
    assert_int_equal(fx->sender.calls, 0);
}

static void delivery_log_down_is_a_retry_without_sending(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change c = change(CHANGE_CREATE, 800);
    c.has_after = true;
    image(&c.after, "ana@example.com", "Ana", "en");

    fx->log.down = true;
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_RETRY);
    assert_int_equal(fx->sender.calls, 0);
    fx->log.down = false;
    assert_int_equal(notifier_handle(fx->n, &c, &rep), NOTIFY_DONE);
    assert_int_equal(fx->sender.n_sent, 1);
}

static void snapshots_truncates_and_invisible_updates_send_nothing(void **state)
{
    struct fixture *fx = *state;
    struct notify_report rep;
    struct user_change r = change(CHANGE_READ, 900);
    r.has_after = true;
    image(&r.after, "ana@example.com", "Ana", "en");
    assert_int_equal(notifier_handle(fx->n, &r, &rep), NOTIFY_DONE);

    struct user_change t = change(CHANGE_TRUNCATE, 901);
    assert_int_equal(notifier_handle(fx->n, &t, &rep), NOTIFY_DONE);

    struct user_change u = change(CHANGE_UPDATE, 902);
    u.has_before = u.has_after = true;
    image(&u.before, "ana@example.com", "Ana", "en");
    image(&u.after, "ana@example.com", "Ana", "en");
    u.after.version = 2;
    u.after.updated_at_us = 42;
    assert_int_equal(notifier_handle(fx->n, &u, &rep), NOTIFY_DONE);
    assert_int_equal(fx->sender.calls, 0);
    assert_int_equal(fx->log.n, 0);
}

static void retry_delays_grow_with_jitter_and_a_cap(void **state)
{
    (void)state;
    assert_int_equal(retry_delay_ms(0, 500, 60000, 0), 250);
    assert_int_equal(retry_delay_ms(0, 500, 60000, 250), 500);
    assert_int_equal(retry_delay_ms(3, 500, 60000, 0), 2000);
    assert_int_equal(retry_delay_ms(40, 500, 60000, 0), 30000);
    assert_int_equal(retry_delay_ms(40, 500, 60000, UINT32_MAX), 30000 + UINT32_MAX % 30001);
    for (uint32_t r = 0; r < 100000; r += 997) {
        uint32_t d = retry_delay_ms(5, 500, 60000, r);
        assert_true(d >= 8000 && d <= 16000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(welcome_is_sent_once_even_when_redelivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(tickets_tell_when_the_sent_marks_are_durable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(each_send_waits_for_the_marks_before_it, setup, teardown),
        cmocka_unit_test_setup_teardown(prefetch_asks_for_every_email_of_the_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_locale_value_is_named_whatever_its_case, setup, teardown),
        cmocka_unit_test_setup_teardown(a_typo_in_a_variable_name_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(the_selfcheck_refuses_half_a_kind_and_no_fields, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(locale_falls_back_by_case_language_and_default, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(the_old_address_notice_masks_the_new_one, setup, teardown),
        cmocka_unit_test_setup_teardown(
            the_selfcheck_refuses_the_new_address_in_the_password_notice, setup, teardown),
        cmocka_unit_test_setup_teardown(the_selfcheck_refuses_values_in_the_old_address_notice,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_long_label_is_cut_between_characters, setup, teardown),
        cmocka_unit_test_setup_teardown(the_selfcheck_refuses_a_label_too_long_for_its_place, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_underscore_locale_reads_as_a_hyphen, setup, teardown),
        cmocka_unit_test_setup_teardown(transient_failure_retries_and_sends_nothing_twice, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(permanent_failure_reports_for_the_dlq_and_moves_on, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(undeliverable_recipient_is_a_permanent_failure, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(delivery_log_down_is_a_retry_without_sending, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(snapshots_truncates_and_invisible_updates_send_nothing,
                                        setup, teardown),
        cmocka_unit_test(retry_delays_grow_with_jitter_and_a_cap),
    };
    return cmocka_run_group_tests_name("notifier", tests, NULL, NULL);
}
