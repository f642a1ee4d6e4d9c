/* notify_env: time and message ids, from outside the interactors. */
#ifndef PUSH_EMAIL_REPOSITORIES_NOTIFY_ENV_H
#define PUSH_EMAIL_REPOSITORIES_NOTIFY_ENV_H

#include <stddef.h>
#include <stdint.h>

struct notify_env_ops {
    int64_t (*now_s)(void *self);
    /* A Message-ID "<hex@domain>" derived from key alone (same key, same id), so that a
     * re-sent email carries the id of the first. */
    void (*message_id)(void *self, const char *key, char *out, size_t outlen);
};

struct notify_env {
    const struct notify_env_ops *ops;
    void *self;
};

#endif
