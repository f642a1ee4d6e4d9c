/* user_json: maps request bodies to user_fields and users to response JSON. */
#include "transport/user_json.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "entities/utf8.h"

/* What cJSON lets through but must not pass, found by walking the body token by token
 * (string literals escape by escape): a raw control character (U+0000..U+001F) inside a
 * string, which RFC 8259 section 7 says must be escaped, or between tokens other than the
 * JSON whitespace tab, LF and CR (cJSON skips any byte up to space there): not JSON; and
 * the escape \u0000, which cJSON turns into a NUL that would silently cut a string short.
 * Returns the client-safe reason, NULL when there is none. */
static const char *lexical_problem(const char *s, size_t len)
{
    static const char control[] = "the request body is not valid JSON: a control character "
                                  "in a string must be escaped";
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!in_string) {
            if (c == '"')
                in_string = true;
            else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
                return "the request body is not valid JSON";
            continue;
        }
        if (c < 0x20)
            return control;
        if (c == '"') {
            in_string = false;
        } else if (c == '\\') {
            if (i + 1 >= len)
                return NULL; /* unterminated: cJSON refuses it */
            if ((unsigned char)s[i + 1] < 0x20)
                return control;
            if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
                return "strings must not contain \\u0000";
            i++; /* skip the escaped character */
        }
    }
    return NULL;
}

void user_json_wipe(struct cJSON *tree)
{
    for (cJSON *item = tree; item != NULL; item = item->next) {
        if (item->valuestring != NULL)
            explicit_bzero(item->valuestring, strlen(item->valuestring));
        if (item->child != NULL)
            user_json_wipe(item->child); /* depth bounded by cJSON's nesting limit */
    }
}

/* Frees a tree that may hold a body's secrets. */
static void tree_free(cJSON *tree)
{
    user_json_wipe(tree);
    cJSON_Delete(tree);
}

struct field_slot {
    const char *name;
    unsigned bit;
    size_t offset; /* of the const char * in struct user_fields */
};

static const struct field_slot writable[] = {
    {"username", USER_F_USERNAME, offsetof(struct user_fields, username)},
    {"email", USER_F_EMAIL, offsetof(struct user_fields, email)},
    {"full_name", USER_F_FULL_NAME, offsetof(struct user_fields, full_name)},
    {"address", USER_F_ADDRESS, offsetof(struct user_fields, address)},
    {"date_of_birth", USER_F_DATE_OF_BIRTH, offsetof(struct user_fields, date_of_birth)},
    {"locale", USER_F_LOCALE, offsetof(struct user_fields, locale)},
    {"status", USER_F_STATUS, offsetof(struct user_fields, status)},
    {"password", USER_F_PASSWORD, offsetof(struct user_fields, password)},
};

/* Server-managed fields: accepted and ignored so that a client may send back what it
 * read (GET then PUT), but never written from a request. */
static const char *const read_only[] = {"id", "created_at", "updated_at", "version",
                                        "password_changed_at"};

static bool is_read_only(const char *name)
{
    for (size_t i = 0; i < sizeof read_only / sizeof read_only[0]; i++) {
        if (strcmp(name, read_only[i]) == 0)
            return true;
    }
    return false;
}

enum user_json_result user_json_parse(const char *body, size_t len, struct cJSON **tree,
                                      struct user_fields *f, struct field_errors *errs,
                                      char *detail, size_t detail_len)
{
    const char *end = NULL;
    cJSON *root = NULL;
    size_t before = errs->n;

    memset(f, 0, sizeof *f);
    *tree = NULL;
    if (len == 0) {
        snprintf(detail, detail_len, "the request body is empty");
        return USER_JSON_MALFORMED;
    }
    if (memchr(body, '\0', len) != NULL) {
        snprintf(detail, detail_len, "the request body contains a NUL byte");
        return USER_JSON_MALFORMED;
    }
    if (!utf8_valid(body, len)) {
        snprintf(detail, detail_len, "the request body is not valid UTF-8");
        return USER_JSON_MALFORMED;
    }
    const char *problem = lexical_problem(body, len);
    if (problem != NULL) {
        snprintf(detail, detail_len, "%s", problem);
        return USER_JSON_MALFORMED;
    }
    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root == NULL) {
        snprintf(detail, detail_len, "the request body is not valid JSON");
        return USER_JSON_MALFORMED;
    }
    while (end != NULL && end < body + len && strchr(" \t\r\n", *end) != NULL)
        end++;
    if (end != body + len) {
        tree_free(root);
        snprintf(detail, detail_len, "unexpected data after the JSON value");
        return USER_JSON_MALFORMED;
    }
    if (!cJSON_IsObject(root)) {
        tree_free(root);
        snprintf(detail, detail_len, "the request body must be a JSON object");
        return USER_JSON_MALFORMED;
    }

    unsigned seen = 0;
    for (cJSON *item = root->child; item != NULL; item = item->next) {
        const struct field_slot *slot = NULL;
        for (size_t i = 0; i < sizeof writable / sizeof writable[0]; i++) {
            if (strcmp(item->string, writable[i].name) == 0)
                slot = &writable[i];
        }
        if (slot == NULL) {
            if (!is_read_only(item->string))
                field_errors_add(errs, item->string, "is not a known field");
            continue;
        }
        if (seen & slot->bit) {
            field_errors_add(errs, slot->name, "is given more than once");
            continue;
        }
        seen |= slot->bit;
        if (cJSON_IsNull(item)) {
            f->present |= slot->bit;
            f->null |= slot->bit;
        } else if (cJSON_IsString(item)) {
            f->present |= slot->bit;
            *(const char **)((char *)f + slot->offset) = item->valuestring;
        } else {
            field_errors_add(errs, slot->name, "must be a string or null");
        }
    }
    *tree = root;
    return errs->n == before ? USER_JSON_OK : USER_JSON_INVALID;
}

void user_json_format_time(long long us, char out[32])
{
    struct tm tm;
    time_t secs = (time_t)(us / 1000000);
    long frac = (long)(us % 1000000);

    if (frac < 0) {
        frac += 1000000;
        secs -= 1;
    }
    char buf[96]; /* room for any int fields, so the compiler can see no truncation */
    gmtime_r(&secs, &tm);
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    snprintf(out, 32, "%.31s", buf);
}

static bool add_text_or_null(cJSON *o, const char *name, const char *v)
{
    return (v[0] ? cJSON_AddStringToObject(o, name, v) : cJSON_AddNullToObject(o, name)) != NULL;
}

cJSON *user_json_from_user(const struct user *u)
{
    char ts[32];
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;

    ok = ok && cJSON_AddStringToObject(o, "id", u->id) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "username", u->username) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "email", u->email) != NULL;
    ok = ok && add_text_or_null(o, "full_name", u->full_name);
    ok = ok && add_text_or_null(o, "date_of_birth", u->date_of_birth);
    ok = ok && add_text_or_null(o, "address", u->address);
    ok = ok && cJSON_AddStringToObject(o, "locale", u->locale) != NULL;
    ok = ok && cJSON_AddStringToObject(o, "status", user_status_name(u->status)) != NULL;
    if (ok && u->password_changed_at_us != 0) {
        user_json_format_time(u->password_changed_at_us, ts);
        ok = cJSON_AddStringToObject(o, "password_changed_at", ts) != NULL;
    } else if (ok) {
        ok = cJSON_AddNullToObject(o, "password_changed_at") != NULL;
    }
    user_json_format_time(u->created_at_us, ts);
    ok = ok && cJSON_AddStringToObject(o, "created_at", ts) != NULL;
    user_json_format_time(u->updated_at_us, ts);
    ok = ok && cJSON_AddStringToObject(o, "updated_at", ts) != NULL;
    ok = ok && cJSON_AddNumberToObject(o, "version", (double)u->version) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}
