/* notify_rules: which emails a user change deserves (DESIGN.md section 6). */
#include "interactors/notify_rules.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Copies src into dst[dstlen], truncating; dst is always terminated. */
static void copy_str(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);

    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static bool ascii_case_equal(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char cb = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (ca != cb)
            return false;
    }
    return *a == *b;
}

/* The display text of field f of image u into out[outlen]; empty = not set. */
static void field_display(const struct user_image *u, enum user_field_id f, char *out,
                          size_t outlen)
{
    out[0] = '\0';
    switch (f) {
    case UF_USERNAME:
        copy_str(out, outlen, u->username);
        break;
    case UF_EMAIL:
        copy_str(out, outlen, u->email);
        break;
    case UF_FULL_NAME:
        copy_str(out, outlen, u->full_name);
        break;
    case UF_ADDRESS: {
        /* Multi-line: CRLF and LF line ends read the same to a person, so they compare
         * the same (no email for a change of line ends only). */
        size_t k = 0;
        for (const char *p = u->address; *p != '\0' && k + 1 < outlen; p++) {
            if (!(p[0] == '\r' && p[1] == '\n'))
                out[k++] = *p;
        }
        out[k] = '\0';
        break;
    }
    case UF_DATE_OF_BIRTH:
        if (u->has_date_of_birth) {
            char d[16];
            user_change_format_date(u->date_of_birth_days, d);
            copy_str(out, outlen, d);
        }
        break;
    case UF_STATUS:
        copy_str(out, outlen, u->status);
        break;
    case UF_LOCALE:
        copy_str(out, outlen, u->locale);
        break;
    case UF_PASSWORD_CHANGED_AT:
        /* Never listed (a password change has its own email); the raw instant is enough
         * for comparisons and logs. */
        if (u->has_password_changed_at)
            snprintf(out, outlen, "%" PRId64, u->password_changed_at_us);
        break;
    }
}

static bool password_moved(const struct user_image *a, const struct user_image *b)
{
    if (a->has_password_changed_at != b->has_password_changed_at)
        return true;
    return a->has_password_changed_at && a->password_changed_at_us != b->password_changed_at_us;
}

/* The same address in another case is the same mailbox in practice: not an email change
 * (no security notice), but still a visible change listed in a profile email. */
static bool email_moved(const struct user_image *a, const struct user_image *b)
{
    return !ascii_case_equal(a->email, b->email);
}

/* Visible changes other than password_changed_at, in the order emails list them. */
static size_t visible_changes(const struct user_image *before, const struct user_image *after,
                              struct field_change changes[UF_COUNT])
{
    size_t n = 0;

    for (int f = UF_USERNAME; f < UF_COUNT; f++) {
        struct field_change *fc = &changes[n];
        if (f == UF_PASSWORD_CHANGED_AT)
            continue;
        field_display(before, (enum user_field_id)f, fc->old_value, sizeof fc->old_value);
        field_display(after, (enum user_field_id)f, fc->new_value, sizeof fc->new_value);
        if (strcmp(fc->old_value, fc->new_value) != 0) {
            fc->field = (enum user_field_id)f;
            n++;
        }
    }
    return n;
}

/* 64-bit FNV-1a: a stable stand-in for a position key too long for the dedupe key. */
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Fills n->recipient (as stored: a mailbox's local part may be case-sensitive), locale,
 * user and dedupe key (which has the address lower-cased: one key per person whatever the
 * case of a re-emission). */
static void notification_init(struct notification *n, enum notification_kind kind,
                              const char *recipient, const struct user_image *user,
                              const struct user_change *c)
{
    char pos[400], lower[UC_EMAIL_MAX + 1];
    int len;

    memset(n, 0, sizeof *n);
    n->kind = kind;
    copy_str(n->recipient, sizeof n->recipient, recipient);
    copy_str(lower, sizeof lower, recipient);
    for (char *p = lower; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    copy_str(n->locale, sizeof n->locale, user->locale[0] != '\0' ? user->locale : "en");
    n->user = *user;

    user_change_position_key(c, pos, sizeof pos);
    len = snprintf(n->dedupe_key, sizeof n->dedupe_key, "%s:%s:%s", pos,
                   notification_kind_name(kind), lower);
    if (len < 0 || (size_t)len >= sizeof n->dedupe_key) {
        /* Only absurdly long binlog file names or GTID sets get here: a hash keeps the key
         * deterministic and distinct per kind and recipient instead of truncating it. */
        snprintf(n->dedupe_key, sizeof n->dedupe_key, "h%016" PRIx64 ":%s:%s", fnv1a64(pos),
                 notification_kind_name(kind), lower);
    }
}

size_t notify_rules(const struct user_change *c, struct notification out[NOTIFY_MAX_PER_CHANGE])
{
    size_t n = 0;

    switch (c->op) {
    case CHANGE_CREATE:
        if (c->has_after && c->after.email[0] != '\0')
            notification_init(&out[n++], NOTIFY_WELCOME, c->after.email, &c->after, c);
        break;
    case CHANGE_DELETE:
        if (c->has_before && c->before.email[0] != '\0')
            notification_init(&out[n++], NOTIFY_ACCOUNT_DELETED, c->before.email, &c->before, c);
        break;
    case CHANGE_UPDATE: {
        /* Without both images there is nothing to compare (binlog_row_image=FULL gives
         * both; the envelope parser rejects an update without them). */
        if (!c->has_before || !c->has_after)
            break;
        struct field_change changes[UF_COUNT];
        size_t n_changes = visible_changes(&c->before, &c->after, changes);
        bool email = email_moved(&c->before, &c->after);
        bool password = password_moved(&c->before, &c->after);

        if (email) {
            size_t first = n;
            /* The notice to the old address is for the owner as they were: their name and
             * language before the change (an intruder may change the locale too). */
            if (c->before.email[0] != '\0')
                notification_init(&out[n++], NOTIFY_EMAIL_CHANGED_OLD, c->before.email, &c->before,
                                  c);
            if (c->after.email[0] != '\0')
                notification_init(&out[n++], NOTIFY_EMAIL_CHANGED_NEW, c->after.email, &c->after,
                                  c);
            for (size_t i = first; i < n; i++) {
                out[i].n_changes = n_changes;
                memcpy(out[i].changes, changes, n_changes * sizeof changes[0]);
                /* The old mailbox may not be the owner's any more: it hears which fields
                 * changed, not their values (the new address least of all). */
                for (size_t k = 0; out[i].kind == NOTIFY_EMAIL_CHANGED_OLD && k < n_changes; k++)
                    out[i].changes[k].old_value[0] = out[i].changes[k].new_value[0] = '\0';
            }
        } else if (n_changes > 0 && c->after.email[0] != '\0') {
            notification_init(&out[n], NOTIFY_PROFILE_CHANGED, c->after.email, &c->after, c);
            out[n].n_changes = n_changes;
            memcpy(out[n].changes, changes, n_changes * sizeof changes[0]);
            n++;
        }
        if (password && c->after.email[0] != '\0')
            notification_init(&out[n++], NOTIFY_PASSWORD_CHANGED, c->after.email, &c->after, c);
        /* Email and password changed at once is how an account is taken over: the old
         * address, the one the owner still reads, hears of the password too. */
        if (password && email && c->before.email[0] != '\0')
            notification_init(&out[n++], NOTIFY_PASSWORD_CHANGED, c->before.email, &c->before, c);
        break;
    }
    case CHANGE_READ:
    case CHANGE_TRUNCATE:
        break;
    }
    return n;
}
