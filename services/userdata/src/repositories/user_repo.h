/* user_repo: the port through which interactors store and load users. */
#ifndef USERDATA_REPOSITORIES_USER_REPO_H
#define USERDATA_REPOSITORIES_USER_REPO_H

#include <stddef.h>
#include <stdint.h>

#include "entities/user.h"

enum user_repo_err {
    USER_REPO_OK = 0,
    USER_REPO_NOT_FOUND,
    USER_REPO_DUPLICATE_USERNAME,
    USER_REPO_DUPLICATE_EMAIL,
    USER_REPO_VERSION_CONFLICT, /* the row exists but its version differs */
    USER_REPO_UNAVAILABLE,      /* the store cannot be reached now; try again later */
    USER_REPO_INTERNAL,         /* anything else; the adapter has logged the detail */
};

/* Every operation is safe to call from several threads at once. */
struct user_repo_ops {
    /* Stores a new user exactly as given (id, timestamps, version set by the caller). */
    enum user_repo_err (*insert)(void *self, const struct user *u);
    /* Loads the user with this id into *out. */
    enum user_repo_err (*find)(void *self, const char *id, struct user *out);
    /* Up to limit users ordered by id, with id > after (after NULL: from the start),
     * into out[0..*n). out must hold limit entries. */
    enum user_repo_err (*list)(void *self, const char *after, size_t limit, struct user *out,
                               size_t *n);
    /* Overwrites the stored row with id u->id, but only while its version is
     * expected_version: NOT_FOUND when there is no such row, VERSION_CONFLICT when the
     * version moved on. u->version is stored as given (the caller sets expected + 1). */
    enum user_repo_err (*update)(void *self, const struct user *u, uint64_t expected_version);
    /* Deletes the row; with expected_version != 0, only while its version is that. */
    enum user_repo_err (*remove)(void *self, const char *id, uint64_t expected_version);
    /* OK when the store answers now. */
    enum user_repo_err (*ping)(void *self);
};

struct user_repo {
    const struct user_repo_ops *ops;
    void *self;
};

const char *user_repo_err_name(enum user_repo_err e);

#endif
