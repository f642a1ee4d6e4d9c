/* password_hasher: the port that turns a password into a stored, salted hash. */
#ifndef USERDATA_REPOSITORIES_PASSWORD_HASHER_H
#define USERDATA_REPOSITORIES_PASSWORD_HASHER_H

#include "entities/user.h"

/* hash's answer when every hashing slot stayed taken for the hasher's whole wait: the
 * server is overloaded with password hashing; the request may be retried later. */
#define PASSWORD_HASHER_BUSY 1

struct password_hasher_ops {
    /* Writes a self-describing hash string (e.g. "$argon2id$...") of password into out.
     * Returns 0 on success, PASSWORD_HASHER_BUSY (nothing written), or -1 when it cannot
     * (out of memory). Thread-safe. */
    int (*hash)(void *self, const char *password, char out[USER_PASSWORD_HASH_MAX + 1]);
    /* 0 when password matches hash, PASSWORD_HASHER_BUSY, -1 otherwise. */
    int (*verify)(void *self, const char *hash, const char *password);
};

struct password_hasher {
    const struct password_hasher_ops *ops;
    void *self;
};

#endif
