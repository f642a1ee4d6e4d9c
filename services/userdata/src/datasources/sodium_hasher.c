/* sodium_hasher: the password_hasher port on libsodium's argon2id (crypto_pwhash_str),
 * with a counting semaphore so that at most max_parallel hashes hold memlimit at once. */
#include "datasources/sodium_hasher.h"

#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct sodium_hasher {
    unsigned long long opslimit;
    size_t memlimit;
    unsigned max_parallel;
    unsigned running; /* hashes/verifies in progress, guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void sodium_hasher_acquire(struct sodium_hasher *h)
{
    pthread_mutex_lock(&h->mu);
    while (h->running >= h->max_parallel) {
        pthread_cond_wait(&h->cv, &h->mu);
    }
    h->running++;
    pthread_mutex_unlock(&h->mu);
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

    sodium_hasher_acquire(h);
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

    sodium_hasher_acquire(h);
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
                                        unsigned max_parallel)
{
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
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        h = NULL;
        goto out;
    }
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        h = NULL;
        goto out;
    }
out:
    return h;
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
