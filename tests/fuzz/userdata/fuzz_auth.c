/* fuzz_auth: arbitrary bytes as the Authorization header value of auth_check (HS256). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "transport/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Same secret as the seeds in corpus/auth were signed with, so the fuzzer starts past the
 * signature check. Test-only. */
static const char SECRET[] = "0123456789abcdef0123456789abcdef-fuzz-only";

static struct auth *fuzz_auth(void)
{
    static struct auth *a;
    if (a == NULL) {
        const struct auth_config cfg = {
            .alg = AUTH_HS256,
            .key = (const unsigned char *)SECRET,
            .key_len = sizeof(SECRET) - 1,
            .audience = "userdata",
            .issuer = NULL,
            .leeway_s = 30,
        };
        a = auth_new(&cfg, NULL, 0);
        if (a == NULL) {
            abort();
        }
    }
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[128];
    /* auth_check takes a C string: a NUL-terminated copy (embedded NULs just end it). */
    char *header = malloc(size + 1);
    if (header == NULL) {
        return 0;
    }
    if (size > 0) {
        memcpy(header, data, size);
    }
    header[size] = '\0';
    (void)auth_check(fuzz_auth(), header, "users:read", why, sizeof(why));
    free(header);
    return 0;
}
