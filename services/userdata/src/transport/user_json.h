/* user_json: maps request bodies to user_fields and users to response JSON. */
#ifndef USERDATA_TRANSPORT_USER_JSON_H
#define USERDATA_TRANSPORT_USER_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "entities/user.h"

struct cJSON;

enum user_json_result {
    USER_JSON_OK = 0,
    USER_JSON_MALFORMED, /* not JSON, not UTF-8, a NUL, or not an object: 400 */
    USER_JSON_INVALID,   /* wrong types, unknown fields: 422 with errs */
};

/* Parses body[0..len) and fills f with pointers into *tree, which the caller frees with
 * user_json_wipe then cJSON_Delete after it is done with f (the body may hold a plain
 * password). detail gets a client-safe reason on MALFORMED. */
enum user_json_result user_json_parse(const char *body, size_t len, struct cJSON **tree,
                                      struct user_fields *f, struct field_errors *errs,
                                      char *detail, size_t detail_len);

/* Zeroes every string value of tree, at any depth (a request body's: the plain password
 * among them), so that the memory cJSON_Delete then frees holds no secret. NULL is fine. */
void user_json_wipe(struct cJSON *tree);

/* The user as the API shows it (no password hash). Caller cJSON_Deletes. NULL on OOM. */
struct cJSON *user_json_from_user(const struct user *u);

/* Formats microseconds since the epoch as RFC 3339 UTC with microseconds. */
void user_json_format_time(long long us, char out[32]);

#endif
