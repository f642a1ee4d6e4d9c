/* user_env: the ports for time and identity that the interactors need from outside. */
#ifndef USERDATA_REPOSITORIES_USER_ENV_H
#define USERDATA_REPOSITORIES_USER_ENV_H

#include <stdint.h>

#include "entities/user.h"

struct user_env_ops {
    int64_t (*now_us)(void *self);                         /* wall clock, UTC, microseconds */
    void (*new_id)(void *self, char out[USER_ID_LEN + 1]); /* random UUID v4, lower case */
};

struct user_env {
    const struct user_env_ops *ops;
    void *self;
};

#endif
