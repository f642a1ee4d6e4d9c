/* file_templates: the template_store port on files <dir>/<locale>/<name>, all loaded into
 * memory at start. */
#ifndef PUSH_EMAIL_DATASOURCES_FILE_TEMPLATES_H
#define PUSH_EMAIL_DATASOURCES_FILE_TEMPLATES_H

#include <stddef.h>

#include "repositories/template_store.h"

#define FILE_TEMPLATES_MAX_BYTES (64 * 1024)

struct file_templates;

/* Loads every <dir>/<locale>/<name>. A locale directory is named like a BCP 47 tag
 * ("en", "pt-BR", "es", "zh-Hant-TW"); other directories are an error, plain files in dir
 * (README.md) are ignored. A template name is [A-Za-z0-9_.-] and does not start with '.';
 * hidden files and editor backups ("x~") are skipped. A file larger than
 * FILE_TEMPLATES_MAX_BYTES, not valid UTF-8 or holding a NUL byte is an error, and so is a
 * dir without an "en" locale (the fallback of every other). NULL with err naming the file
 * on failure. Free with file_templates_free. */
struct file_templates *file_templates_new(const char *dir, char *err, size_t errlen);
void file_templates_free(struct file_templates *t);

/* Number of templates loaded (all locales). */
size_t file_templates_count(const struct file_templates *t);

/* The locales loaded, sorted, into out (at most max; the strings live as long as t).
 * Returns how many there are. */
size_t file_templates_locales(const struct file_templates *t, const char **out, size_t max);

/* The port, valid while t lives. get never touches the disk and takes no lock. */
struct template_store file_templates_port(struct file_templates *t);

#endif
