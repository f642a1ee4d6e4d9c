/* sodium_hasher: the password_hasher port on libsodium's argon2id (crypto_pwhash_str). */
#ifndef USERDATA_DATASOURCES_SODIUM_HASHER_H
#define USERDATA_DATASOURCES_SODIUM_HASHER_H

#include <stddef.h>

#include "repositories/password_hasher.h"

struct sodium_hasher;

/* opslimit/memlimit as crypto_pwhash_str takes them; max_parallel bounds how many hashes
 * run at once (each holds memlimit bytes); a hash waits at most wait_ms for a free slot,
 * then answers PASSWORD_HASHER_BUSY, as it does at once when twice max_parallel callers
 * wait already. NULL when sodium_init fails or out of memory. */
struct sodium_hasher *sodium_hasher_new(unsigned long long opslimit, size_t memlimit,
                                        unsigned max_parallel, unsigned wait_ms);
void sodium_hasher_free(struct sodium_hasher *h);
/* How many hashes (or verifies) run now, and how many callers wait for a slot. */
void sodium_hasher_load(struct sodium_hasher *h, unsigned *running, unsigned *waiting);
struct password_hasher sodium_hasher_port(struct sodium_hasher *h);

#endif
