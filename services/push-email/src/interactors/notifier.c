/* notifier: turns one user change into sent emails, at most once per person.
 *
 * For each email a change deserves: the delivery log is asked first (sent or finally
 * failed before: skip), then the email is rendered from the locale's templates, sent, and
 * its outcome recorded. A transient failure stops the event: the caller retries it later,
 * and the emails already sent are then skipped by the log. The one window left is a crash
 * between the SMTP server accepting a message and the log recording it: the email is then
 * sent again on retry, with the same Message-ID, which lets mail systems drop the copy.
 *
 * The log may write behind (the MariaDB adapter always does: the mark's upsert is sent at
 * once and committed while the next email is already on its way). Two rules keep that
 * safe:
 *   - every send passes a gate (struct mail_gate) that waits, before the end of the
 *     message's data, until every mark made so far is durable. So the mark of email N is
 *     committed before email N+1 can be accepted: at any time at most ONE accepted email
 *     lacks a committed mark, the same window as a mark written before the next send, but
 *     the commit overlaps the next email's MAIL FROM, RCPT TO and DATA round trips. When
 *     the marks do not become durable within NOTIFIER_GATE_MS (the database is away), the
 *     send is abandoned before the server accepts it, and the event is retried later;
 *   - the caller stores an event's offset only once notifier_durable() has reached the
 *     notifier_ticket() it read after the event, so a crash loses no mark that an offset
 *     relies on. */
#include "interactors/notifier.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "entities/email_message.h"
#include "entities/notification.h"
#include "entities/template.h"
#include "interactors/notify_rules.h"

#define NOTIFIER_LOCALES_MAX 32
#define LOCALE_LEN           40
#define LOCALE_CANDIDATES    5
/* Room for a label from a locale's "fields" file: a field's name or not_set, and a status
 * or locale value's words. The start-up check refuses a longer one (fields_fit). */
#define LABEL_LEN       96
#define VALUE_LABEL_LEN 160

struct notifier {
    /* Scratch for the emails of the change in hand (about 140 KiB): allocated once, as a
     * fresh allocation per event costs an mmap, page faults and a munmap. One notifier
     * serves one thread. */
    struct notification *notes;
    /* notifier_prefetch's dedupe keys (NOTIFIER_PREFETCH_MAX * NOTIFY_MAX_PER_CHANGE). */
    char (*prefetch_keys)[sizeof((struct notification *)0)->dedupe_key];
    const char **prefetch_ptrs;
    struct mail_sender sender;
    struct delivery_log log;
    struct template_store templates;
    struct notify_env env;
    struct notifier_config cfg;
    char known[NOTIFIER_LOCALES_MAX][LOCALE_LEN]; /* cfg.locales, copied */
    size_t n_known;
};

struct notifier *notifier_new(struct mail_sender sender, struct delivery_log log,
                              struct template_store templates, struct notify_env env,
                              const struct notifier_config *cfg)
{
    struct notifier *n = calloc(1, sizeof *n);

    if (n == NULL)
        return NULL;
    n->notes = calloc(NOTIFY_MAX_PER_CHANGE, sizeof *n->notes);
    n->prefetch_keys =
        calloc(NOTIFIER_PREFETCH_MAX * NOTIFY_MAX_PER_CHANGE, sizeof *n->prefetch_keys);
    n->prefetch_ptrs =
        calloc(NOTIFIER_PREFETCH_MAX * NOTIFY_MAX_PER_CHANGE, sizeof *n->prefetch_ptrs);
    if (n->notes == NULL || n->prefetch_keys == NULL || n->prefetch_ptrs == NULL) {
        notifier_free(n);
        return NULL;
    }
    n->sender = sender;
    n->log = log;
    n->templates = templates;
    n->env = env;
    n->cfg = *cfg;
    if (n->cfg.default_locale == NULL)
        n->cfg.default_locale = "en";
    for (size_t i = 0; cfg->locales != NULL && i < cfg->n_locales; i++) {
        if (n->n_known < NOTIFIER_LOCALES_MAX && strlen(cfg->locales[i]) < LOCALE_LEN)
            snprintf(n->known[n->n_known++], LOCALE_LEN, "%s", cfg->locales[i]);
    }
    n->cfg.locales = NULL; /* not kept: copied into known */
    n->cfg.n_locales = 0;
    return n;
}

/* The gate of every send: the marks made so far are durable (see the top). */
static int marks_durable(void *ctx)
{
    struct notifier *n = ctx;

    if (n->log.ops->flush == NULL)
        return 0;
    return n->log.ops->flush(n->log.self, NOTIFIER_GATE_MS) == DELIVERY_LOG_OK ? 0 : -1;
}

void notifier_free(struct notifier *n)
{
    if (n == NULL)
        return;
    free(n->prefetch_ptrs);
    free(n->prefetch_keys);
    free(n->notes);
    free(n);
}

/* locale in canonical form into canon (LOCALE_LEN): '-' between parts, '_' read as one
 * (pt_BR, as POSIX writes it), language lower case, a 2-letter region upper case, a
 * 4-letter script title case (pt-br -> pt-BR, zh_hant_tw -> zh-Hant-TW). False when it
 * does not fit. */
static bool locale_canonical(const char *locale, char canon[LOCALE_LEN])
{
    size_t len = strlen(locale);
    size_t part = 0, start = 0;

    if (len >= LOCALE_LEN)
        return false;
    for (size_t i = 0; i <= len; i++) {
        if (locale[i] != '-' && locale[i] != '_' && locale[i] != '\0')
            continue;
        size_t plen = i - start;
        for (size_t k = start; k < i; k++) {
            char ch = locale[k];
            bool upper = part > 0 && plen == 2;
            bool title = part > 0 && plen == 4 && k == start;
            if ((upper || title) && ch >= 'a' && ch <= 'z')
                ch = (char)(ch - 'a' + 'A');
            else if (!upper && !title && ch >= 'A' && ch <= 'Z')
                ch = (char)(ch - 'A' + 'a');
            canon[k] = ch;
        }
        canon[i] = locale[i] == '_' ? '-' : locale[i];
        part++;
        start = i + 1;
    }
    return true;
}

/* The locales to try for a person's locale, best first: as given, canonical form
 * (pt-br, pt_BR -> pt-BR), the language alone (pt), the first known locale of that language
 * (pt-PT -> pt-BR), then the default. */
static size_t locale_candidates(const struct notifier *n, const char *locale,
                                char out[LOCALE_CANDIDATES][LOCALE_LEN])
{
    size_t k = 0;
    char canon[LOCALE_LEN];

    if (locale[0] != '\0' && locale_canonical(locale, canon)) {
        snprintf(out[k++], LOCALE_LEN, "%s", locale);
        if (strcmp(canon, out[0]) != 0)
            snprintf(out[k++], LOCALE_LEN, "%s", canon);
        size_t lang = strcspn(canon, "-");
        if (canon[lang] != '\0')
            snprintf(out[k++], LOCALE_LEN, "%.*s", (int)lang, canon);
        for (size_t i = 0; i < n->n_known; i++) {
            char known[LOCALE_LEN];
            if (locale_canonical(n->known[i], known) && strncmp(known, canon, lang) == 0 &&
                known[lang] == '-') {
                snprintf(out[k++], LOCALE_LEN, "%s", n->known[i]);
                break;
            }
        }
    }
    snprintf(out[k++], LOCALE_LEN, "%s", n->cfg.default_locale);
    return k;
}

/* The locale that has all three templates of kind (a locale lacking one of them falls
 * back as a whole, so that one email is in one language); NULL when not even the default
 * has them. */
static const char *pick_locale(struct notifier *n, const char *locale, const char *kind,
                               char cands[LOCALE_CANDIDATES][LOCALE_LEN])
{
    static const char *const suffix[3] = {"subject", "txt", "html"};
    char name[64];
    size_t nc = locale_candidates(n, locale, cands);

    for (size_t i = 0; i < nc; i++) {
        size_t have = 0;
        for (size_t s = 0; s < 3; s++) {
            snprintf(name, sizeof name, "%s.%s", kind, suffix[s]);
            have += n->templates.ops->get(n->templates.self, cands[i], name) != NULL;
        }
        if (have == 3)
            return cands[i];
    }
    return NULL;
}

/* What the templates of one notification can refer to. */
struct render_ctx {
    const struct notification *note;
    const char *labels; /* the locale's "fields" file: name=Label lines */
    char label_buf[UF_COUNT][LABEL_LEN];
    char not_set[LABEL_LEN];            /* how the locale says "no value" */
    char value_buf[2][VALUE_LABEL_LEN]; /* a status or locale value in the locale's words */
    const char *old_email;
    const char *new_email;
    char new_email_masked[UC_EMAIL_MAX + 8];
    char unknown[48];  /* the first name no template variable has (a typo): an error */
    char withheld[48]; /* the first name this email must not show (see var_get): an error */
};

/* The label of key in the locale's "fields" file into buf; the key itself when absent. A
 * label too long for buf (refused at start: fields_fit) is cut between characters. */
static const char *label(const char *labels, const char *key, char *buf, size_t buflen)
{
    size_t klen = strlen(key);

    snprintf(buf, buflen, "%s", key);
    for (const char *p = labels; p != NULL && *p;) {
        if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
            const char *v = p + klen + 1;
            size_t vlen = strcspn(v, "\r\n");
            if (vlen >= buflen) {
                vlen = buflen - 1;
                while (vlen > 0 && ((unsigned char)v[vlen] & 0xc0) == 0x80)
                    vlen--; /* v[vlen] continues a sequence: cut before its lead byte */
            }
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            break;
        }
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return buf;
}

/* The room a label of key needs in the render context. */
static size_t label_room(const char *key, size_t klen)
{
    if ((klen > 7 && strncmp(key, "status.", 7) == 0) ||
        (klen > 7 && strncmp(key, "locale.", 7) == 0))
        return VALUE_LABEL_LEN;
    return LABEL_LEN;
}

/* Every label of a "fields" file fits where it is copied, so none is ever cut; else -1 and
 * err names the file and the key. */
static int fields_fit(const char *labels, const char *locale, char *err, size_t errlen)
{
    for (const char *p = labels; p != NULL && *p != '\0';) {
        size_t line = strcspn(p, "\r\n");
        const char *eq = memchr(p, '=', line);
        if (eq != NULL) {
            size_t klen = (size_t)(eq - p), vlen = line - klen - 1;
            size_t room = label_room(p, klen);
            if (vlen >= room) {
                snprintf(err, errlen, "%s/fields: the label of %.*s is %zu bytes, at most %zu",
                         locale, (int)(klen < 60 ? klen : 60), p, vlen, room - 1);
                return -1;
            }
        }
        p += line;
        p += strspn(p, "\r\n");
    }
    return 0;
}

/* addr with its local part masked: the first character, "***", then "@" and the domain
 * (new@example.org -> n***@example.org), into out[outlen]. Tells the owner which address
 * it was without handing it to whoever reads the old mailbox now. */
static void mask_email(const char *addr, char *out, size_t outlen)
{
    const char *at = strrchr(addr, '@'); /* a quoted local part may hold '@': not a domain */
    size_t local = at != NULL ? (size_t)(at - addr) : strlen(addr);
    size_t first = 0;

    out[0] = '\0';
    if (addr[0] == '\0')
        return;
    if (local > 0) {
        unsigned char c = (unsigned char)addr[0];
        first = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        for (size_t i = 1; i < first; i++) {
            if (i >= local || ((unsigned char)addr[i] & 0xc0) != 0x80) {
                first = i; /* not UTF-8: stop before the odd byte */
                break;
            }
        }
    }
    snprintf(out, outlen, "%.*s***%s", (int)first, addr, at != NULL ? at : "");
}

/* The notice to the old address must not show what the new address, or anything changed,
 * now is: the variables that would are withheld (an error, like a typo, so that the
 * start-up check refuses a template that uses them). The password notice goes to the old
 * address too when the email changed with it (a takeover), from the same template: it
 * never shows the new address either. */
static bool withheld(struct render_ctx *rc, const char *name)
{
    bool old_notice = rc->note->kind == NOTIFY_EMAIL_CHANGED_OLD;

    if (!old_notice && rc->note->kind != NOTIFY_PASSWORD_CHANGED)
        return false;
    if (strcmp(name, "new_email") != 0 &&
        !(old_notice && (strcmp(name, "old") == 0 || strcmp(name, "new") == 0)))
        return false;
    if (rc->withheld[0] == '\0')
        snprintf(rc->withheld, sizeof rc->withheld, "%s", name);
    return true;
}

static const char *var_get(void *ctx, const char *name)
{
    struct render_ctx *rc = ctx;
    const struct user_image *u = &rc->note->user;

    if (withheld(rc, name))
        return "";
    if (strcmp(name, "username") == 0)
        return u->username;
    if (strcmp(name, "full_name") == 0)
        return u->full_name[0] ? u->full_name : u->username;
    if (strcmp(name, "email") == 0)
        return rc->note->recipient;
    if (strcmp(name, "old_email") == 0)
        return rc->old_email;
    if (strcmp(name, "new_email") == 0)
        return rc->new_email;
    if (strcmp(name, "new_email_masked") == 0)
        return rc->new_email_masked;
    if (strcmp(name, "app_name") == 0)
        return "cdc-notify";
    if (rc->unknown[0] == '\0')
        snprintf(rc->unknown, sizeof rc->unknown, "%s", name);
    return NULL;
}

/* A status or locale value as the locale's "fields" file words it ("status.CONFIRMED=...",
 * "locale.pt-BR=..."); the value itself when it has no entry, and for other fields. */
static const char *value_label(struct render_ctx *rc, const struct field_change *fc,
                               const char *value, char buf[VALUE_LABEL_LEN])
{
    char key[80];

    char canon[LOCALE_LEN];
    const char *lookup = value;
    if (fc->field == UF_LOCALE && locale_canonical(value, canon))
        lookup = canon; /* pt-br finds locale.pt-BR */
    if ((fc->field != UF_STATUS && fc->field != UF_LOCALE) ||
        (size_t)snprintf(key, sizeof key, "%s.%s", user_field_name(fc->field), lookup) >=
            sizeof key)
        return value;
    label(rc->labels, key, buf, VALUE_LABEL_LEN);
    return strcmp(buf, key) == 0 ? value : buf;
}

static size_t var_count(void *ctx, const char *section)
{
    struct render_ctx *rc = ctx;
    return strcmp(section, "changes") == 0 ? rc->note->n_changes : 0;
}

static const char *var_item(void *ctx, const char *section, size_t i, const char *name)
{
    struct render_ctx *rc = ctx;
    const struct field_change *fc;

    if (strcmp(section, "changes") != 0 || i >= rc->note->n_changes)
        return NULL;
    fc = &rc->note->changes[i];
    if (withheld(rc, name))
        return "";
    if (strcmp(name, "label") == 0)
        return label(rc->labels, user_field_name(fc->field), rc->label_buf[fc->field],
                     sizeof rc->label_buf[fc->field]);
    if (strcmp(name, "field") == 0)
        return user_field_name(fc->field);
    if (strcmp(name, "old") == 0)
        return fc->old_value[0] ? value_label(rc, fc, fc->old_value, rc->value_buf[0])
                                : rc->not_set;
    if (strcmp(name, "new") == 0)
        return fc->new_value[0] ? value_label(rc, fc, fc->new_value, rc->value_buf[1])
                                : rc->not_set;
    return NULL;
}

/* Renders and writes one notification as an RFC 5322 message into *data (malloc'd;
 * caller frees). Returns 0, or -1 with reason. */
static int compose(struct notifier *n, const struct notification *note, const struct user_change *c,
                   char **data, size_t *len, char *reason, size_t reason_len)
{
    const char *kind = notification_kind_name(note->kind);
    char cands[LOCALE_CANDIDATES][LOCALE_LEN];
    char name[64], err[128], message_id[160];
    char *parts[3] = {NULL, NULL, NULL};
    static const char *const suffix[3] = {"subject", "txt", "html"};
    static const enum template_escape esc[3] = {TEMPLATE_HEADER, TEMPLATE_TEXT, TEMPLATE_HTML};
    struct render_ctx rc;
    int rc_out = -1;

    const char *locale = pick_locale(n, note->locale, kind, cands);
    if (locale == NULL) {
        snprintf(reason, reason_len, "no %s template for locale %s nor %s", kind, note->locale,
                 n->cfg.default_locale);
        return -1;
    }
    memset(&rc, 0, sizeof rc);
    rc.note = note;
    rc.labels = n->templates.ops->get(n->templates.self, locale, "fields");
    if (rc.labels == NULL) /* labels from the default locale rather than field names */
        rc.labels = n->templates.ops->get(n->templates.self, n->cfg.default_locale, "fields");
    (void)label(rc.labels, "not_set", rc.not_set, sizeof rc.not_set);
    if (strcmp(rc.not_set, "not_set") == 0)
        snprintf(rc.not_set, sizeof rc.not_set, "-");
    rc.old_email = c->has_before ? c->before.email : "";
    rc.new_email = c->has_after ? c->after.email : "";
    mask_email(rc.new_email, rc.new_email_masked, sizeof rc.new_email_masked);
    struct template_vars vars = {var_get, var_count, var_item, &rc};

    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s.%s", kind, suffix[i]);
        const char *tmpl = n->templates.ops->get(n->templates.self, locale, name);
        if (tmpl == NULL) {
            snprintf(reason, reason_len, "template %.40s/%.60s is missing", locale, name);
            goto out;
        }
        if (template_render(tmpl, esc[i], &vars, &parts[i], err, sizeof err) != 0) {
            snprintf(reason, reason_len, "template %.40s/%.40s: %.60s", locale, name, err);
            goto out;
        }
        if (rc.unknown[0] != '\0') {
            /* Caught by the start-up self-check: a typo would otherwise go out as a gap. */
            snprintf(reason, reason_len, "template %.40s/%.40s: unknown variable {{%.48s}}", locale,
                     name, rc.unknown);
            goto out;
        }
        if (rc.withheld[0] != '\0') {
            snprintf(reason, reason_len,
                     "template %.40s/%.40s: {{%.48s}} is not shown to the old address", locale,
                     name, rc.withheld);
            goto out;
        }
    }
    n->env.ops->message_id(n->env.self, note->dedupe_key, message_id, sizeof message_id);
    struct email_message m = {
        .from_name = n->cfg.from_name,
        .from_addr = n->cfg.from_addr,
        .to_addr = note->recipient,
        .subject = parts[0],
        .text_body = parts[1],
        .html_body = parts[2],
        .message_id = message_id,
        .date_s = n->env.ops->now_s(n->env.self),
    };
    if (email_message_write(&m, data, len) != 0) {
        snprintf(reason, reason_len, "cannot write the message (invalid address or no memory)");
        goto out;
    }
    rc_out = 0;
out:
    for (size_t i = 0; i < 3; i++)
        free(parts[i]);
    return rc_out;
}

/* One sample notification of kind in locale, with every field changed. */
static void sample_note(struct notification *note, enum notification_kind kind, const char *locale)
{
    memset(note, 0, sizeof *note);
    note->kind = kind;
    snprintf(note->recipient, sizeof note->recipient, "person@example.org");
    snprintf(note->locale, sizeof note->locale, "%s", locale);
    snprintf(note->user.username, sizeof note->user.username, "sample");
    snprintf(note->user.full_name, sizeof note->user.full_name, "Sample Person");
    snprintf(note->user.email, sizeof note->user.email, "person@example.org");
    note->n_changes = UF_COUNT;
    for (size_t f = 0; f < UF_COUNT; f++) {
        note->changes[f].field = (enum user_field_id)f;
        snprintf(note->changes[f].old_value, sizeof note->changes[f].old_value, "old");
        snprintf(note->changes[f].new_value, sizeof note->changes[f].new_value, "new");
    }
    snprintf(note->dedupe_key, sizeof note->dedupe_key, "selfcheck:%s:%s",
             notification_kind_name(kind), locale);
}

int notifier_selfcheck(struct notifier *n, const char *const *locales, size_t count, char *err,
                       size_t errlen)
{
    static struct user_change c; /* about 8 KiB: not on the stack; start-up only */
    struct notification *note = &n->notes[0];
    char name[64], reason[256];

    memset(&c, 0, sizeof c);
    c.has_before = c.has_after = true;
    snprintf(c.before.email, sizeof c.before.email, "old@example.org");
    snprintf(c.after.email, sizeof c.after.email, "new@example.org");
    for (size_t i = 0; i <= count; i++) {
        const char *locale = i < count ? locales[i] : n->cfg.default_locale;
        const char *fields = n->templates.ops->get(n->templates.self, locale, "fields");
        if (fields == NULL) {
            snprintf(err, errlen, "%slocale %s has no fields file", i < count ? "" : "default ",
                     locale);
            return -1;
        }
        if (fields_fit(fields, locale, err, errlen) != 0)
            return -1;
        for (int k = 0; k < NOTIFY_KINDS; k++) {
            static const char *const suffix[3] = {"subject", "txt", "html"};
            const char *kind = notification_kind_name((enum notification_kind)k);
            size_t have = 0;
            for (size_t s = 0; s < 3; s++) {
                snprintf(name, sizeof name, "%s.%s", kind, suffix[s]);
                have += n->templates.ops->get(n->templates.self, locale, name) != NULL;
            }
            if (have == 0 && i < count)
                continue; /* this locale leaves this kind to its fallbacks */
            if (have < 3) {
                /* A half-translated kind is a mistake in the files: stop here rather than
                 * mail these people in the default language without a word. */
                snprintf(err, errlen, "locale %s has only %zu of %s.subject, %s.txt, %s.html",
                         locale, have, kind, kind, kind);
                return -1;
            }
            char *data = NULL;
            size_t len = 0;
            sample_note(note, (enum notification_kind)k, locale);
            if (compose(n, note, &c, &data, &len, reason, sizeof reason) != 0) {
                snprintf(err, errlen, "%s email in locale %s: %s", kind, locale, reason);
                return -1;
            }
            free(data);
        }
    }
    return 0;
}

enum notify_outcome notifier_handle(struct notifier *n, const struct user_change *c,
                                    struct notify_report *report)
{
    struct notification *notes = n->notes;
    enum notify_outcome outcome = NOTIFY_DONE;
    char err[256];

    memset(report, 0, sizeof *report);
    size_t count = notify_rules(c, notes);

    for (size_t i = 0; i < count; i++) {
        const struct notification *note = &notes[i];
        const char *kind = notification_kind_name(note->kind);
        enum delivery_state state;
        char *data = NULL;
        size_t len = 0;

        if (n->log.ops->begin(n->log.self, note->dedupe_key, kind, note->recipient, &state) !=
            DELIVERY_LOG_OK) {
            report->transient++;
            snprintf(report->reason, sizeof report->reason, "delivery log unavailable");
            outcome = NOTIFY_RETRY;
            goto out;
        }
        if (state == DELIVERY_SENT) {
            report->deduped++;
            continue;
        }
        if (state == DELIVERY_FAILED) {
            /* Failed for good on an earlier delivery of this event, which may have been
             * retried before reaching the DLQ: send it there again (at least once). */
            report->failed++;
            snprintf(report->reason, sizeof report->reason,
                     "%s: failed permanently on an earlier attempt", kind);
            if (outcome == NOTIFY_DONE)
                outcome = NOTIFY_FAILED;
            continue;
        }
        if (!email_address_valid(note->recipient)) {
            snprintf(err, sizeof err, "%s: recipient address is not deliverable", kind);
            goto permanent;
        }
        if (compose(n, note, c, &data, &len, err, sizeof err) != 0) {
            /* A missing or broken template is our configuration, not the person's: wait
             * for it to be fixed rather than drop the email. */
            report->transient++;
            snprintf(report->reason, sizeof report->reason, "%s", err);
            outcome = NOTIFY_RETRY;
            goto out;
        }
        const struct mail_gate gate = {marks_durable, n};
        enum mail_result r = n->sender.ops->send(n->sender.self, n->cfg.from_addr, note->recipient,
                                                 data, len, &gate, err, sizeof err);
        free(data);
        if (r == MAIL_SENT) {
            if (n->log.ops->mark_sent(n->log.self, note->dedupe_key, kind, note->recipient) !=
                DELIVERY_LOG_OK) {
                report->sent++;
                snprintf(report->reason, sizeof report->reason,
                         "sent, but the delivery log could not record it");
                outcome = NOTIFY_RETRY;
                goto out;
            }
            report->sent++;
            continue;
        }
        if (r == MAIL_TRANSIENT) {
            (void)n->log.ops->record_attempt(n->log.self, note->dedupe_key, kind, note->recipient,
                                             err);
            report->transient++;
            snprintf(report->reason, sizeof report->reason, "%s: %.200s", kind, err);
            outcome = NOTIFY_RETRY;
            goto out;
        }
    permanent:
        if (n->log.ops->mark_failed(n->log.self, note->dedupe_key, kind, note->recipient, err) !=
            DELIVERY_LOG_OK) {
            report->transient++;
            snprintf(report->reason, sizeof report->reason, "delivery log unavailable");
            outcome = NOTIFY_RETRY;
            goto out;
        }
        report->failed++;
        snprintf(report->reason, sizeof report->reason, "%s", err);
        outcome = NOTIFY_FAILED;
    }
out:
    return outcome;
}

uint64_t notifier_ticket(const struct notifier *n)
{
    return n->log.ops->written != NULL ? n->log.ops->written(n->log.self) : 0;
}

uint64_t notifier_durable(const struct notifier *n)
{
    return n->log.ops->durable != NULL ? n->log.ops->durable(n->log.self) : UINT64_MAX;
}

int notifier_flush(const struct notifier *n, int timeout_ms)
{
    if (n->log.ops->flush == NULL)
        return 0;
    return n->log.ops->flush(n->log.self, timeout_ms) == DELIVERY_LOG_OK ? 0 : -1;
}

void notifier_prefetch(struct notifier *n, const struct user_change *const *changes, size_t count)
{
    size_t keys = 0;

    if (n->log.ops->prefetch == NULL)
        return;
    for (size_t i = 0; i < count && i < NOTIFIER_PREFETCH_MAX; i++) {
        size_t k = notify_rules(changes[i], n->notes);
        for (size_t j = 0; j < k; j++) {
            memcpy(n->prefetch_keys[keys], n->notes[j].dedupe_key, sizeof n->prefetch_keys[keys]);
            n->prefetch_ptrs[keys] = n->prefetch_keys[keys];
            keys++;
        }
    }
    if (keys > 0)
        n->log.ops->prefetch(n->log.self, n->prefetch_ptrs, keys);
}
