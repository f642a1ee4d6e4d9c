/* libFuzzer target: If-Match and Content-Type values through the header parsers. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/http_headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct users_if_match m;
    char *value = malloc(size + 1);

    if (value == NULL)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    if (http_headers_parse_if_match(value, &m) && m.kind == USERS_IF_MATCH_LIST &&
        m.n > USERS_IF_MATCH_MAX)
        abort(); /* the parser promised never to overfill the list */
    (void)http_headers_content_type_is(value, "application/json");
    (void)http_headers_content_type_is(value, "application/merge-patch+json");
    free(value);
    return 0;
}
