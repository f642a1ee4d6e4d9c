/* file_templates: the template_store port on files <dir>/<locale>/<name>.
 *
 * Everything is read once, at construction, into one sorted array; after that the store
 * is immutable, so get is a binary search with no lock and no I/O, safe from any thread.
 * A bad file stops the start with an error naming it, rather than an email going out
 * half-rendered later. */
#include "datasources/file_templates.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shared/config.h"

#define NAME_MAX_LEN 128

struct entry {
    char *locale; /* owned */
    char *name;   /* owned */
    char *text;   /* owned, NUL-terminated */
};

struct file_templates {
    struct entry *e; /* sorted by (locale, name) */
    size_t n, cap;
};

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = strcmp(x->locale, y->locale);
    return c != 0 ? c : strcmp(x->name, y->name);
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* A BCP 47 shape: 2-3 letters, then subtags of 1-8 letters or digits after '-'. */
static int locale_ok(const char *s)
{
    size_t i = 0, len;

    while (is_alpha(s[i])) {
        i++;
    }
    if (i < 2 || i > 3) {
        return 0;
    }
    while (s[i] == '-') {
        i++;
        len = 0;
        while (is_alpha(s[i]) || is_digit(s[i])) {
            i++;
            len++;
        }
        if (len < 1 || len > 8) {
            return 0;
        }
    }
    return s[i] == '\0' && i <= 35;
}

static int name_ok(const char *s)
{
    size_t n = 0;

    if (s[0] == '.' || s[0] == '\0') {
        return 0;
    }
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (!(is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '-')) {
            return 0;
        }
    }
    return n <= NAME_MAX_LEN;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF, no
 * NUL (texts are C strings). Offset of the first bad byte, or len when all is well. */
static size_t utf8_check(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        uint32_t cp, min;

        if (c == 0) {
            return i;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0) {
            need = 1;
            cp = c & 0x1fu;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            need = 2;
            cp = c & 0x0fu;
            min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            need = 3;
            cp = c & 0x07u;
            min = 0x10000;
        } else {
            return i;
        }
        if (len - i <= need) {
            return i;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return i;
            }
            cp = (cp << 6) | (s[i + k] & 0x3fu);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return i;
        }
        i += need + 1;
    }
    return len;
}

/* Reads path into a NUL-terminated buffer (caller frees). Errors name the file. */
static char *read_template(const char *path, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t n = 0, bad;
    char why[512];

    if (config_read_file(path, FILE_TEMPLATES_MAX_BYTES, &buf, &n, why, sizeof why) != 0) {
        snprintf(err, errlen, "template %s", why);
        return NULL;
    }
    bad = utf8_check((const unsigned char *)buf, n);
    if (bad != n) {
        snprintf(err, errlen, "template %s: not valid UTF-8 (byte %zu)", path, bad);
        free(buf);
        return NULL;
    }
    return buf;
}

static int add_entry(struct file_templates *t, const char *locale, const char *name, char *text)
{
    struct entry *e;

    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct entry *ne = realloc(t->e, ncap * sizeof *ne);
        if (ne == NULL) {
            return -1;
        }
        t->e = ne;
        t->cap = ncap;
    }
    e = &t->e[t->n];
    e->locale = strdup(locale);
    e->name = strdup(name);
    if (e->locale == NULL || e->name == NULL) {
        free(e->locale);
        free(e->name);
        return -1;
    }
    e->text = text; /* taken */
    t->n++;
    return 0;
}

static int is_dir(const char *path, int *dir)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        return -1;
    }
    *dir = S_ISDIR(st.st_mode);
    return S_ISDIR(st.st_mode) || S_ISREG(st.st_mode) ? 0 : 1;
}

/* Loads the files of dir/locale. */
static int load_locale(struct file_templates *t, const char *dir, const char *locale, char *err,
                       size_t errlen)
{
    char path[4096];
    DIR *d = NULL;
    struct dirent *de;
    int rc = -1;

    snprintf(path, sizeof path, "%s/%s", dir, locale);
    d = opendir(path);
    if (d == NULL) {
        snprintf(err, errlen, "templates dir %s: %s", path, strerror(errno));
        goto out;
    }
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        int sub = 0;
        char *text;

        if (name[0] == '.' || (len > 0 && name[len - 1] == '~')) {
            continue;
        }
        if ((size_t)snprintf(path, sizeof path, "%s/%s/%s", dir, locale, name) >= sizeof path) {
            snprintf(err, errlen, "template path too long: %s/%s", locale, name);
            goto out;
        }
        if (!name_ok(name)) {
            snprintf(err, errlen, "template %s: name is not [A-Za-z0-9_.-]", path);
            goto out;
        }
        if (is_dir(path, &sub) != 0 || sub) {
            snprintf(err, errlen, "template %s: not a regular file", path);
            goto out;
        }
        text = read_template(path, err, errlen);
        if (text == NULL) {
            goto out;
        }
        if (add_entry(t, locale, name, text) != 0) {
            free(text);
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    if (d != NULL) {
        closedir(d);
    }
    return rc;
}

/* Caller frees the result with file_templates_free. */
struct file_templates *file_templates_new(const char *dir, char *err, size_t errlen)
{
    struct file_templates *t = NULL;
    DIR *d = NULL;
    struct dirent *de;
    int have_en = 0;
    int ok = 0;
    char path[4096];

    t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    d = opendir(dir);
    if (d == NULL) {
        snprintf(err, errlen, "templates dir %s: %s", dir, strerror(errno));
        goto out;
    }
    while ((de = readdir(d)) != NULL) {
        int sub = 0;

        if (de->d_name[0] == '.') {
            continue;
        }
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= sizeof path) {
            snprintf(err, errlen, "templates path too long: %s", de->d_name);
            goto out;
        }
        if (is_dir(path, &sub) < 0 || !sub) {
            continue; /* README.md and the like */
        }
        if (!locale_ok(de->d_name)) {
            snprintf(err, errlen, "templates dir %s: not a locale name (like en, pt-BR)", path);
            goto out;
        }
        if (load_locale(t, dir, de->d_name, err, errlen) != 0) {
            goto out;
        }
        have_en |= strcmp(de->d_name, "en") == 0;
    }
    if (!have_en) {
        snprintf(err, errlen, "templates dir %s has no \"en\" locale (the fallback)", dir);
        goto out;
    }
    if (t->n > 1) {
        qsort(t->e, t->n, sizeof *t->e, entry_cmp);
    }
    ok = 1;
out:
    if (d != NULL) {
        closedir(d);
    }
    if (!ok) {
        file_templates_free(t);
        t = NULL;
    }
    return t;
}

void file_templates_free(struct file_templates *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = t->n; i-- > 0;) {
        free(t->e[i].text);
        free(t->e[i].name);
        free(t->e[i].locale);
    }
    free(t->e);
    free(t);
}

size_t file_templates_count(const struct file_templates *t)
{
    return t->n;
}

size_t file_templates_locales(const struct file_templates *t, const char **out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (i > 0 && strcmp(t->e[i].locale, t->e[i - 1].locale) == 0)
            continue;
        if (k < max)
            out[k] = t->e[i].locale;
        k++;
    }
    return k;
}

static const char *templates_get(void *self, const char *locale, const char *name)
{
    const struct file_templates *t = self;
    struct entry key = {.locale = (char *)(uintptr_t)locale, .name = (char *)(uintptr_t)name};
    const struct entry *e;

    if (locale == NULL || name == NULL || t->n == 0) {
        return NULL;
    }
    e = bsearch(&key, t->e, t->n, sizeof *t->e, entry_cmp);
    return e != NULL ? e->text : NULL;
}

static const struct template_store_ops file_templates_ops = {.get = templates_get};

struct template_store file_templates_port(struct file_templates *t)
{
    struct template_store port = {.ops = &file_templates_ops, .self = t};
    return port;
}
