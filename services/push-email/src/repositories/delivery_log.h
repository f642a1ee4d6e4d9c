/* delivery_log: the port that remembers every intended email by its dedupe key, so that
 * a re-delivered event never mails a person twice. */
#ifndef PUSH_EMAIL_REPOSITORIES_DELIVERY_LOG_H
#define PUSH_EMAIL_REPOSITORIES_DELIVERY_LOG_H

#include <stddef.h>
#include <stdint.h>

enum delivery_state {
    DELIVERY_PENDING, /* not sent yet (never tried, or earlier attempts failed transiently) */
    DELIVERY_SENT,
    DELIVERY_FAILED, /* finally failed (permanent error) */
};

enum delivery_log_err {
    DELIVERY_LOG_OK = 0,
    DELIVERY_LOG_UNAVAILABLE, /* the store cannot be reached now: retry later */
    DELIVERY_LOG_INTERNAL,
};

struct delivery_log_ops {
    /* Tells key's state: SENT or FAILED when an earlier delivery recorded so, else PENDING
     * (never tried, or tried and failed transiently). It records nothing. */
    enum delivery_log_err (*begin)(void *self, const char *key, const char *kind,
                                   const char *recipient, enum delivery_state *state);
    /* Records that key was sent. May write behind: begin() sees it at once, but it is
     * durable only once durable() has reached written() as read after this call. */
    enum delivery_log_err (*mark_sent)(void *self, const char *key, const char *kind,
                                       const char *recipient);
    /* Records key as finally failed (a key already sent stays sent), durable on return. */
    enum delivery_log_err (*mark_failed)(void *self, const char *key, const char *kind,
                                         const char *recipient, const char *error);
    /* Counts one failed attempt (transient) with its error, durable on return. */
    enum delivery_log_err (*record_attempt)(void *self, const char *key, const char *kind,
                                            const char *recipient, const char *error);
    enum delivery_log_err (*ping)(void *self);
    /* Write-behind bookkeeping; all three NULL when every call is durable on return.
     * written: a ticket for everything recorded so far (grows by one per mark_sent).
     * durable: the highest ticket that is committed. flush: waits up to timeout_ms until
     * durable() == written(); DELIVERY_LOG_UNAVAILABLE when it is not by then. */
    uint64_t (*written)(void *self);
    uint64_t (*durable)(void *self);
    enum delivery_log_err (*flush)(void *self, int timeout_ms);
    /* Optional (NULL: none): looks up the states of keys the caller is about to begin, in
     * one round trip, so that those begin() calls need none. A hint: on failure the
     * begin() calls ask the database themselves. */
    void (*prefetch)(void *self, const char *const *keys, size_t n);
};

struct delivery_log {
    const struct delivery_log_ops *ops;
    void *self;
};

#endif
