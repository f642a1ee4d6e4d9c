/* users: the use cases of userdata (create, get, list, replace, patch, delete). */
#include "interactors/users.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Writes without If-Match re-read and retry when another writer got in first; this
 * bounds the loop under extreme contention (then 503 and the client retries). With as
 * many racers as server threads (8) and no pause, 16 attempts lost a write in about one
 * run in three of 100 concurrent PATCHes (tests/integration/userdata/
 * test_userdata_service.c): hence more attempts and a short jittered backoff. */
#define USERS_WRITE_ATTEMPTS 64

/* After a lost race: sleep a random 0..50<<min(attempt,5) microseconds (at most 1.6 ms)
 * so that the racers spread out instead of colliding again at once. */
static void conflict_backoff(int attempt, unsigned *seed)
{
    unsigned max_us = 50u << (attempt < 5 ? attempt : 5);
    struct timespec ts = {0, (long)(rand_r(seed) % max_us) * 1000L};
    nanosleep(&ts, NULL);
}

struct users {
    struct user_repo repo;
    struct password_hasher hasher;
    struct user_env env;
};

struct users *users_new(struct user_repo repo, struct password_hasher hasher, struct user_env env)
{
    struct users *uc = calloc(1, sizeof *uc);

    if (uc == NULL)
        return NULL;
    uc->repo = repo;
    uc->hasher = hasher;
    uc->env = env;
    return uc;
}

void users_free(struct users *uc)
{
    free(uc);
}

static int64_t now_us(struct users *uc)
{
    return uc->env.ops->now_us(uc->env.self);
}

static int64_t today_days(struct users *uc)
{
    int64_t us = now_us(uc);
    int64_t days = us / 86400000000LL;
    return us < 0 && us % 86400000000LL ? days - 1 : days;
}

static enum users_result from_repo(enum user_repo_err e, struct field_errors *errs)
{
    switch (e) {
    case USER_REPO_OK:
        return USERS_OK;
    case USER_REPO_NOT_FOUND:
        return USERS_NOT_FOUND;
    case USER_REPO_DUPLICATE_USERNAME:
        field_errors_add(errs, "username", "is already taken");
        return USERS_DUPLICATE;
    case USER_REPO_DUPLICATE_EMAIL:
        field_errors_add(errs, "email", "is already taken");
        return USERS_DUPLICATE;
    case USER_REPO_VERSION_CONFLICT:
        return USERS_PRECONDITION_FAILED;
    case USER_REPO_UNAVAILABLE:
        return USERS_UNAVAILABLE;
    case USER_REPO_INTERNAL:
        break;
    }
    return USERS_INTERNAL;
}

static bool precondition_holds(const struct users_if_match *pre, uint64_t version)
{
    if (pre == NULL || pre->kind != USERS_IF_MATCH_LIST)
        return true; /* none, or "*" which any existing user matches */
    for (size_t i = 0; i < pre->n; i++) {
        if (pre->versions[i] == version)
            return true;
    }
    return false;
}

static bool pinned(const struct users_if_match *pre)
{
    return pre != NULL && pre->kind == USERS_IF_MATCH_LIST;
}

/* True when a and b differ in anything a person can see or the password. */
static bool user_differs(const struct user *a, const struct user *b)
{
    return strcmp(a->username, b->username) != 0 || strcmp(a->email, b->email) != 0 ||
           strcmp(a->full_name, b->full_name) != 0 || strcmp(a->address, b->address) != 0 ||
           strcmp(a->date_of_birth, b->date_of_birth) != 0 || strcmp(a->locale, b->locale) != 0 ||
           a->status != b->status || strcmp(a->password_hash, b->password_hash) != 0;
}

enum users_result users_create(struct users *uc, const struct user_fields *in, struct user *out,
                               struct field_errors *errs)
{
    struct user u;

    if (!user_fields_validate(in, USER_WRITE_CREATE, today_days(uc), errs))
        return USERS_INVALID;
    memset(&u, 0, sizeof u);
    user_fields_apply(in, USER_WRITE_CREATE, &u);
    int h = uc->hasher.ops->hash(uc->hasher.self, in->password, u.password_hash);
    if (h != 0)
        return h == PASSWORD_HASHER_BUSY ? USERS_BUSY : USERS_INTERNAL;
    uc->env.ops->new_id(uc->env.self, u.id);
    u.created_at_us = now_us(uc);
    u.updated_at_us = u.created_at_us;
    u.password_changed_at_us = u.created_at_us;
    u.version = 1;

    enum users_result r = from_repo(uc->repo.ops->insert(uc->repo.self, &u), errs);
    if (r == USERS_OK)
        *out = u;
    memset(&u, 0, sizeof u);
    return r;
}

enum users_result users_get(struct users *uc, const char *id, struct user *out)
{
    if (!user_id_valid(id))
        return USERS_NOT_FOUND;
    return from_repo(uc->repo.ops->find(uc->repo.self, id, out), NULL);
}

enum users_result users_list(struct users *uc, const char *after, size_t limit, struct user *out,
                             size_t *n, bool *more)
{
    struct user probe;
    enum user_repo_err e;

    *n = 0;
    *more = false;
    if (limit == 0 || limit > USERS_LIST_MAX)
        return USERS_INVALID;
    e = uc->repo.ops->list(uc->repo.self, after, limit, out, n);
    if (e != USER_REPO_OK)
        return from_repo(e, NULL);
    if (*n == limit) {
        /* A full page: one look past its end tells whether another page exists. */
        size_t extra = 0;
        e = uc->repo.ops->list(uc->repo.self, out[*n - 1].id, 1, &probe, &extra);
        if (e != USER_REPO_OK)
            return from_repo(e, NULL);
        *more = extra > 0;
    }
    return USERS_OK;
}

/* Replace and patch: validate, then read-modify-write under the version check, retrying
 * when unpinned writers race. A new password is hashed once, and only after the user was
 * found and If-Match held: a request bound to fail costs no argon2id. */
static enum users_result write_user(struct users *uc, const char *id, const struct user_fields *in,
                                    enum user_write_mode mode, const struct users_if_match *pre,
                                    struct user *out, struct field_errors *errs)
{
    enum users_result r = USERS_INTERNAL;
    char hash[USER_PASSWORD_HASH_MAX + 1] = "";
    bool new_password = (in->present & USER_F_PASSWORD) && !(in->null & USER_F_PASSWORD);
    bool hashed = false;
    struct user cur, next;
    unsigned seed = (unsigned)(uintptr_t)&cur ^ (unsigned)now_us(uc);

    if (!user_fields_validate(in, mode, today_days(uc), errs))
        return USERS_INVALID;
    if (!user_id_valid(id))
        return USERS_NOT_FOUND;

    for (int attempt = 0; attempt < USERS_WRITE_ATTEMPTS; attempt++) {
        r = from_repo(uc->repo.ops->find(uc->repo.self, id, &cur), errs);
        if (r != USERS_OK)
            goto out;
        if (!precondition_holds(pre, cur.version)) {
            r = USERS_PRECONDITION_FAILED;
            goto out;
        }
        if (new_password && !hashed) {
            int h = uc->hasher.ops->hash(uc->hasher.self, in->password, hash);
            if (h != 0) {
                r = h == PASSWORD_HASHER_BUSY ? USERS_BUSY : USERS_INTERNAL;
                goto out;
            }
            hashed = true; /* a version moved meanwhile fails the update's check */
        }
        next = cur;
        user_fields_apply(in, mode, &next);
        if (new_password)
            memcpy(next.password_hash, hash, sizeof hash);
        if (!user_differs(&cur, &next)) {
            *out = cur; /* nothing changed: no write, no change event */
            r = USERS_OK;
            goto out;
        }
        next.updated_at_us = now_us(uc);
        if (next.updated_at_us <= cur.updated_at_us)
            next.updated_at_us = cur.updated_at_us + 1; /* keep updated_at monotonic */
        if (new_password)
            next.password_changed_at_us = next.updated_at_us;
        next.version = cur.version + 1;

        enum user_repo_err e = uc->repo.ops->update(uc->repo.self, &next, cur.version);
        if (e == USER_REPO_VERSION_CONFLICT && !pinned(pre)) {
            conflict_backoff(attempt, &seed);
            continue; /* someone else wrote first; the client did not pin a version */
        }
        r = from_repo(e, errs);
        if (r == USERS_OK)
            *out = next;
        goto out;
    }
    r = USERS_UNAVAILABLE;
out:
    memset(hash, 0, sizeof hash);
    return r;
}

enum users_result users_replace(struct users *uc, const char *id, const struct user_fields *in,
                                const struct users_if_match *pre, struct user *out,
                                struct field_errors *errs)
{
    return write_user(uc, id, in, USER_WRITE_REPLACE, pre, out, errs);
}

enum users_result users_patch(struct users *uc, const char *id, const struct user_fields *in,
                              const struct users_if_match *pre, struct user *out,
                              struct field_errors *errs)
{
    return write_user(uc, id, in, USER_WRITE_PATCH, pre, out, errs);
}

enum users_result users_delete(struct users *uc, const char *id, const struct users_if_match *pre)
{
    struct user cur;
    uint64_t expected = 0;
    enum users_result r;

    if (!user_id_valid(id))
        return USERS_NOT_FOUND;
    if (pinned(pre)) {
        r = from_repo(uc->repo.ops->find(uc->repo.self, id, &cur), NULL);
        if (r != USERS_OK)
            return r;
        if (!precondition_holds(pre, cur.version))
            return USERS_PRECONDITION_FAILED;
        expected = cur.version;
    }
    return from_repo(uc->repo.ops->remove(uc->repo.self, id, expected), NULL);
}

enum users_result users_ready(struct users *uc)
{
    return from_repo(uc->repo.ops->ping(uc->repo.self), NULL);
}
