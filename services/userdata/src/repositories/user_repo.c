/* user_repo: names of the port's error codes, for logs and tests. */
#include "repositories/user_repo.h"

/* Returns a static string; never NULL. */
const char *user_repo_err_name(enum user_repo_err e)
{
    switch (e) {
    case USER_REPO_OK:
        return "OK";
    case USER_REPO_NOT_FOUND:
        return "NOT_FOUND";
    case USER_REPO_DUPLICATE_USERNAME:
        return "DUPLICATE_USERNAME";
    case USER_REPO_DUPLICATE_EMAIL:
        return "DUPLICATE_EMAIL";
    case USER_REPO_VERSION_CONFLICT:
        return "VERSION_CONFLICT";
    case USER_REPO_UNAVAILABLE:
        return "UNAVAILABLE";
    case USER_REPO_INTERNAL:
        return "INTERNAL";
    }
    return "UNKNOWN";
}
