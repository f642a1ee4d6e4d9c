/* system_env: the user_env port on the real clock and libuuid's random UUIDs. */
#include "datasources/system_env.h"

#include <time.h>
#include <uuid/uuid.h>

static int64_t system_env_now_us(void *self)
{
    (void)self;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return 0; /* cannot happen for CLOCK_REALTIME with a valid pointer */
    }
    return (int64_t)ts.tv_sec * 1000000 + (int64_t)(ts.tv_nsec / 1000);
}

/* uuid_generate_random reads the kernel's CSPRNG (getrandom), so ids are not guessable;
 * it is thread-safe. out receives 36 lower-case characters and the NUL. */
static void system_env_new_id(void *self, char out[USER_ID_LEN + 1])
{
    (void)self;
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

static const struct user_env_ops system_env_ops = {
    .now_us = system_env_now_us,
    .new_id = system_env_new_id,
};

/* Stateless: nothing to free. */
struct user_env system_env_port(void)
{
    struct user_env env = {.ops = &system_env_ops, .self = NULL};
    return env;
}
