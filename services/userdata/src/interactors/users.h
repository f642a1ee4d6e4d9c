/* users: the use cases of userdata (create, get, list, replace, patch, delete). */
#ifndef USERDATA_INTERACTORS_USERS_H
#define USERDATA_INTERACTORS_USERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "entities/user.h"
#include "repositories/password_hasher.h"
#include "repositories/user_env.h"
#include "repositories/user_repo.h"

enum users_result {
    USERS_OK = 0,
    USERS_INVALID, /* errs says which fields */
    USERS_NOT_FOUND,
    USERS_DUPLICATE,           /* errs names the username or email taken */
    USERS_PRECONDITION_FAILED, /* If-Match did not match the current version */
    USERS_UNAVAILABLE,         /* the store is down: retry later */
    USERS_BUSY,                /* no password hashing slot came free in time: retry soon */
    USERS_INTERNAL,
};

/* An If-Match precondition: none given, "*", or a list of versions (strong ETags). */
#define USERS_IF_MATCH_MAX 8
struct users_if_match {
    enum { USERS_IF_MATCH_NONE, USERS_IF_MATCH_ANY, USERS_IF_MATCH_LIST } kind;
    size_t n;
    uint64_t versions[USERS_IF_MATCH_MAX];
};

#define USERS_LIST_MAX 200

struct users;

/* The ports are copied; what they point to must outlive the users object.
 * Returns NULL when out of memory. Free with users_free. */
struct users *users_new(struct user_repo repo, struct password_hasher hasher, struct user_env env);
void users_free(struct users *uc);

enum users_result users_create(struct users *uc, const struct user_fields *in, struct user *out,
                               struct field_errors *errs);
enum users_result users_get(struct users *uc, const char *id, struct user *out);
/* out must hold limit entries (1..USERS_LIST_MAX); *more tells whether a next page exists. */
enum users_result users_list(struct users *uc, const char *after, size_t limit, struct user *out,
                             size_t *n, bool *more);
enum users_result users_replace(struct users *uc, const char *id, const struct user_fields *in,
                                const struct users_if_match *pre, struct user *out,
                                struct field_errors *errs);
enum users_result users_patch(struct users *uc, const char *id, const struct user_fields *in,
                              const struct users_if_match *pre, struct user *out,
                              struct field_errors *errs);
enum users_result users_delete(struct users *uc, const char *id, const struct users_if_match *pre);
/* USERS_OK when the store answers now (readiness). */
enum users_result users_ready(struct users *uc);

#endif
