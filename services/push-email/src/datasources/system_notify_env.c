/* system_notify_env: the notify_env port. The time is time(NULL); a Message-ID is
 * "<" + hex(BLAKE2b-128(key)) + "@" + domain + ">", so that a re-sent email carries the
 * id of the first one and a mail client can tell the two are the same message. */
#include "datasources/system_notify_env.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ID_BYTES 16

struct system_notify_env {
    char *domain; /* owned */
};

static int64_t env_now_s(void *self)
{
    (void)self;
    return (int64_t)time(NULL);
}

static void env_message_id(void *self, const char *key, char *out, size_t outlen)
{
    struct system_notify_env *e = self;
    unsigned char h[ID_BYTES];
    char hex[ID_BYTES * 2 + 1];

    crypto_generichash(h, sizeof h, (const unsigned char *)key, strlen(key), NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    if (outlen > 0) {
        snprintf(out, outlen, "<%s@%s>", hex, e->domain);
    }
}

static const struct notify_env_ops system_notify_env_ops = {
    .now_s = env_now_s,
    .message_id = env_message_id,
};

/* A host name: dot-separated labels of 1 to 63 letters, digits and '-', no label starting
 * or ending with '-', at most DOMAIN_MAX characters in all (so "<32 hex@domain>" stays
 * within the notifier's Message-ID buffer and RFC 5322's line length). */
#define DOMAIN_MAX 120
static int domain_ok(const char *d)
{
    size_t n = strlen(d), label = 0;

    if (n == 0 || n > DOMAIN_MAX) {
        return 0;
    }
    for (size_t i = 0; i <= n; i++) {
        char c = d[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || d[i - 1] == '-') {
                return 0;
            }
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c == '-' && label > 0)) {
            label++;
        } else {
            return 0;
        }
    }
    return 1;
}

/* Caller frees the result with system_notify_env_free. */
struct system_notify_env *system_notify_env_new(const char *domain)
{
    struct system_notify_env *e = NULL;
    const char *at;

    if (domain == NULL || sodium_init() < 0) {
        return NULL;
    }
    at = strrchr(domain, '@');
    if (at != NULL) {
        domain = at + 1;
    }
    if (!domain_ok(domain)) {
        return NULL;
    }
    e = calloc(1, sizeof *e);
    if (e == NULL) {
        return NULL;
    }
    e->domain = strdup(domain);
    if (e->domain == NULL) {
        free(e);
        return NULL;
    }
    return e;
}

void system_notify_env_free(struct system_notify_env *e)
{
    if (e == NULL) {
        return;
    }
    free(e->domain);
    free(e);
}

struct notify_env system_notify_env_port(struct system_notify_env *e)
{
    struct notify_env port = {.ops = &system_notify_env_ops, .self = e};
    return port;
}
