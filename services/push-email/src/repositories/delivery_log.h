/* delivery_log: the port that remembers every intended email by its dedupe key, so that
 * a re-delivered event never mails a person twice. */
#ifndef PUSH_EMAIL_REPOSITORIES_DELIVERY_LOG_H
#define PUSH_EMAIL_REPOSITORIES_DELIVERY_LOG_H

#include <stddef.h>

enum delivery_state {
    DELIVERY_PENDING, /* recorded, not yet sent (new, or earlier attempts failed transiently) */
    DELIVERY_SENT,
    DELIVERY_FAILED, /* finally failed (permanent error) */
};

enum delivery_log_err {
    DELIVERY_LOG_OK = 0,
    DELIVERY_LOG_UNAVAILABLE, /* the store cannot be reached now: retry later */
    DELIVERY_LOG_INTERNAL,
};

struct delivery_log_ops {
    /* Records key as pending unless it exists, and tells its state. kind and recipient
     * are stored beside the key for people reading the log. */
    enum delivery_log_err (*begin)(void *self, const char *key, const char *kind,
                                   const char *recipient, enum delivery_state *state);
    enum delivery_log_err (*mark_sent)(void *self, const char *key);
    enum delivery_log_err (*mark_failed)(void *self, const char *key, const char *error);
    /* Counts one failed attempt (transient) with its error. */
    enum delivery_log_err (*record_attempt)(void *self, const char *key, const char *error);
    enum delivery_log_err (*ping)(void *self);
};

struct delivery_log {
    const struct delivery_log_ops *ops;
    void *self;
};

#endif
