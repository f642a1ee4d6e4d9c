/* template: a small mustache-like renderer for email templates kept in files. */
#ifndef PUSH_EMAIL_ENTITIES_TEMPLATE_H
#define PUSH_EMAIL_ENTITIES_TEMPLATE_H

#include <stddef.h>

enum template_escape { TEMPLATE_TEXT, TEMPLATE_HTML, TEMPLATE_HEADER };

/* A variable lookup: returns the value of name, or NULL when unknown. */
struct template_vars {
    const char *(*get)(void *ctx, const char *name);
    /* Sections: {{#changes}}...{{/changes}} repeat per item; item_get reads fields of item i
     * ({{label}}, {{old}}, {{new}}). NULL when the template has no sections. */
    size_t (*count)(void *ctx, const char *section);
    const char *(*item_get)(void *ctx, const char *section, size_t i, const char *name);
    void *ctx;
};

/* Renders tmpl: {{name}} is replaced by the value, escaped for the context. In every
 * context C1 controls (U+0080..U+009F) and bidi controls (U+202A..U+202E, U+2066..U+2069)
 * are removed from values; HEADER: C0 controls and DEL removed (from template text too);
 * TEXT and HTML: C0 controls but tab and line breaks removed, and DEL; CRLF and CR become
 * LF; TEXT: each line break inside a value is followed by four spaces, so that its next
 * lines stay indented under it; HTML: & < > " ' as entities. Unknown names render empty.
 * *out is malloc'd (caller frees). Returns 0, or -1 on malformed template or no memory,
 * with err filled. */
int template_render(const char *tmpl, enum template_escape esc, const struct template_vars *vars,
                    char **out, char *err, size_t errlen);

#endif
