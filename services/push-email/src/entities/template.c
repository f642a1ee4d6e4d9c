/* template: a small mustache-like renderer for email templates kept in files. */
#include "entities/template.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A template that renders past this is an error, not an email: it bounds what a hostile
 * value times a long section can cost. */
#define TEMPLATE_OUT_MAX  (1024u * 1024u)
#define TEMPLATE_NAME_MAX 64

enum tag_kind { TAG_VAR, TAG_OPEN, TAG_CLOSE };

struct tag {
    enum tag_kind kind;
    const char *start; /* of "{{" */
    const char *end;   /* just past "}}" */
    char name[TEMPLATE_NAME_MAX + 1];
};

struct out_buf {
    char *data; /* malloc'd; handed to the caller on success */
    size_t len, cap;
    bool too_large, no_memory;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool out_put(struct out_buf *b, const char *s, size_t n)
{
    if (b->too_large || b->no_memory)
        return false;
    if (n > TEMPLATE_OUT_MAX - b->len) {
        b->too_large = true;
        return false;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            b->no_memory = true;
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

/* How a continuation line of a value starts in the text part: deeper than the templates'
 * own lines ("* Label", "  Before: ..."), so that a value of several lines cannot pass for
 * template text (see templates/README.md). */
#define TEXT_VALUE_INDENT "    "

/* The length of a control at s[0..n) that no part of an email may carry from a value: C1
 * controls (U+0080..U+009F, as UTF-8) and the bidi embeddings, overrides and isolates
 * (U+202A..U+202E, U+2066..U+2069), which can make text read other than it is. 0 for
 * anything else; C0 controls are the caller's, per context. */
static size_t unicode_control_len(const unsigned char *s, size_t n)
{
    if (n >= 2 && s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
        return 2;
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0xaa && s[2] <= 0xae)
        return 3;
    if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)
        return 3;
    return 0;
}

/* Appends s[0..n) escaped for esc:
 *   HEADER: every C0 control, DEL and U+2028/U+2029 dropped (no value can end a header
 *     line);
 *   TEXT, HTML: C0 controls but tab and line breaks dropped, and DEL; CRLF, a lone CR
 *     and U+2028/U+2029 (line and paragraph separators) become LF (the MIME writer makes
 *     every line break CRLF anyway); in TEXT each line
 *     break is followed by TEXT_VALUE_INDENT; in HTML & < > " ' become entities;
 *   all: C1 and bidi controls dropped. */
static bool out_escaped(struct out_buf *b, const char *s, size_t n, enum template_escape esc)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0; /* start of the pending run of bytes copied as they are */

    for (size_t i = 0; i < n;) {
        unsigned char ch = u[i];
        const char *rep = NULL;
        size_t skip = 1; /* bytes replaced or dropped at i, when rep or drop */
        bool drop = false;

        if (ch == 0xe2 && i + 2 < n && u[i + 1] == 0x80 && (u[i + 2] == 0xa8 || u[i + 2] == 0xa9)) {
            /* U+2028 LINE / U+2029 PARAGRAPH SEPARATOR: a line break to a reader that
             * honours them, so one like any other (none in a header) */
            skip = 3;
            if (esc == TEMPLATE_HEADER)
                drop = true;
            else
                rep = esc == TEMPLATE_TEXT ? "\n" TEXT_VALUE_INDENT : "\n";
        } else if (ch >= 0x80) {
            skip = unicode_control_len(u + i, n - i);
            drop = skip > 0;
        } else if (esc == TEMPLATE_HEADER) {
            drop = ch < 0x20 || ch == 0x7f;
        } else if (ch == '\r' || ch == '\n') {
            if (ch == '\r' && i + 1 < n && u[i + 1] == '\n')
                skip = 2;
            rep = esc == TEMPLATE_TEXT ? "\n" TEXT_VALUE_INDENT : "\n";
        } else if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            drop = true;
        } else if (esc == TEMPLATE_HTML) {
            switch (ch) {
            case '&':
                rep = "&amp;";
                break;
            case '<':
                rep = "&lt;";
                break;
            case '>':
                rep = "&gt;";
                break;
            case '"':
                rep = "&quot;";
                break;
            case '\'':
                rep = "&#39;";
                break;
            default:
                break;
            }
        }
        if (rep == NULL && !drop) {
            i++;
            continue;
        }
        if (!out_put(b, s + run, i - run))
            return false;
        if (rep != NULL && !out_put(b, rep, strlen(rep)))
            return false;
        i += skip;
        run = i;
    }
    return out_put(b, s + run, n - run);
}

/* Finds the next tag at or after p. Returns 1 with *t filled, 0 when there is none, -1 on
 * a malformed tag (err filled). */
static int next_tag(const char *p, struct tag *t, char *err, size_t errlen)
{
    const char *open = strstr(p, "{{");
    const char *close, *name, *name_end;
    size_t len;

    if (open == NULL)
        return 0;
    close = strstr(open + 2, "}}");
    if (close == NULL) {
        set_err(err, errlen, "unclosed {{ at offset %zu", (size_t)(open - p));
        return -1;
    }
    name = open + 2;
    name_end = close;
    t->kind = TAG_VAR;
    while (name < name_end && *name == ' ')
        name++;
    if (name < name_end && (*name == '#' || *name == '/')) {
        t->kind = *name == '#' ? TAG_OPEN : TAG_CLOSE;
        name++;
    }
    while (name < name_end && *name == ' ')
        name++;
    while (name_end > name && name_end[-1] == ' ')
        name_end--;
    len = (size_t)(name_end - name);
    if (len == 0 || len > TEMPLATE_NAME_MAX) {
        set_err(err, errlen, "bad tag name length %zu", len);
        return -1;
    }
    for (const char *q = name; q < name_end; q++) {
        char ch = *q;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
        if (!ok) {
            set_err(err, errlen, "bad character in tag name '%.*s'", (int)len, name);
            return -1;
        }
    }
    memcpy(t->name, name, len);
    t->name[len] = '\0';
    t->start = open;
    t->end = close + 2;
    return 1;
}

/* Checks the structure of the whole template: tags well formed, every section closed by
 * its own name, no section inside another. */
static int validate(const char *tmpl, char *err, size_t errlen)
{
    const char *p = tmpl;
    char open_name[TEMPLATE_NAME_MAX + 1] = "";
    bool in_section = false;
    struct tag t;
    int r;

    while ((r = next_tag(p, &t, err, errlen)) == 1) {
        if (t.kind == TAG_OPEN) {
            if (in_section) {
                set_err(err, errlen, "nested section '%s' inside '%s'", t.name, open_name);
                return -1;
            }
            in_section = true;
            memcpy(open_name, t.name, sizeof open_name);
        } else if (t.kind == TAG_CLOSE) {
            if (!in_section || strcmp(t.name, open_name) != 0) {
                set_err(err, errlen, "unbalanced section close '%s'", t.name);
                return -1;
            }
            in_section = false;
        }
        p = t.end;
    }
    if (r < 0)
        return -1;
    if (in_section) {
        set_err(err, errlen, "unclosed section '%s'", open_name);
        return -1;
    }
    return 0;
}

/* Literal template text: copied as it is, except that nothing in a header may carry a
 * control (a subject file's trailing newline included). */
static bool out_literal(struct out_buf *b, const char *s, size_t n, enum template_escape esc)
{
    if (esc == TEMPLATE_HEADER)
        return out_escaped(b, s, n, TEMPLATE_HEADER);
    return out_put(b, s, n);
}

static const char *lookup(const struct template_vars *vars, const char *section, size_t item,
                          const char *name)
{
    const char *v = NULL;

    if (vars == NULL)
        return NULL;
    /* Inside a section the item's fields come first, then the template's variables. */
    if (section != NULL && vars->item_get != NULL)
        v = vars->item_get(vars->ctx, section, item, name);
    if (v == NULL && vars->get != NULL)
        v = vars->get(vars->ctx, name);
    return v;
}

/* Renders [p, end) of an already validated template; section != NULL inside one. */
static bool render_span(const char *p, const char *end, enum template_escape esc,
                        const struct template_vars *vars, const char *section, size_t item,
                        struct out_buf *b)
{
    struct tag t;

    while (p < end) {
        if (next_tag(p, &t, NULL, 0) != 1 || t.start >= end)
            return out_literal(b, p, (size_t)(end - p), esc);
        if (!out_literal(b, p, (size_t)(t.start - p), esc))
            return false;
        if (t.kind == TAG_VAR) {
            const char *v = lookup(vars, section, item, t.name);
            if (v != NULL && !out_escaped(b, v, strlen(v), esc))
                return false;
            p = t.end;
        } else {
            /* TAG_OPEN: validate() guarantees a matching close and no nesting. */
            struct tag close;
            size_t count = 0;
            close.end = t.end;
            do {
                if (next_tag(close.end, &close, NULL, 0) != 1)
                    return false; /* not reached after validate() */
            } while (close.kind != TAG_CLOSE);
            if (vars != NULL && vars->count != NULL)
                count = vars->count(vars->ctx, t.name);
            for (size_t i = 0; i < count; i++) {
                if (!render_span(t.end, close.start, esc, vars, t.name, i, b))
                    return false;
            }
            p = close.end;
        }
    }
    return true;
}

int template_render(const char *tmpl, enum template_escape esc, const struct template_vars *vars,
                    char **out, char *err, size_t errlen)
{
    struct out_buf b = {0};
    int rc = -1;

    *out = NULL;
    if (tmpl == NULL) {
        set_err(err, errlen, "no template");
        goto out;
    }
    if (validate(tmpl, err, errlen) != 0)
        goto out;
    if (!out_put(&b, "", 0) || !render_span(tmpl, tmpl + strlen(tmpl), esc, vars, NULL, 0, &b)) {
        if (b.too_large)
            set_err(err, errlen, "rendered output exceeds %u bytes", TEMPLATE_OUT_MAX);
        else
            set_err(err, errlen, "out of memory");
        goto out;
    }
    *out = b.data; /* the caller frees */
    b.data = NULL;
    rc = 0;
out:
    free(b.data);
    return rc;
}
