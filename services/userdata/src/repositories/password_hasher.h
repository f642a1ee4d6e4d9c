/* password_hasher: the port that turns a password into a stored, salted hash. */
#ifndef USERDATA_REPOSITORIES_PASSWORD_HASHER_H
#define USERDATA_REPOSITORIES_PASSWORD_HASHER_H

#include "entities/user.h"

struct password_hasher_ops {
    /* Writes a self-describing hash string (e.g. "$argon2id$...") of password into out.
     * Returns 0 on success, -1 when it cannot (out of memory). Thread-safe. */
    int (*hash)(void *self, const char *password, char out[USER_PASSWORD_HASH_MAX + 1]);
    /* 0 when password matches hash, -1 otherwise. */
    int (*verify)(void *self, const char *hash, const char *password);
};

struct password_hasher {
    const struct password_hasher_ops *ops;
    void *self;
};

#endif
