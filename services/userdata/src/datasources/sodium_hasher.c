/* sodium_hasher: the password_hasher port on libsodium's argon2id (crypto_pwhash_str),
 * with a counting semaphore so that at most max_parallel hashes hold memlimit at once.
 * At most MAX_WAITING_PER_SLOT * max_parallel callers wait for it, each for at most
 * wait_ms; any more are told busy at once. The HTTP server calls it only from its password
 * lanes (as many as max_parallel: transport/http_api.c), so there nobody waits; the limits
 * hold for any other caller. */
#include "datasources/sodium_hasher.h"

#include <pthread.h>
#include <stdbool.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_WAITING_PER_SLOT 2

struct sodium_hasher {
    unsigned long long opslimit;
    size_t memlimit;
    unsigned max_parallel;
    unsigned wait_ms;
    unsigned running; /* hashes/verifies in progress, guarded by mu */
    unsigned waiting; /* callers waiting for a slot, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Takes a slot: 0, or PASSWORD_HASHER_BUSY when none was free within wait_ms. */
static int sodium_hasher_acquire(struct sodium_hasher *h)
{
    struct timespec until;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += h->wait_ms / 1000;
    until.tv_nsec += (long)(h->wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&h->mu);
    if (h->running >= h->max_parallel) {
        if (h->waiting >= MAX_WAITING_PER_SLOT * h->max_parallel) {
            pthread_mutex_unlock(&h->mu);
            return PASSWORD_HASHER_BUSY; /* enough wait already */
        }
        h->waiting++;
        while (h->running >= h->max_parallel && rc == 0) {
            if (pthread_cond_timedwait(&h->cv, &h->mu, &until) != 0 &&
                h->running >= h->max_parallel)
                rc = PASSWORD_HASHER_BUSY;
        }
        h->waiting--;
    }
    if (rc == 0)
        h->running++;
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static void sodium_hasher_release(struct sodium_hasher *h)
{
    pthread_mutex_lock(&h->mu);
    h->running--;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static int sodium_hasher_hash(void *self, const char *password,
                              char out[USER_PASSWORD_HASH_MAX + 1])
{
    struct sodium_hasher *h = self;
    /* crypto_pwhash_STRBYTES (128) includes the NUL, so the hash fits out. */
    char buf[crypto_pwhash_STRBYTES];
    int rc = -1;

    if (sodium_hasher_acquire(h) != 0)
        return PASSWORD_HASHER_BUSY;
    if (crypto_pwhash_str(buf, password, strlen(password), h->opslimit, h->memlimit) != 0) {
        goto out; /* out of memory */
    }
    memcpy(out, buf, sizeof buf);
    out[USER_PASSWORD_HASH_MAX] = '\0';
    rc = 0;
out:
    sodium_hasher_release(h);
    sodium_memzero(buf, sizeof buf);
    return rc;
}

/* Verification costs what hashing costs (it recomputes with the hash's own parameters),
 * so it takes a slot of the semaphore too. */
static int sodium_hasher_verify(void *self, const char *hash, const char *password)
{
    struct sodium_hasher *h = self;
    int rc;

    if (sodium_hasher_acquire(h) != 0)
        return PASSWORD_HASHER_BUSY;
    rc = crypto_pwhash_str_verify(hash, password, strlen(password)) == 0 ? 0 : -1;
    sodium_hasher_release(h);
    return rc;
}

static const struct password_hasher_ops sodium_hasher_ops = {
    .hash = sodium_hasher_hash,
    .verify = sodium_hasher_verify,
};

/* Caller frees the result with sodium_hasher_free. */
struct sodium_hasher *sodium_hasher_new(unsigned long long opslimit, size_t memlimit,
                                        unsigned max_parallel, unsigned wait_ms)
{
    pthread_condattr_t ca;
    struct sodium_hasher *h = NULL;

    if (sodium_init() < 0) {
        goto out;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        goto out;
    }
    h->opslimit = opslimit;
    h->memlimit = memlimit;
    h->max_parallel = max_parallel > 0 ? max_parallel : 1;
    h->wait_ms = wait_ms;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        h = NULL;
        goto out;
    }
    bool cv_ok = pthread_condattr_init(&ca) == 0;
    if (cv_ok) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&h->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!cv_ok) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        h = NULL;
        goto out;
    }
out:
    return h;
}

void sodium_hasher_load(struct sodium_hasher *h, unsigned *running, unsigned *waiting)
{
    pthread_mutex_lock(&h->mu);
    *running = h->running;
    *waiting = h->waiting;
    pthread_mutex_unlock(&h->mu);
}

/* Frees h (NULL is fine). No hash may be running. */
void sodium_hasher_free(struct sodium_hasher *h)
{
    if (h == NULL) {
        return;
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

struct password_hasher sodium_hasher_port(struct sodium_hasher *h)
{
    struct password_hasher p = {.ops = &sodium_hasher_ops, .self = h};
    return p;
}
