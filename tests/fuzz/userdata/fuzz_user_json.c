/* libFuzzer target: a request body through the JSON mapping and the entity rules, as
 * POST, PUT and PATCH would take it. Any crash, leak or UB is a finding. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "entities/user.h"
#include "transport/user_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct field_errors errs = {0};
    struct user_fields f;
    cJSON *tree = NULL;
    char detail[128];
    const int64_t today = user_days_from_civil(2026, 11, 21);

    if (user_json_parse((const char *)data, size, &tree, &f, &errs, detail, sizeof detail) ==
        USER_JSON_OK) {
        static const enum user_write_mode modes[] = {USER_WRITE_CREATE, USER_WRITE_REPLACE,
                                                     USER_WRITE_PATCH};
        for (size_t i = 0; i < 3; i++) {
            struct field_errors e = {0};
            struct user u;
            memset(&u, 0, sizeof u);
            if (user_fields_validate(&f, modes[i], today, &e)) {
                user_fields_apply(&f, modes[i], &u);
                cJSON *out = user_json_from_user(&u);
                char *text = out ? cJSON_PrintUnformatted(out) : NULL;
                cJSON_free(text);
                cJSON_Delete(out);
            }
        }
    }
    cJSON_Delete(tree);
    return 0;
}
