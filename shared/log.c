/* log: builds one JSON object per call in a fixed buffer and writes it to stdout at once. */
#include "shared/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The longest service name kept; longer names are cut (they are set by our own main). */
#define LOG_SERVICE_MAX 64
/* Bytes kept free at the end of a line for `"`, `,"truncated":true`, `}` and `\n`. */
#define LOG_TAIL_RESERVE 24

static char log_service[LOG_SERVICE_MAX + 1] = "app";
static atomic_int log_min_level = LOG_INFO;
/* Serialises the write(2) calls so that even a partial write can't interleave lines. */
static pthread_mutex_t log_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

/* A line under construction: content may use buf[0..limit); the reserve closes it. */
struct log_line {
    char buf[LOG_LINE_MAX];
    size_t len;
    size_t limit;
    bool truncated;
};

void log_init(const char *service, enum log_level min_level)
{
    if (service != NULL && service[0] != '\0')
        (void)snprintf(log_service, sizeof(log_service), "%s", service);
    atomic_store_explicit(&log_min_level, (int)min_level, memory_order_relaxed);
}

bool log_level_parse(const char *s, enum log_level *out)
{
    size_t i;

    if (s == NULL)
        return false;
    for (i = 0; i < sizeof(log_level_names) / sizeof(log_level_names[0]); i++) {
        if (strcasecmp(s, log_level_names[i]) == 0) {
            *out = (enum log_level)i;
            return true;
        }
    }
    return false;
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

static const char *log_level_name(enum log_level level)
{
    if ((int)level <= (int)LOG_DEBUG)
        return log_level_names[LOG_DEBUG];
    if ((int)level >= (int)LOG_ERROR)
        return log_level_names[LOG_ERROR];
    return log_level_names[level];
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 when s[0..n) does not start
 * with one (stray continuation byte, overlong form, surrogate, > U+10FFFF, cut short). */
static size_t log_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    size_t need;
    size_t i;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < need || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < need; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    }
    return need;
}

/* Appends the escaped form of src[0..n) to dst at *pos, never writing at or past limit.
 * Each character is appended whole or not at all, so a cut never splits an escape or a
 * UTF-8 sequence. Returns false (with *pos after the last whole character) when cut. */
static bool log_escape_into(char *dst, size_t limit, size_t *pos, const char *src, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0;

    while (i < n) {
        char tmp[8];
        const char *piece = tmp;
        size_t plen;
        size_t used;
        unsigned char c = s[i];

        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            plen = 2;
            used = 1;
        } else if (c < 0x20 || c == 0x7F) {
            memcpy(tmp, "\\u00", 4);
            tmp[4] = hex[c >> 4];
            tmp[5] = hex[c & 0xF];
            plen = 6;
            used = 1;
        } else if (c < 0x80) {
            tmp[0] = (char)c;
            plen = 1;
            used = 1;
        } else {
            used = log_utf8_len(s + i, n - i);
            if (used == 0) {
                piece = "\xEF\xBF\xBD"; /* U+FFFD for one bad byte */
                plen = 3;
                used = 1;
            } else if (used == 3 && c == 0xE2 && s[i + 1] == 0x80 &&
                       (s[i + 2] == 0xA8 || s[i + 2] == 0xA9)) {
                /* U+2028/U+2029 are valid JSON but end lines in JavaScript. */
                piece = s[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
                plen = 6;
            } else {
                piece = src + i;
                plen = used;
            }
        }
        if (*pos + plen > limit)
            return false;
        memcpy(dst + *pos, piece, plen);
        *pos += plen;
        i += used;
    }
    return true;
}

bool log_json_escape(const char *src, char *dst, size_t dstlen)
{
    size_t pos = 0;
    bool fit;

    if (dst == NULL || dstlen == 0)
        return src == NULL || src[0] == '\0';
    if (src == NULL)
        src = "";
    fit = log_escape_into(dst, dstlen - 1, &pos, src, strlen(src));
    dst[pos] = '\0';
    return fit;
}

static bool log_line_raw(struct log_line *l, const char *s)
{
    size_t n = strlen(s);

    if (l->len + n > l->limit)
        return false;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    return true;
}

static bool log_line_escaped(struct log_line *l, const char *s)
{
    return log_escape_into(l->buf, l->limit, &l->len, s, strlen(s));
}

/* Closing text goes into the reserve, which log_line_raw never touches. */
static void log_line_close(struct log_line *l, const char *s)
{
    size_t n = strlen(s);

    if (l->len + n <= sizeof(l->buf)) {
        memcpy(l->buf + l->len, s, n);
        l->len += n;
    }
}

static void log_format_ts(char *out, size_t outlen)
{
    struct timespec now;
    struct tm tm;

    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || gmtime_r(&now.tv_sec, &tm) == NULL) {
        (void)snprintf(out, outlen, "1970-01-01T00:00:00.000000Z");
        return;
    }
    (void)snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   (long)(now.tv_nsec / 1000));
}

/* Appends the fields (key, value, ..., NULL) from ap. A field whose key does not fit is
 * dropped whole; a value that does not fit is cut. Stops at the first cut. */
static void log_line_fields(struct log_line *l, va_list ap)
{
    for (;;) {
        const char *key = va_arg(ap, const char *);
        const char *value;
        size_t mark = l->len;

        if (key == NULL)
            return;
        value = va_arg(ap, const char *);
        if (!log_line_raw(l, ",\"") || !log_line_escaped(l, key) ||
            !log_line_raw(l, value == NULL ? "\":null" : "\":\"")) {
            l->len = mark;
            l->truncated = true;
            return;
        }
        if (value == NULL)
            continue;
        if (!log_line_escaped(l, value)) {
            l->truncated = true;
            log_line_close(l, "\"");
            return;
        }
        log_line_close(l, "\"");
    }
}

static void log_line_write(const struct log_line *l)
{
    size_t off = 0;

    (void)pthread_mutex_lock(&log_write_lock);
    while (off < l->len) {
        ssize_t n = write(STDOUT_FILENO, l->buf + off, l->len - off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* nowhere to report a failing stdout; drop the line */
        off += (size_t)n;
    }
    (void)pthread_mutex_unlock(&log_write_lock);
}

/* Builds and writes one line. fields is NULL for log_writef. msg_cut says the message was
 * already shortened by the caller. */
static void log_emit(enum log_level level, const char *msg, bool msg_cut, va_list *fields)
{
    struct log_line l;
    char ts[64];

    l.len = 0;
    l.limit = sizeof(l.buf) - LOG_TAIL_RESERVE;
    l.truncated = msg_cut;
    log_format_ts(ts, sizeof(ts));
    /* The head is short (service is capped), so it always fits. */
    (void)log_line_raw(&l, "{\"ts\":\"");
    (void)log_line_raw(&l, ts);
    (void)log_line_raw(&l, "\",\"level\":\"");
    (void)log_line_raw(&l, log_level_name(level));
    (void)log_line_raw(&l, "\",\"service\":\"");
    (void)log_line_escaped(&l, log_service);
    (void)log_line_raw(&l, "\",\"msg\":\"");
    if (!log_line_escaped(&l, msg == NULL ? "" : msg))
        l.truncated = true;
    log_line_close(&l, "\"");
    if (!l.truncated && fields != NULL)
        log_line_fields(&l, *fields);
    if (l.truncated)
        log_line_close(&l, ",\"truncated\":true");
    log_line_close(&l, "}\n");
    log_line_write(&l);
}

void log_write(enum log_level level, const char *msg, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, msg);
    log_emit(level, msg, false, &ap);
    va_end(ap);
}

void log_writef(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_LINE_MAX];
    va_list ap;
    int n;
    bool cut = false;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0) {
        (void)snprintf(msg, sizeof(msg), "(unformattable log message)");
    } else if ((size_t)n >= sizeof(msg)) {
        /* vsnprintf cuts at a byte; move the cut back to the start of a cut-off UTF-8
         * sequence so it is not reported as invalid input. */
        size_t end = sizeof(msg) - 1;
        size_t back = 0;

        while (back < 3 && back < end && ((unsigned char)msg[end - 1 - back] & 0xC0) == 0x80)
            back++;
        if (back < end && ((unsigned char)msg[end - 1 - back] & 0xC0) == 0xC0 &&
            log_utf8_len((const unsigned char *)msg + end - 1 - back, back + 1) == 0)
            msg[end - 1 - back] = '\0';
        cut = true;
    }
    log_emit(level, msg, cut, NULL);
}

bool log_rate_allow_at(struct log_rate *r, int64_t now_s, unsigned long *dropped)
{
    bool allow;

    (void)pthread_mutex_lock(&r->lock);
    if (r->window_start == INT64_MIN || now_s < r->window_start ||
        now_s - r->window_start >= r->window_s) {
        r->window_start = now_s;
        r->used = 0;
    }
    allow = r->used < r->burst;
    if (allow) {
        r->used++;
        if (dropped != NULL)
            *dropped = r->dropped;
        r->dropped = 0;
    } else {
        r->dropped++;
    }
    (void)pthread_mutex_unlock(&r->lock);
    return allow;
}

void log_write_limited(struct log_rate *r, const char *msg, const char *fmt, va_list ap)
{
    char detail[512];
    char dropped_s[24];
    unsigned long dropped = 0;
    size_t n;

    if (!log_rate_allow(r, &dropped) || vsnprintf(detail, sizeof(detail), fmt, ap) < 0)
        return;
    n = strlen(detail);
    while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == '\r'))
        detail[--n] = '\0';
    (void)snprintf(dropped_s, sizeof(dropped_s), "%lu", dropped);
    log_write(LOG_WARN, msg, "detail", detail, "lines_dropped", dropped_s, NULL);
}

bool log_rate_allow(struct log_rate *r, unsigned long *dropped)
{
    struct timespec now;

    if (clock_gettime(CLOCK_MONOTONIC, &now) != 0)
        now.tv_sec = 0; /* cannot happen with CLOCK_MONOTONIC; one window then */
    return log_rate_allow_at(r, (int64_t)now.tv_sec, dropped);
}
