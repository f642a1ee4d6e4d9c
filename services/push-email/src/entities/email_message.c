/* email_message: a rendered email written as RFC 5322 text with a MIME
 * multipart/alternative body (text and HTML, UTF-8, base64).
 *
 * Header safety: every header value is first stripped of C0 controls and DEL (and of C1 and
 * bidi controls) and made valid UTF-8, so no value can end a header line; values that are
 * not short printable ASCII go out as RFC 2047 encoded-words, one per folded line.
 *
 * SMTP dot-stuffing: no line written here starts with '.' (header lines start with a name
 * or a space, body lines are base64 or "--boundary"), and libcurl dot-stuffs uploads anyway. */
#include "entities/email_message.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINE_SOFT_MAX 78 /* RFC 5322 2.1.1 SHOULD; the MUST is 998 */
#define LINE_HARD_MAX 998
#define EW_MAX        75 /* RFC 2047 2: an encoded-word is at most 75 characters */
#define EW_OVERHEAD   12 /* "=?UTF-8?B?" + "?=" */
#define B64_LINE      76

struct buf {
    char *data; /* malloc'd; handed to the caller on success */
    size_t len, cap;
    bool failed;
};

static bool buf_put(struct buf *b, const void *s, size_t n)
{
    if (b->failed)
        return false;
    if (n > SIZE_MAX / 2 - b->len - 1) {
        b->failed = true;
        return false;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->failed = true;
            return false;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

static bool buf_str(struct buf *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

/* ---- addresses ---- */

/* RFC 5322 atext: what a dot-atom may hold besides dots. */
static bool is_atext(unsigned char ch)
{
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
        return true;
    return ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL;
}

/* A dot-atom: atext runs separated by single dots, no dot at either end. */
static bool dot_atom_valid(const char *s, size_t n, bool domain)
{
    bool prev_dot = true; /* a leading dot is as bad as a double one */

    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (prev_dot)
                return false;
            prev_dot = true;
            continue;
        }
        prev_dot = false;
        if (domain) {
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '-';
            if (!ok)
                return false;
            if (ch == '-' && (i == 0 || s[i - 1] == '.' || i + 1 == n || s[i + 1] == '.'))
                return false;
        } else if (!is_atext(ch)) {
            return false;
        }
    }
    return !prev_dot;
}

bool email_address_valid(const char *addr)
{
    const char *at;
    size_t len, local;

    if (addr == NULL)
        return false;
    len = strlen(addr);
    at = strchr(addr, '@');
    if (len > 254 || at == NULL || strchr(at + 1, '@') != NULL)
        return false;
    local = (size_t)(at - addr);
    if (local > 64)
        return false;
    /* atext excludes spaces, controls, <>, commas, quotes and every non-ASCII byte. */
    return dot_atom_valid(addr, local, false) && dot_atom_valid(at + 1, len - local - 1, true);
}

/* "<local@domain>" with dot-atom-ish sides (RFC 5322 msg-id, no obsolete forms). */
static bool message_id_valid(const char *id)
{
    size_t len = id != NULL ? strlen(id) : 0;
    const char *at;

    if (len < 5 || len > 250 || id[0] != '<' || id[len - 1] != '>')
        return false;
    at = memchr(id, '@', len);
    if (at == NULL)
        return false;
    return dot_atom_valid(id + 1, (size_t)(at - id - 1), false) &&
           dot_atom_valid(at + 1, (size_t)(id + len - 1 - at - 1), false);
}

/* ---- header values ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xbf; /* range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* no overlongs */
        if (c == 0xed)
            hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f; /* nothing past U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    }
    return len;
}

/* True for the UTF-8 sequence s[0..l) of a control that could make a header read other
 * than it is: C1 (U+0080..U+009F) and the bidi embeddings, overrides and isolates
 * (U+202A..U+202E, U+2066..U+2069). */
static bool unicode_control(const unsigned char *s, size_t l)
{
    if (l == 2)
        return s[0] == 0xc2 && s[1] <= 0x9f;
    if (l == 3 && s[0] == 0xe2)
        return (s[1] == 0x80 && s[2] >= 0xaa && s[2] <= 0xae) ||
               (s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9);
    return false;
}

/* A header value made safe: C0 controls, DEL, C1 and bidi controls removed, invalid UTF-8
 * replaced by U+FFFD. Returns a malloc'd string (caller frees), or NULL on OOM. */
static char *header_clean(const char *in)
{
    const unsigned char *s = (const unsigned char *)(in != NULL ? in : "");
    size_t n = strlen((const char *)s);
    struct buf b = {0};

    if (!buf_put(&b, "", 0))
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_seq(s + i, n - i);
        if (l == 0) {
            buf_put(&b, "\xef\xbf\xbd", 3);
            i++;
        } else {
            if (!(l == 1 && (s[i] < 0x20 || s[i] == 0x7f)) && !unicode_control(s + i, l))
                buf_put(&b, s + i, l);
            i += l;
        }
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

/* Printable ASCII that no reader could take for an encoded-word. */
static bool plain_ascii(const char *s)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < 0x20 || *p > 0x7e)
            return false;
    }
    return strstr(s, "=?") == NULL;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool b64_put(struct buf *b, const unsigned char *s, size_t n)
{
    char q[4];

    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        q[0] = B64[(v >> 18) & 63];
        q[1] = B64[(v >> 12) & 63];
        q[2] = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? B64[v & 63] : '=';
        if (!buf_put(b, q, 4))
            return false;
    }
    return true;
}

/* Writes s (clean UTF-8) as encoded-words: the first on the current line, which already
 * holds *used characters, each next one on a folded line (CRLF SP). Words hold whole UTF-8
 * sequences only, so each decodes on its own. Updates *used. */
static bool put_encoded_words(struct buf *b, const char *s, size_t *used)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    bool first = true;

    for (size_t i = 0; i < n;) {
        size_t budget = EW_MAX, max_raw, take = 0;
        if (!first) {
            buf_str(b, "\r\n ");
            *used = 1;
        }
        if (*used + budget > LINE_SOFT_MAX)
            budget = LINE_SOFT_MAX - *used;
        max_raw = (budget - EW_OVERHEAD) / 4 * 3;
        while (i + take < n) {
            size_t l = utf8_seq(u + i + take, n - i - take);
            if (l == 0)
                l = 1; /* not reached: the value is clean */
            if (take + l > max_raw)
                break;
            take += l;
        }
        buf_str(b, "=?UTF-8?B?");
        b64_put(b, u + i, take);
        buf_str(b, "?=");
        *used += EW_OVERHEAD + (take + 2) / 3 * 4;
        i += take;
        first = false;
    }
    return !b->failed;
}

/* Writes printable ASCII s folded at spaces so that every line stays under 78 columns;
 * false (nothing written when b is NULL) when a word is too long for that, and the caller
 * encodes the value instead. */
static bool put_folded_ascii(struct buf *b, const char *s, size_t *used)
{
    size_t n = strlen(s), start = 0;

    while (n - start + *used > LINE_SOFT_MAX) {
        size_t fold = 0; /* the last fold point that keeps this line short enough */
        for (size_t j = start + 1; j < n && j - start + *used <= LINE_SOFT_MAX; j++) {
            /* A fold point: a space followed by a non-space (no whitespace-only line). */
            if (s[j] == ' ' && s[j + 1] != ' ' && s[j + 1] != '\0')
                fold = j;
        }
        if (fold == 0)
            return false;
        if (b != NULL) {
            buf_put(b, s + start, fold - start);
            buf_str(b, "\r\n");
        }
        start = fold; /* the space stays: it starts the continuation line */
        *used = 0;
    }
    if (b != NULL)
        buf_put(b, s + start, n - start);
    *used += n - start;
    return b == NULL || !b->failed;
}

static bool put_subject(struct buf *b, const char *clean)
{
    size_t used = strlen("Subject: ");

    buf_str(b, "Subject: ");
    if (plain_ascii(clean)) {
        size_t dry = used;
        if (put_folded_ascii(NULL, clean, &dry))
            return put_folded_ascii(b, clean, &used) && buf_str(b, "\r\n");
    }
    return put_encoded_words(b, clean, &used) && buf_str(b, "\r\n");
}

/* The length of s as an RFC 5322 quoted-string: quotes, plus a backslash before " and \. */
static size_t quoted_len(const char *s)
{
    size_t n = 2;

    for (; *s != '\0'; s++)
        n += (*s == '"' || *s == '\\') ? 2 : 1;
    return n;
}

static bool put_from(struct buf *b, const char *clean_name, const char *addr)
{
    size_t used = strlen("From: ");

    buf_str(b, "From: ");
    if (clean_name[0] == '\0')
        return buf_str(b, addr) && buf_str(b, "\r\n");
    if (plain_ascii(clean_name) && used + quoted_len(clean_name) <= LINE_SOFT_MAX) {
        buf_str(b, "\"");
        for (const char *p = clean_name; *p != '\0'; p++) {
            if (*p == '"' || *p == '\\')
                buf_str(b, "\\");
            buf_put(b, p, 1);
        }
        buf_str(b, "\"");
        used += quoted_len(clean_name);
    } else {
        put_encoded_words(b, clean_name, &used);
    }
    /* The address on a line of its own when it does not fit: over 78 columns only for
     * addresses that long by themselves. */
    if (used + 3 + strlen(addr) > LINE_SOFT_MAX)
        buf_str(b, "\r\n");
    buf_str(b, " <");
    buf_str(b, addr);
    return buf_str(b, ">\r\n");
}

static bool put_date(struct buf *b, int64_t date_s)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)date_s;
    struct tm tm;
    char line[64];

    if ((int64_t)t != date_s || gmtime_r(&t, &tm) == NULL || tm.tm_year < 0 ||
        tm.tm_year > 9999 - 1900)
        return false;
    snprintf(line, sizeof line, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday],
             tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    return buf_str(b, line);
}

/* ---- body ---- */

/* Text in canonical form (RFC 2045 6.8: line breaks as CRLF before base64): CRLF, lone
 * CR and lone LF all become CRLF. Returns a malloc'd buffer (caller frees), NULL on OOM. */
static char *crlf_canonical(const char *s, size_t *out_len)
{
    struct buf b = {0};

    if (!buf_put(&b, "", 0))
        return NULL;
    for (size_t i = 0; s[i] != '\0'; i++) {
        if (s[i] == '\r' || s[i] == '\n') {
            buf_put(&b, "\r\n", 2);
            if (s[i] == '\r' && s[i + 1] == '\n')
                i++;
        } else {
            buf_put(&b, s + i, 1);
        }
    }
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    *out_len = b.len;
    return b.data;
}

static bool put_part(struct buf *b, const char *boundary, const char *type, const char *body)
{
    size_t n = 0;
    char *canon = crlf_canonical(body != NULL ? body : "", &n);
    bool ok = false;

    if (canon == NULL)
        goto out;
    buf_str(b, "--");
    buf_str(b, boundary);
    buf_str(b, "\r\nContent-Type: ");
    buf_str(b, type);
    buf_str(b, "; charset=UTF-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    if (n == 0)
        buf_str(b, "\r\n"); /* keep the part's header block and the delimiter apart */
    for (size_t i = 0; i < n; i += B64_LINE / 4 * 3) {
        size_t chunk = n - i < B64_LINE / 4 * 3 ? n - i : B64_LINE / 4 * 3;
        b64_put(b, (const unsigned char *)canon + i, chunk);
        buf_str(b, "\r\n");
    }
    ok = !b->failed;
out:
    free(canon);
    return ok;
}

/* A boundary that occurs in neither body. It holds '_' and '=', which base64 never puts
 * next to each other (and '_' never), so it cannot occur in the encoded parts either; the
 * check against the raw bodies is the belt to those braces. */
static void make_boundary(const struct email_message *m, char *out, size_t outlen)
{
    unsigned long long h = 14695981039346656037ULL;

    for (const char *p = m->message_id; *p != '\0'; p++) {
        h ^= (unsigned char)*p;
        h *= 1099511628211ULL;
    }
    for (unsigned long long k = 0;; k++) {
        snprintf(out, outlen, "=_cdcnotify_%016llx_%llu", h, k);
        if ((m->text_body == NULL || strstr(m->text_body, out) == NULL) &&
            (m->html_body == NULL || strstr(m->html_body, out) == NULL))
            return;
    }
}

int email_message_write(const struct email_message *m, char **out, size_t *len)
{
    struct buf b = {0};
    char *subject = NULL, *name = NULL;
    char boundary[64];
    int rc = -1;

    *out = NULL;
    *len = 0;
    if (!email_address_valid(m->from_addr) || !email_address_valid(m->to_addr) ||
        !message_id_valid(m->message_id))
        goto out;
    subject = header_clean(m->subject);
    name = header_clean(m->from_name);
    if (subject == NULL || name == NULL)
        goto out;
    make_boundary(m, boundary, sizeof boundary);

    if (!put_date(&b, m->date_s))
        goto out;
    put_from(&b, name, m->from_addr);
    buf_str(&b, "To: ");
    buf_str(&b, m->to_addr);
    buf_str(&b, "\r\n");
    put_subject(&b, subject);
    buf_str(&b, "Message-ID: ");
    buf_str(&b, m->message_id);
    buf_str(&b, "\r\nMIME-Version: 1.0\r\n");
    /* RFC 3834 5: no vacation or out-of-office reply to a notification. */
    buf_str(&b, "Auto-Submitted: auto-generated\r\n");
    buf_str(&b, "Content-Type: multipart/alternative;\r\n boundary=\"");
    buf_str(&b, boundary);
    buf_str(&b, "\"\r\n\r\n");
    put_part(&b, boundary, "text/plain", m->text_body);
    put_part(&b, boundary, "text/html", m->html_body);
    buf_str(&b, "--");
    buf_str(&b, boundary);
    buf_str(&b, "--\r\n");
    if (b.failed)
        goto out;
    *out = b.data; /* the caller frees */
    *len = b.len;
    b.data = NULL;
    rc = 0;
out:
    free(b.data);
    free(name);
    free(subject);
    return rc;
}
