/* debezium_envelope: Debezium change-event JSON (with or without the schema wrapper) to a
 * user_change.
 *
 * What the connector sends (connector-config/userdata-cdc.*.json, and the real events kept
 * in tests/unit/push-email/samples/): JsonConverter, default time.precision.mode
 * (adaptive_time_microseconds), so DATE is an int32 of days (io.debezium.time.Date) and
 * DATETIME(6) an int64 of microseconds (io.debezium.time.MicroTimestamp). The table has no
 * DECIMAL column, so decimal.handling.mode does not matter. Timestamps given as ISO strings
 * would mean a different time.precision.mode or converter: that is a deployment mistake, and
 * it goes to the DLQ ("expected an integer") instead of being guessed at.
 *
 * Hostile input: the value is capped at ENVELOPE_MAX_VALUE bytes, checked as strict UTF-8
 * and for NUL (raw, or escaped as \u0000, which cJSON would silently cut a string at)
 * before cJSON sees it, and parsed from a NUL-terminated copy. cJSON bounds nesting
 * (CJSON_NESTING_LIMIT), so deep input fails to parse instead of exhausting the stack.
 * Numbers are doubles in cJSON: integers are accepted only when integral and below 2^53 in
 * magnitude, where a double is exact. Unknown members (created_at, transaction, ts_us,
 * ...) are ignored; password_hash (excluded by the connector, but possible if the
 * exclusion is lost) is never read. Reasons name fields, never values, since they end up in
 * logs and DLQ headers. */
#include "transport/debezium_envelope.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* A Debezium users event is about 1 KiB bare and 5 KiB with the schema: 1 MiB is far
 * beyond anything legitimate and bounds the parse cost of garbage. */
#define ENVELOPE_MAX_VALUE (1024u * 1024u)

/* Largest magnitude where every integer is exactly one double. */
#define EXACT_INT_MAX 9007199254740991.0 /* 2^53 - 1 */

/* DATE range kept to years 0001..9999 so that dates always format as YYYY-MM-DD. */
#define DATE_DAYS_MIN (-719162) /* 0001-01-01 */
#define DATE_DAYS_MAX 2932896   /* 9999-12-31 */

struct reason_buf {
    char *buf;
    size_t len;
};

__attribute__((format(printf, 2, 3))) static void fail(struct reason_buf *r, const char *fmt, ...)
{
    va_list ap;

    if (r->buf == NULL || r->len == 0) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(r->buf, r->len, fmt, ap);
    va_end(ap);
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
 * Returns false as well for a NUL byte, which no field may hold. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;

        if (c == 0) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0) {
                lo = 0xA0; /* overlong */
            } else if (c == 0xED) {
                hi = 0x9F; /* surrogates */
            }
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0) {
                lo = 0x90; /* overlong */
            } else if (c == 0xF4) {
                hi = 0x8F; /* above U+10FFFF */
            }
        } else {
            return false;
        }
        if (n - i <= need) {
            return false;
        }
        if (s[i + 1] < lo || s[i + 1] > hi) {
            return false;
        }
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xBF) {
                return false;
            }
        }
        i += need + 1;
    }
    return true;
}

/* True when a JSON string in the text holds the escape \u0000. Walks the text the way a
 * JSON lexer does (inside/outside strings, escapes skipped whole) so that an escaped
 * backslash followed by "u0000" is not mistaken for one. Malformed text is left to cJSON. */
static bool has_escaped_nul(const char *s, size_t n)
{
    bool in_string = false;

    for (size_t i = 0; i < n; i++) {
        if (!in_string) {
            if (s[i] == '"') {
                in_string = true;
            }
            continue;
        }
        if (s[i] == '"') {
            in_string = false;
        } else if (s[i] == '\\' && i + 1 < n) {
            if (s[i + 1] == 'u' && i + 5 < n && s[i + 2] == '0' && s[i + 3] == '0' &&
                s[i + 4] == '0' && s[i + 5] == '0') {
                return true;
            }
            i++; /* the escaped character; \uXXXX's digits are plain characters */
        }
    }
    return false;
}

enum num_result { NUM_OK, NUM_NOT_NUMBER, NUM_NOT_INTEGER, NUM_OUT_OF_RANGE };

/* An integer in [lo, hi] (both within +-(2^53 - 1)). */
static enum num_result json_integer(const cJSON *item, double lo, double hi, int64_t *out)
{
    double v;

    if (!cJSON_IsNumber(item)) {
        return NUM_NOT_NUMBER;
    }
    v = item->valuedouble;
    if (!isfinite(v) || v != floor(v)) {
        return NUM_NOT_INTEGER;
    }
    if (v < lo || v > hi) {
        return NUM_OUT_OF_RANGE;
    }
    *out = (int64_t)v;
    return NUM_OK;
}

/* obj.field as an integer in [lo, hi]. Absent or null: *present = false when optional,
 * else malformed. */
static bool get_integer(const cJSON *obj, const char *where, const char *field, bool required,
                        double lo, double hi, bool *present, int64_t *out, struct reason_buf *r)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, field);

    *present = false;
    *out = 0;
    if (item == NULL || cJSON_IsNull(item)) {
        if (required) {
            fail(r, "%s.%s: missing", where, field);
            return false;
        }
        return true;
    }
    switch (json_integer(item, lo, hi, out)) {
    case NUM_OK:
        *present = true;
        return true;
    case NUM_NOT_NUMBER:
    case NUM_NOT_INTEGER:
        fail(r, "%s.%s: expected an integer", where, field);
        return false;
    case NUM_OUT_OF_RANGE:
        fail(r, "%s.%s: integer out of range", where, field);
        return false;
    }
    return false;
}

/* obj.field as a string of at most dst_size - 1 bytes, copied into dst. Absent or null:
 * dst = "" when optional, else malformed. */
static bool get_string(const cJSON *obj, const char *where, const char *field, bool required,
                       char *dst, size_t dst_size, struct reason_buf *r)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, field);
    size_t n;

    dst[0] = '\0';
    if (item == NULL || cJSON_IsNull(item)) {
        if (required) {
            fail(r, "%s.%s: missing", where, field);
            return false;
        }
        return true;
    }
    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        fail(r, "%s.%s: expected a string", where, field);
        return false;
    }
    n = strlen(item->valuestring);
    if (n >= dst_size) {
        fail(r, "%s.%s: longer than %zu bytes", where, field, dst_size - 1);
        return false;
    }
    /* The raw text was checked already; this covers what cJSON decoded from \u escapes. */
    if (!utf8_valid((const unsigned char *)item->valuestring, n)) {
        fail(r, "%s.%s: invalid UTF-8", where, field);
        return false;
    }
    memcpy(dst, item->valuestring, n + 1);
    return true;
}

/* A row image. "where" is "before" or "after". */
static bool parse_image(const cJSON *img, const char *where, struct user_image *out,
                        struct reason_buf *r)
{
    int64_t v;
    bool present;

    if (!get_string(img, where, "id", true, out->id, sizeof out->id, r)) {
        return false;
    }
    if (strlen(out->id) != UC_ID_MAX) {
        fail(r, "%s.id: expected %d characters", where, UC_ID_MAX);
        return false;
    }
    if (!get_string(img, where, "email", true, out->email, sizeof out->email, r)) {
        return false;
    }
    if (out->email[0] == '\0') {
        fail(r, "%s.email: empty", where);
        return false;
    }
    if (!get_string(img, where, "username", false, out->username, sizeof out->username, r) ||
        !get_string(img, where, "full_name", false, out->full_name, sizeof out->full_name, r) ||
        !get_string(img, where, "address", false, out->address, sizeof out->address, r) ||
        !get_string(img, where, "locale", false, out->locale, sizeof out->locale, r) ||
        !get_string(img, where, "status", false, out->status, sizeof out->status, r)) {
        return false;
    }

    if (!get_integer(img, where, "date_of_birth", false, DATE_DAYS_MIN, DATE_DAYS_MAX, &present, &v,
                     r)) {
        return false;
    }
    out->has_date_of_birth = present;
    out->date_of_birth_days = (int32_t)v;

    if (!get_integer(img, where, "password_changed_at", false, -EXACT_INT_MAX, EXACT_INT_MAX,
                     &present, &v, r)) {
        return false;
    }
    out->has_password_changed_at = present;
    out->password_changed_at_us = v;

    if (!get_integer(img, where, "updated_at", false, -EXACT_INT_MAX, EXACT_INT_MAX, &present, &v,
                     r)) {
        return false;
    }
    out->updated_at_us = v;

    if (!get_integer(img, where, "version", false, 0, EXACT_INT_MAX, &present, &v, r)) {
        return false;
    }
    out->version = (uint64_t)v;
    return true;
}

/* before/after: absent or null -> *has = false; an object -> parsed. */
static bool parse_optional_image(const cJSON *env, const char *where, bool *has,
                                 struct user_image *out, struct reason_buf *r)
{
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(env, where);

    *has = false;
    if (img == NULL || cJSON_IsNull(img)) {
        return true;
    }
    if (!cJSON_IsObject(img)) {
        fail(r, "%s: expected an object or null", where);
        return false;
    }
    if (!parse_image(img, where, out, r)) {
        return false;
    }
    *has = true;
    return true;
}

/* source.<field>, when present, must be the string "want". */
static bool check_source_name(const cJSON *src, const char *field, const char *want,
                              const char *what, struct reason_buf *r)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(src, field);

    if (item == NULL || cJSON_IsNull(item)) {
        return true;
    }
    if (!cJSON_IsString(item) || item->valuestring == NULL) {
        fail(r, "source.%s: expected a string", field);
        return false;
    }
    if (strcmp(item->valuestring, want) != 0) {
        fail(r, "source.%s: unexpected %s (want %s)", field, what, want);
        return false;
    }
    return true;
}

static bool parse_source(const cJSON *env, struct change_position *out, struct reason_buf *r)
{
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(env, "source");
    int64_t v;
    bool present;

    if (src == NULL || cJSON_IsNull(src)) {
        fail(r, "source: missing");
        return false;
    }
    if (!cJSON_IsObject(src)) {
        fail(r, "source: expected an object");
        return false;
    }
    if (!check_source_name(src, "db", "userdata", "database", r) ||
        !check_source_name(src, "table", "users", "table", r)) {
        return false;
    }
    /* MariaDB's server_id is a 32-bit unsigned; snapshot events carry 0. */
    if (!get_integer(src, "source", "server_id", true, 0, 4294967295.0, &present, &v, r)) {
        return false;
    }
    out->server_id = v;
    if (!get_string(src, "source", "file", true, out->file, sizeof out->file, r)) {
        return false;
    }
    if (out->file[0] == '\0') {
        fail(r, "source.file: empty");
        return false;
    }
    if (!get_integer(src, "source", "pos", true, 0, EXACT_INT_MAX, &present, &v, r)) {
        return false;
    }
    out->pos = v;
    if (!get_integer(src, "source", "row", false, 0, INT32_MAX, &present, &v, r)) {
        return false;
    }
    out->row = (int32_t)v;
    if (!get_string(src, "source", "gtid", false, out->gtid, sizeof out->gtid, r)) {
        return false;
    }
    if (!get_integer(src, "source", "ts_ms", false, -EXACT_INT_MAX, EXACT_INT_MAX, &present, &v,
                     r)) {
        return false;
    }
    out->ts_ms = v;
    return true;
}

/* The envelope object (the payload, when wrapped) into *out. */
static bool parse_envelope(const cJSON *env, struct user_change *out, struct reason_buf *r)
{
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(env, "op");
    bool need_before = false, need_after = false;

    if (op == NULL || cJSON_IsNull(op)) {
        fail(r, "op: missing");
        return false;
    }
    if (!cJSON_IsString(op) || op->valuestring == NULL) {
        fail(r, "op: expected a string");
        return false;
    }
    if (strlen(op->valuestring) != 1 || strchr("cudrt", op->valuestring[0]) == NULL) {
        fail(r, "op: expected one of c, u, d, r, t");
        return false;
    }
    out->op = (enum change_op)op->valuestring[0];
    switch (out->op) {
    case CHANGE_CREATE:
    case CHANGE_READ:
        need_after = true;
        break;
    case CHANGE_UPDATE:
        need_before = true;
        need_after = true;
        break;
    case CHANGE_DELETE:
        need_before = true;
        break;
    case CHANGE_TRUNCATE:
        break; /* a truncate has no row images */
    }

    if (!parse_optional_image(env, "before", &out->has_before, &out->before, r) ||
        !parse_optional_image(env, "after", &out->has_after, &out->after, r)) {
        return false;
    }
    if (need_before && !out->has_before) {
        fail(r, "before: missing (op %c needs it)", (char)out->op);
        return false;
    }
    if (need_after && !out->has_after) {
        fail(r, "after: missing (op %c needs it)", (char)out->op);
        return false;
    }
    return parse_source(env, &out->source, r);
}

enum envelope_result debezium_envelope_parse(const char *value, size_t len, struct user_change *out,
                                             char *reason, size_t reason_len)
{
    struct reason_buf r = {reason, reason_len};
    enum envelope_result res = ENVELOPE_MALFORMED;
    char *text = NULL;  /* owned: NUL-terminated copy of value, freed at out */
    cJSON *root = NULL; /* owned: the parsed value, deleted at out */
    const cJSON *env;
    const char *parse_end = NULL;
    /* Built here and copied to *out only when whole: out is never half written. The
     * struct is a few KiB, fine on the stack. */
    struct user_change c;

    memset(&c, 0, sizeof c);
    memset(out, 0, sizeof *out);
    if (reason != NULL && reason_len > 0) {
        reason[0] = '\0';
    }

    if (value == NULL || len == 0) {
        res = ENVELOPE_TOMBSTONE;
        goto out;
    }
    if (len > ENVELOPE_MAX_VALUE) {
        fail(&r, "value: larger than %u bytes", ENVELOPE_MAX_VALUE);
        goto out;
    }
    if (memchr(value, '\0', len) != NULL) {
        fail(&r, "value: contains a NUL byte");
        goto out;
    }
    if (!utf8_valid((const unsigned char *)value, len)) {
        fail(&r, "value: invalid UTF-8");
        goto out;
    }
    if (has_escaped_nul(value, len)) {
        fail(&r, "value: contains an escaped NUL (\\u0000)");
        goto out;
    }

    /* cJSON reads up to a NUL: give it a terminated copy rather than trusting the length
     * handling of whichever cJSON the system has. */
    text = malloc(len + 1);
    if (text == NULL) {
        fail(&r, "value: out of memory");
        goto out;
    }
    memcpy(text, value, len);
    text[len] = '\0';

    root = cJSON_ParseWithOpts(text, &parse_end, 0);
    if (root == NULL) {
        fail(&r, "value: not valid JSON (or nested too deeply)");
        goto out;
    }
    /* Trailing bytes after the value ("{...} x") make it not one JSON text. */
    while (parse_end != NULL &&
           (*parse_end == ' ' || *parse_end == '\t' || *parse_end == '\n' || *parse_end == '\r')) {
        parse_end++;
    }
    if (parse_end == NULL || *parse_end != '\0') {
        fail(&r, "value: trailing characters after the JSON value");
        goto out;
    }

    if (cJSON_IsNull(root)) {
        res = ENVELOPE_TOMBSTONE;
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        fail(&r, "value: expected a JSON object");
        goto out;
    }

    /* schemas.enable=true wraps the envelope as {"schema":..,"payload":..}; a bare envelope
     * has neither member. The schema itself is not checked: the field checks below are. */
    env = root;
    if (cJSON_GetObjectItemCaseSensitive(root, "schema") != NULL &&
        cJSON_GetObjectItemCaseSensitive(root, "payload") != NULL) {
        env = cJSON_GetObjectItemCaseSensitive(root, "payload");
        if (env == NULL || cJSON_IsNull(env)) {
            /* What JsonConverter would write for a null value with a schema. */
            res = ENVELOPE_TOMBSTONE;
            goto out;
        }
        if (!cJSON_IsObject(env)) {
            fail(&r, "payload: expected an object");
            goto out;
        }
    }

    if (!parse_envelope(env, &c, &r)) {
        goto out;
    }
    *out = c;
    res = ENVELOPE_OK;

out:
    cJSON_Delete(root);
    free(text);
    return res;
}
