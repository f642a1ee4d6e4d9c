/* Unit tests of the template renderer: variables, sections, escaping per context, hostile
 * values, malformed templates and the output bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "entities/template.h"

struct item {
    const char *label, *old_value, *new_value;
};

struct fixture {
    const char *const *names; /* name, value, name, value, ..., NULL */
    const struct item *items;
    size_t n_items;
};

static const char *fx_get(void *ctx, const char *name)
{
    const struct fixture *f = ctx;
    for (const char *const *p = f->names; p != NULL && *p != NULL; p += 2) {
        if (strcmp(p[0], name) == 0)
            return p[1];
    }
    return NULL;
}

static size_t fx_count(void *ctx, const char *section)
{
    const struct fixture *f = ctx;
    return strcmp(section, "changes") == 0 ? f->n_items : 0;
}

static const char *fx_item_get(void *ctx, const char *section, size_t i, const char *name)
{
    const struct fixture *f = ctx;
    if (strcmp(section, "changes") != 0 || i >= f->n_items)
        return NULL;
    if (strcmp(name, "label") == 0)
        return f->items[i].label;
    if (strcmp(name, "old") == 0)
        return f->items[i].old_value;
    if (strcmp(name, "new") == 0)
        return f->items[i].new_value;
    return NULL;
}

static const char *const NAMES[] = {
    "username",
    "ana",
    "full_name",
    "Ana <b>Lima</b> & \"Co\" 'x'",
    "evil",
    "x\r\nBcc: y@z",
    "script",
    "<script>alert(1)</script>",
    "tag",
    "{{username}}{{#changes}}",
    "ctl",
    "a\tb\x01"
    "c\x7f"
    "d",
    /* ESC (a terminal escape), CSI as a C1 control (U+009B), RLO (U+202E), LRI (U+2066),
     * PDF (U+202C), PDI (U+2069), NEL (U+0085), DEL, a lone CR: none may reach a body. */
    "unseen",
    "a\x1b[31mb\xc2\x9b"
    "c\xe2\x80\xae"
    "d\xe2\x81\xa6"
    "e\xe2\x80\xac"
    "f\xe2\x81\xa9"
    "g\xc2\x85"
    "h\x7fi\x01j",
    /* Neighbours of those controls that are text and stay: U+00A0, U+00E9, U+202F, U+2065. */
    "near",
    "\xc2\xa0\xc3\xa9\xe2\x80\xaf\xe2\x81\xa5",
    "multi",
    "1 Main St\nApt 2\r\nTown\rEnd: {{x}}\n\nLast",
    /* U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR: line breaks to some readers */
    "seps",
    "x\xe2\x80\xa8* Label\xe2\x80\xa9  Before: evil",
    NULL,
};
static const struct item ITEMS[] = {
    {"Full name", "Ana", "Ana <Lima>"},
    {"Address", "", "Rua & Cia"},
};

static struct fixture FX = {NAMES, ITEMS, 2};

static const struct template_vars VARS = {fx_get, fx_count, fx_item_get, &FX};

/* Renders and returns the malloc'd result (the test frees), failing the test on error. */
static char *render_ok(const char *tmpl, enum template_escape esc)
{
    char *out = NULL;
    char err[128] = "";
    int rc = template_render(tmpl, esc, &VARS, &out, err, sizeof err);
    if (rc != 0)
        fail_msg("render of '%s' failed: %s", tmpl, err);
    assert_non_null(out);
    return out;
}

static void expect(const char *tmpl, enum template_escape esc, const char *want)
{
    char *out = render_ok(tmpl, esc);
    assert_string_equal(out, want);
    free(out);
}

static void expect_malformed(const char *tmpl)
{
    char *out = (char *)1;
    char err[128] = "";
    assert_int_equal(template_render(tmpl, TEMPLATE_TEXT, &VARS, &out, err, sizeof err), -1);
    assert_null(out);
    assert_true(err[0] != '\0');
}

static void variables_are_replaced(void **state)
{
    (void)state;
    expect("Hello {{username}}!", TEMPLATE_TEXT, "Hello ana!");
    expect("{{ username }}/{{username}}", TEMPLATE_TEXT, "ana/ana");
    expect("no tags at all", TEMPLATE_TEXT, "no tags at all");
    expect("", TEMPLATE_TEXT, "");
    expect("single { and } and }} alone", TEMPLATE_TEXT, "single { and } and }} alone");
}

static void unknown_variables_render_empty(void **state)
{
    (void)state;
    expect("[{{nope}}]", TEMPLATE_TEXT, "[]");
    expect("[{{nope}}]", TEMPLATE_HTML, "[]");
    char *out = NULL;
    char err[64];
    assert_int_equal(template_render("a{{x}}b", TEMPLATE_TEXT, NULL, &out, err, sizeof err), 0);
    assert_string_equal(out, "ab");
    free(out);
}

static void html_escapes_every_special(void **state)
{
    (void)state;
    expect("<p>{{full_name}}</p>", TEMPLATE_HTML,
           "<p>Ana &lt;b&gt;Lima&lt;/b&gt; &amp; &quot;Co&quot; &#39;x&#39;</p>");
    expect("{{script}}", TEMPLATE_HTML, "&lt;script&gt;alert(1)&lt;/script&gt;");
    /* Template text itself is markup: not escaped. */
    expect("<b>&amp;</b>", TEMPLATE_HTML, "<b>&amp;</b>");
}

static void text_keeps_values_as_they_are(void **state)
{
    (void)state;
    expect("{{full_name}}", TEMPLATE_TEXT, "Ana <b>Lima</b> & \"Co\" 'x'");
    expect("{{evil}}", TEMPLATE_TEXT, "x\n    Bcc: y@z");
    /* A value that looks like a tag is output, never expanded. */
    expect("{{tag}}", TEMPLATE_TEXT, "{{username}}{{#changes}}");
}

/* Terminal escapes, C1 controls and bidi overrides in a value would reorder or hide what
 * the person reads: dropped from every part; tabs and line breaks stay in the bodies. */
static void bodies_drop_control_and_bidi_characters(void **state)
{
    (void)state;
    expect("[{{unseen}}]", TEMPLATE_TEXT, "[a[31mbcdefghij]");
    expect("[{{unseen}}]", TEMPLATE_HTML, "[a[31mbcdefghij]");
    expect("[{{unseen}}]", TEMPLATE_HEADER, "[a[31mbcdefghij]");
    expect("{{ctl}}", TEMPLATE_TEXT, "a\tbcd");
    expect("{{ctl}}", TEMPLATE_HTML, "a\tbcd");
    /* Their neighbours in the same UTF-8 blocks are text, and stay. */
    expect("{{near}}", TEMPLATE_TEXT, "\xc2\xa0\xc3\xa9\xe2\x80\xaf\xe2\x81\xa5");
    expect("{{near}}", TEMPLATE_HTML, "\xc2\xa0\xc3\xa9\xe2\x80\xaf\xe2\x81\xa5");
    expect("{{near}}", TEMPLATE_HEADER, "\xc2\xa0\xc3\xa9\xe2\x80\xaf\xe2\x81\xa5");
    /* Template text is ours and is left alone. */
    expect("\x1b", TEMPLATE_TEXT, "\x1b");
}

/* A value of several lines (an address) cannot pass for template text in the text part:
 * its next lines are indented under it. CRLF and a lone CR are line breaks too (the MIME
 * writer would make them CRLF), so they are indented the same. HTML keeps the breaks. */
static void text_indents_the_next_lines_of_a_value(void **state)
{
    (void)state;
    expect("  Before: {{multi}}\nThanks", TEMPLATE_TEXT,
           "  Before: 1 Main St\n    Apt 2\n    Town\n    End: {{x}}\n    \n    Last\nThanks");
    expect("<td>{{multi}}</td>", TEMPLATE_HTML,
           "<td>1 Main St\nApt 2\nTown\nEnd: {{x}}\n\nLast</td>");
    expect("{{multi}}", TEMPLATE_HEADER, "1 Main StApt 2TownEnd: {{x}}Last");
    /* The line and paragraph separators are line breaks like the others. */
    expect("{{seps}}", TEMPLATE_TEXT, "x\n    * Label\n      Before: evil");
    expect("{{seps}}", TEMPLATE_HTML, "x\n* Label\n  Before: evil");
    expect("{{seps}}", TEMPLATE_HEADER, "x* Label  Before: evil");
}

static void header_removes_controls(void **state)
{
    (void)state;
    expect("Hi {{evil}}", TEMPLATE_HEADER, "Hi xBcc: y@z");
    expect("{{ctl}}", TEMPLATE_HEADER, "abcd");
    /* A subject file's trailing newline goes too. */
    expect("Welcome, {{username}}\n", TEMPLATE_HEADER, "Welcome, ana");
    /* No escaping of markup in a header. */
    expect("{{script}}", TEMPLATE_HEADER, "<script>alert(1)</script>");
    char *out = render_ok("{{evil}}{{ctl}}\r\n", TEMPLATE_HEADER);
    for (const char *p = out; *p != '\0'; p++)
        assert_false((unsigned char)*p < 0x20 || *p == 0x7f);
    free(out);
}

static void sections_repeat_per_item(void **state)
{
    (void)state;
    expect("{{#changes}}- {{label}}: {{old}} -> {{new}}\n{{/changes}}", TEMPLATE_TEXT,
           "- Full name: Ana -> Ana <Lima>\n- Address:  -> Rua & Cia\n");
    expect("<ul>{{#changes}}<li>{{label}}: {{new}}</li>{{/changes}}</ul>", TEMPLATE_HTML,
           "<ul><li>Full name: Ana &lt;Lima&gt;</li><li>Address: Rua &amp; Cia</li></ul>");
    /* Outer variables are visible inside a section. */
    expect("{{#changes}}{{username}};{{/changes}}", TEMPLATE_TEXT, "ana;ana;");
    /* A section nobody knows renders nothing. */
    expect("a{{#other}}X{{/other}}b", TEMPLATE_TEXT, "ab");
    /* Two sections one after the other. */
    expect("{{#changes}}1{{/changes}}{{#changes}}2{{/changes}}", TEMPLATE_TEXT, "1122");
}

static void section_without_count_renders_nothing(void **state)
{
    struct template_vars v = {fx_get, NULL, NULL, &FX};
    char *out = NULL;
    char err[64];
    (void)state;
    assert_int_equal(template_render("a{{#changes}}{{label}}{{/changes}}b", TEMPLATE_TEXT, &v, &out,
                                     err, sizeof err),
                     0);
    assert_string_equal(out, "ab");
    free(out);
}

static void malformed_templates_fail(void **state)
{
    (void)state;
    expect_malformed("Hello {{username");
    expect_malformed("Hello {{");
    expect_malformed("{{}}");
    expect_malformed("{{ }}");
    expect_malformed("{{user name}}");
    expect_malformed("{{{username}}}");
    expect_malformed("{{#changes}}never closed");
    expect_malformed("{{/changes}}");
    expect_malformed("{{#changes}}x{{/other}}");
    expect_malformed("{{#changes}}{{#changes}}x{{/changes}}{{/changes}}");
    expect_malformed("{{#a}}{{#b}}{{/b}}{{/a}}");
    /* Malformed even where a section repeats zero times. */
    expect_malformed("{{#other}}{{oops{{/other}}");
}

static void output_is_bounded(void **state)
{
    size_t n = 300 * 1024;
    char *big = malloc(n + 1);
    const char *names[] = {"big", big, NULL};
    struct item items[8];
    struct fixture fx = {names, items, 8};
    struct template_vars v = {fx_get, fx_count, fx_item_get, &fx};
    char *out = (char *)1;
    char err[128] = "";
    (void)state;

    assert_non_null(big);
    memset(big, '&', n);
    big[n] = '\0';
    for (size_t i = 0; i < 8; i++)
        items[i] = (struct item){"l", "o", "n"};
    /* 8 items x 300 KiB: 2.4 MiB, over the bound. */
    assert_int_equal(template_render("{{#changes}}{{big}}{{/changes}}", TEMPLATE_TEXT, &v, &out,
                                     err, sizeof err),
                     -1);
    assert_null(out);
    assert_non_null(strstr(err, "exceeds"));
    /* HTML escaping grows 300 KiB of '&' to 1.5 MiB: over the bound too. */
    assert_int_equal(template_render("{{big}}", TEMPLATE_HTML, &v, &out, err, sizeof err), -1);
    /* The same value once in text fits. */
    assert_int_equal(template_render("{{big}}", TEMPLATE_TEXT, &v, &out, err, sizeof err), 0);
    assert_int_equal(strlen(out), n);
    free(out);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(variables_are_replaced),
        cmocka_unit_test(unknown_variables_render_empty),
        cmocka_unit_test(html_escapes_every_special),
        cmocka_unit_test(text_keeps_values_as_they_are),
        cmocka_unit_test(header_removes_controls),
        cmocka_unit_test(bodies_drop_control_and_bidi_characters),
        cmocka_unit_test(text_indents_the_next_lines_of_a_value),
        cmocka_unit_test(sections_repeat_per_item),
        cmocka_unit_test(section_without_count_renders_nothing),
        cmocka_unit_test(malformed_templates_fail),
        cmocka_unit_test(output_is_bounded),
    };
    return cmocka_run_group_tests_name("template", tests, NULL, NULL);
}
