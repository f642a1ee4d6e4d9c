/* http_headers: parsers for the HTTP header values the API acts on. */
#include "transport/http_headers.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Parses one entity-tag at *pp. A strong tag that is, byte for byte, an ETag the server
 * sends (a version in decimal, without leading zeros) sets *version and *usable: comparing
 * versions is then the strong comparison of RFC 9110 8.8.3.2. Weak tags and any other
 * opaque tag ("03", "+3", "x") are well formed but never match (*usable false). */
static bool parse_etag(const char **pp, uint64_t *version, bool *usable)
{
    const char *p = *pp;
    bool weak = false;

    if (p[0] == 'W' && p[1] == '/') {
        weak = true;
        p += 2;
    }
    if (*p != '"')
        return false;
    const char *start = ++p;
    while (*p && *p != '"') {
        unsigned char c = (unsigned char)*p;
        /* etagc = %x21 / %x23-7E / obs-text */
        if (c < 0x21 || c == 0x7F)
            return false;
        p++;
    }
    if (*p != '"')
        return false;
    size_t len = (size_t)(p - start);
    *usable = false;
    if (!weak && len > 0 && len <= 20 && (start[0] != '0' || len == 1)) {
        bool digits = true;
        for (size_t i = 0; i < len; i++)
            digits = digits && isdigit((unsigned char)start[i]);
        if (digits) {
            char buf[21];
            memcpy(buf, start, len);
            buf[len] = '\0';
            errno = 0;
            unsigned long long v = strtoull(buf, NULL, 10);
            if (errno == 0) {
                *version = (uint64_t)v;
                *usable = true;
            }
        }
    }
    *pp = p + 1;
    return true;
}

bool http_headers_parse_if_match(const char *value, struct users_if_match *out)
{
    memset(out, 0, sizeof *out);
    out->kind = USERS_IF_MATCH_NONE;
    if (value == NULL)
        return true;

    const char *p = skip_ows(value);
    if (*p == '*') {
        p = skip_ows(p + 1);
        if (*p != '\0')
            return false;
        out->kind = USERS_IF_MATCH_ANY;
        return true;
    }
    out->kind = USERS_IF_MATCH_LIST;
    size_t tags = 0;
    for (;;) {
        uint64_t v = 0;
        bool usable = false;
        p = skip_ows(p);
        if (!parse_etag(&p, &v, &usable))
            return false;
        if (++tags > USERS_IF_MATCH_MAX)
            return false;
        if (usable)
            out->versions[out->n++] = v;
        p = skip_ows(p);
        if (*p == '\0')
            return true;
        if (*p != ',')
            return false;
        p++;
    }
}

bool http_headers_content_type_is(const char *value, const char *media_type)
{
    if (value == NULL)
        return false;
    const char *p = skip_ows(value);
    size_t n = strlen(media_type);
    if (strncasecmp(p, media_type, n) != 0)
        return false;
    p = skip_ows(p + n);
    while (*p == ';') {
        p = skip_ows(p + 1);
        if (strncasecmp(p, "charset", 7) != 0)
            return false;
        p = skip_ows(p + 7);
        if (*p != '=')
            return false;
        p = skip_ows(p + 1);
        bool quoted = *p == '"';
        if (quoted)
            p++;
        if (strncasecmp(p, "utf-8", 5) != 0)
            return false;
        p += 5;
        if (quoted) {
            if (*p != '"')
                return false;
            p++;
        }
        p = skip_ows(p);
    }
    return *p == '\0';
}
