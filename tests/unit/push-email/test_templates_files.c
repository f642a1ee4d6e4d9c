/* Keeps the template files honest: every file of every locale loads, renders in its
 * context with hostile sample values, leaves no tag behind and escapes what it must; every
 * fields file labels every field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "entities/notification.h"
#include "entities/template.h"

#ifndef PUSH_EMAIL_TEMPLATES_DIR
#error "PUSH_EMAIL_TEMPLATES_DIR must name services/push-email/templates"
#endif

static const char *const LOCALES[] = {"en", "pt-BR", "es"};
#define N_LOCALES (sizeof LOCALES / sizeof LOCALES[0])

/* Reads a whole file; returns a malloc'd NUL-terminated string (caller frees) or NULL. */
static char *read_file(const char *locale, const char *name)
{
    char path[512];
    FILE *f;
    char *data = NULL;
    long size;

    snprintf(path, sizeof path, "%s/%s/%s", PUSH_EMAIL_TEMPLATES_DIR, locale, name);
    f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    data = malloc((size_t)size + 1);
    if (data == NULL)
        goto out;
    if (fread(data, 1, (size_t)size, f) != (size_t)size) {
        free(data);
        data = NULL;
        goto out;
    }
    data[size] = '\0';
out:
    fclose(f);
    return data;
}

static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p != '\0') {
        size_t n = *p < 0x80             ? 1
                   : (*p & 0xe0) == 0xc0 ? 2
                   : (*p & 0xf0) == 0xe0 ? 3
                   : (*p & 0xf8) == 0xf0 ? 4
                                         : 0;
        if (n == 0 || (n == 2 && *p < 0xc2))
            return 0;
        for (size_t i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return 0;
        }
        p += n;
    }
    return 1;
}

/* Hostile sample values: markup, a header injection and a tag-looking value. */
static const char *sample_get(void *ctx, const char *name)
{
    (void)ctx;
    if (strcmp(name, "username") == 0)
        return "ana.lima";
    if (strcmp(name, "full_name") == 0)
        return "Ana <script>alert(1)</script>\r\nBcc: y@z";
    if (strcmp(name, "email") == 0 || strcmp(name, "old_email") == 0)
        return "ana@example.com";
    if (strcmp(name, "new_email") == 0)
        return "ana.new@example.org";
    if (strcmp(name, "new_email_masked") == 0)
        return "a***@example.org";
    if (strcmp(name, "app_name") == 0)
        return "cdc-notify";
    return NULL;
}

static size_t sample_count(void *ctx, const char *section)
{
    (void)ctx;
    return strcmp(section, "changes") == 0 ? 2 : 0;
}

static const char *sample_item(void *ctx, const char *section, size_t i, const char *name)
{
    (void)ctx;
    (void)section;
    if (strcmp(name, "label") == 0)
        return i == 0 ? "LABEL-ONE" : "LABEL-TWO";
    if (strcmp(name, "old") == 0)
        return "old <b>&</b>";
    if (strcmp(name, "new") == 0)
        return "new \"value\"";
    return NULL;
}

static const struct template_vars SAMPLE = {sample_get, sample_count, sample_item, NULL};

/* Whether out shows the sample's old (which 0) or new (1) value, as esc writes it. */
static int has_value(const char *out, enum template_escape esc, int which)
{
    static const char *const raw[2] = {"old <b>&</b>", "new \"value\""};
    static const char *const html[2] = {"old &lt;b&gt;&amp;&lt;/b&gt;", "new &quot;value&quot;"};
    return strstr(out, esc == TEMPLATE_HTML ? html[which] : raw[which]) != NULL;
}

static int lists_changes(enum notification_kind k)
{
    return k == NOTIFY_PROFILE_CHANGED || k == NOTIFY_EMAIL_CHANGED_OLD ||
           k == NOTIFY_EMAIL_CHANGED_NEW;
}

static void check_one(const char *locale, enum notification_kind k, const char *ext,
                      enum template_escape esc)
{
    char name[64], err[128] = "";
    char *tmpl, *out = NULL;

    snprintf(name, sizeof name, "%s.%s", notification_kind_name(k), ext);
    tmpl = read_file(locale, name);
    if (tmpl == NULL)
        fail_msg("missing template %s/%s", locale, name);
    if (!utf8_valid(tmpl))
        fail_msg("%s/%s is not UTF-8", locale, name);
    if (template_render(tmpl, esc, &SAMPLE, &out, err, sizeof err) != 0)
        fail_msg("%s/%s: %s", locale, name, err);
    if (strstr(out, "{{") != NULL || strstr(out, "}}") != NULL)
        fail_msg("%s/%s: a tag is left: %s", locale, name, out);
    if (strlen(out) < 10)
        fail_msg("%s/%s renders almost nothing", locale, name);
    if (strstr(out, "cdc-notify") == NULL)
        fail_msg("%s/%s never names the app", locale, name);
    if (esc == TEMPLATE_HEADER) {
        for (const char *p = out; *p != '\0'; p++) {
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                fail_msg("%s/%s: a control in a header", locale, name);
        }
        if (strstr(tmpl, "\n") != NULL && strstr(tmpl, "\n") != tmpl + strlen(tmpl) - 1)
            fail_msg("%s/%s: a subject is one line", locale, name);
    } else {
        /* The bodies address the person and, where they must, list the changes. */
        if (strstr(out, "Ana ") == NULL)
            fail_msg("%s/%s does not address the person", locale, name);
        if (lists_changes(k) &&
            (strstr(out, "LABEL-ONE") == NULL || strstr(out, "LABEL-TWO") == NULL))
            fail_msg("%s/%s does not list the changes", locale, name);
        if (k == NOTIFY_EMAIL_CHANGED_NEW && strstr(out, "ana.new@example.org") == NULL)
            fail_msg("%s/%s does not name the new address", locale, name);
        if (k == NOTIFY_EMAIL_CHANGED_NEW && (!has_value(out, esc, 0) || !has_value(out, esc, 1)))
            fail_msg("%s/%s does not show the old and new values", locale, name);
        if (k == NOTIFY_EMAIL_CHANGED_OLD && strstr(out, "a***@example.org") == NULL)
            fail_msg("%s/%s does not name the new address masked", locale, name);
    }
    /* The old address may not be the owner's any more: it learns neither the new address
     * nor any value, old or new, not even in its subject. */
    if (k == NOTIFY_EMAIL_CHANGED_OLD) {
        if (strstr(out, "ana.new") != NULL)
            fail_msg("%s/%s shows the new address unmasked", locale, name);
        if (has_value(out, esc, 0) || has_value(out, esc, 1))
            fail_msg("%s/%s shows a changed value", locale, name);
    }
    if (esc == TEMPLATE_HTML) {
        if (strstr(out, "<script>") != NULL || strstr(out, "<b>&</b>") != NULL)
            fail_msg("%s/%s: a value is not escaped", locale, name);
        if (strstr(out, "<!DOCTYPE html>") != out || strstr(out, "</html>") == NULL)
            fail_msg("%s/%s is not a whole HTML document", locale, name);
        if (strstr(out, "http://") != NULL || strstr(out, "https://") != NULL ||
            strstr(out, "src=") != NULL)
            fail_msg("%s/%s loads an external resource", locale, name);
    }
    free(out);
    free(tmpl);
}

static void every_template_renders(void **state)
{
    (void)state;
    for (size_t l = 0; l < N_LOCALES; l++) {
        for (int k = 0; k < NOTIFY_KINDS; k++) {
            check_one(LOCALES[l], (enum notification_kind)k, "subject", TEMPLATE_HEADER);
            check_one(LOCALES[l], (enum notification_kind)k, "txt", TEMPLATE_TEXT);
            check_one(LOCALES[l], (enum notification_kind)k, "html", TEMPLATE_HTML);
        }
    }
}

/* The label of key in a fields file, or NULL; points into text. */
static const char *field_label(char *text, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    for (char *line = text; line != NULL && *line != '\0';) {
        char *nl = strchr(line, '\n');
        size_t n = nl != NULL ? (size_t)(nl - line) : strlen(line);
        if (n > klen && strncmp(line, key, klen) == 0 && line[klen] == '=') {
            *len = n - klen - 1;
            return line + klen + 1;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    return NULL;
}

static void every_fields_file_labels_every_field(void **state)
{
    (void)state;
    for (size_t l = 0; l < N_LOCALES; l++) {
        char *text = read_file(LOCALES[l], "fields");
        size_t len = 0;
        if (text == NULL)
            fail_msg("missing %s/fields", LOCALES[l]);
        assert_true(utf8_valid(text));
        for (int f = 0; f < UF_COUNT; f++) {
            const char *name = user_field_name((enum user_field_id)f);
            const char *label = field_label(text, name, &len);
            if (label == NULL || len == 0)
                fail_msg("%s/fields has no label for %s", LOCALES[l], name);
        }
        if (field_label(text, "not_set", &len) == NULL || len == 0)
            fail_msg("%s/fields has no not_set label", LOCALES[l]);
        free(text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_template_renders),
        cmocka_unit_test(every_fields_file_labels_every_field),
    };
    return cmocka_run_group_tests_name("templates_files", tests, NULL, NULL);
}
