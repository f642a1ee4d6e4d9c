/* fake_ports: in-memory implementations of userdata's ports for unit tests. */
#include "fake_ports.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void fake_repo_init(struct fake_repo *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

static struct user *find_locked(struct fake_repo *r, const char *id)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->users[i].id, id) == 0)
            return &r->users[i];
    }
    return NULL;
}

/* Unique username (case-insensitive, like the MariaDB collation) and email. */
static enum user_repo_err unique_locked(struct fake_repo *r, const struct user *u)
{
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->users[i].id, u->id) == 0)
            continue;
        if (strcasecmp(r->users[i].username, u->username) == 0)
            return USER_REPO_DUPLICATE_USERNAME;
        if (strcasecmp(r->users[i].email, u->email) == 0)
            return USER_REPO_DUPLICATE_EMAIL;
    }
    return USER_REPO_OK;
}

static enum user_repo_err fr_insert(void *self, const struct user *u)
{
    struct fake_repo *r = self;
    enum user_repo_err e;

    pthread_mutex_lock(&r->lock);
    r->inserts++;
    e = r->fail_all;
    if (e == USER_REPO_OK)
        e = unique_locked(r, u);
    if (e == USER_REPO_OK && r->n == FAKE_REPO_CAP)
        e = USER_REPO_INTERNAL;
    if (e == USER_REPO_OK)
        r->users[r->n++] = *u;
    pthread_mutex_unlock(&r->lock);
    return e;
}

static enum user_repo_err fr_find(void *self, const char *id, struct user *out)
{
    struct fake_repo *r = self;
    enum user_repo_err e;

    pthread_mutex_lock(&r->lock);
    r->finds++;
    e = r->fail_all;
    if (e == USER_REPO_OK) {
        struct user *u = find_locked(r, id);
        if (u == NULL)
            e = USER_REPO_NOT_FOUND;
        else
            *out = *u;
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

static int by_id(const void *a, const void *b)
{
    return strcmp(((const struct user *)a)->id, ((const struct user *)b)->id);
}

static enum user_repo_err fr_list(void *self, const char *after, size_t limit, struct user *out,
                                  size_t *n)
{
    struct fake_repo *r = self;
    enum user_repo_err e;

    *n = 0;
    pthread_mutex_lock(&r->lock);
    r->lists++;
    e = r->fail_all;
    if (e == USER_REPO_OK) {
        qsort(r->users, r->n, sizeof r->users[0], by_id);
        for (size_t i = 0; i < r->n && *n < limit; i++) {
            if (after == NULL || strcmp(r->users[i].id, after) > 0)
                out[(*n)++] = r->users[i];
        }
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

static enum user_repo_err fr_update(void *self, const struct user *u, uint64_t expected)
{
    struct fake_repo *r = self;
    enum user_repo_err e;

    pthread_mutex_lock(&r->lock);
    r->updates++;
    e = r->fail_all;
    struct user *cur = e == USER_REPO_OK ? find_locked(r, u->id) : NULL;
    if (e == USER_REPO_OK && cur == NULL)
        e = USER_REPO_NOT_FOUND;
    if (e == USER_REPO_OK && r->conflicts_to_inject > 0) {
        r->conflicts_to_inject--;
        e = USER_REPO_VERSION_CONFLICT;
    }
    if (e == USER_REPO_OK && cur->version != expected)
        e = USER_REPO_VERSION_CONFLICT;
    if (e == USER_REPO_OK)
        e = unique_locked(r, u);
    if (e == USER_REPO_OK)
        *cur = *u;
    pthread_mutex_unlock(&r->lock);
    return e;
}

static enum user_repo_err fr_remove(void *self, const char *id, uint64_t expected)
{
    struct fake_repo *r = self;
    enum user_repo_err e;

    pthread_mutex_lock(&r->lock);
    r->removes++;
    e = r->fail_all;
    struct user *cur = e == USER_REPO_OK ? find_locked(r, id) : NULL;
    if (e == USER_REPO_OK && cur == NULL)
        e = USER_REPO_NOT_FOUND;
    if (e == USER_REPO_OK && expected != 0 && cur->version != expected)
        e = USER_REPO_VERSION_CONFLICT;
    if (e == USER_REPO_OK) {
        *cur = r->users[r->n - 1];
        r->n--;
    }
    pthread_mutex_unlock(&r->lock);
    return e;
}

static enum user_repo_err fr_ping(void *self)
{
    struct fake_repo *r = self;
    return r->fail_all;
}

static const struct user_repo_ops fake_repo_ops = {
    .insert = fr_insert,
    .find = fr_find,
    .list = fr_list,
    .update = fr_update,
    .remove = fr_remove,
    .ping = fr_ping,
};

struct user_repo fake_repo_port(struct fake_repo *r)
{
    struct user_repo p = {&fake_repo_ops, r};
    return p;
}

static int fh_hash(void *self, const char *password, char out[USER_PASSWORD_HASH_MAX + 1])
{
    struct fake_hasher *h = self;
    if (h != NULL) {
        if (h->busy)
            return PASSWORD_HASHER_BUSY;
        h->started++;
        while (h->hold) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
        h->hashes++;
    }
    snprintf(out, USER_PASSWORD_HASH_MAX + 1, "fake$%s", password);
    return 0;
}

static int fh_verify(void *self, const char *hash, const char *password)
{
    (void)self;
    return strncmp(hash, "fake$", 5) == 0 && strcmp(hash + 5, password) == 0 ? 0 : -1;
}

static const struct password_hasher_ops fake_hasher_ops = {fh_hash, fh_verify};

struct password_hasher fake_hasher_port(void)
{
    struct password_hasher h = {&fake_hasher_ops, NULL};
    return h;
}

struct password_hasher fake_hasher_port_of(struct fake_hasher *fh)
{
    struct password_hasher h = {&fake_hasher_ops, fh};
    return h;
}

static int64_t fe_now(void *self)
{
    return ((struct fake_env *)self)->now_us;
}

static void fe_new_id(void *self, char out[USER_ID_LEN + 1])
{
    struct fake_env *e = self;
    snprintf(out, USER_ID_LEN + 1, "00000000-0000-4000-8000-%012u", ++e->next_id);
}

static const struct user_env_ops fake_env_ops = {fe_now, fe_new_id};

struct user_env fake_env_port(struct fake_env *e)
{
    struct user_env p = {&fake_env_ops, e};
    return p;
}
