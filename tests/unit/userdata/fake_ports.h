/* fake_ports: in-memory implementations of userdata's ports for unit tests. */
#ifndef TESTS_FAKE_PORTS_H
#define TESTS_FAKE_PORTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "repositories/password_hasher.h"
#include "repositories/user_env.h"
#include "repositories/user_repo.h"

#define FAKE_REPO_CAP 64

/* A user store in memory, sorted by id on list; thread-safe. */
struct fake_repo {
    pthread_mutex_t lock;
    struct user users[FAKE_REPO_CAP];
    size_t n;
    enum user_repo_err fail_all;  /* != OK: every call returns this (e.g. UNAVAILABLE) */
    unsigned conflicts_to_inject; /* next N updates answer VERSION_CONFLICT */
    unsigned inserts, updates, removes, finds, lists;
};

void fake_repo_init(struct fake_repo *r);
struct user_repo fake_repo_port(struct fake_repo *r);

/* Hash = "fake$" + password; verify compares. */
struct password_hasher fake_hasher_port(void);
/* The same, counting hashes, and answering PASSWORD_HASHER_BUSY while busy is set. */
struct fake_hasher {
    _Atomic unsigned hashes;
    bool busy;
    /* While hold is set, a hash waits (counted in started first): a slow hash that the test
     * ends by clearing hold. */
    _Atomic bool hold;
    _Atomic unsigned started;
};
struct password_hasher fake_hasher_port_of(struct fake_hasher *h);

/* A clock you set and ids "00000000-0000-4000-8000-<12 digits of a counter>". */
struct fake_env {
    long long now_us;
    unsigned next_id;
};
struct user_env fake_env_port(struct fake_env *e);

#endif
