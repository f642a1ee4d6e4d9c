/* template_store: the port that gives the email templates of a locale. */
#ifndef PUSH_EMAIL_REPOSITORIES_TEMPLATE_STORE_H
#define PUSH_EMAIL_REPOSITORIES_TEMPLATE_STORE_H

struct template_store_ops {
    /* The template `name` ("welcome.subject", "welcome.txt", "welcome.html", ...,
     * "fields" = the field labels, one "name=Label" per line) of exactly `locale`
     * ("en", "pt-BR", "es"), or NULL when that locale has none. The text is owned by the
     * store and lives as long as it. Thread-safe. */
    const char *(*get)(void *self, const char *locale, const char *name);
};

struct template_store {
    const struct template_store_ops *ops;
    void *self;
};

#endif
