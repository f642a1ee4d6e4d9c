/* retry_policy: how long to wait before trying a transiently failed event again. */
#include "interactors/retry_policy.h"

uint32_t retry_delay_ms(unsigned attempt, uint32_t base_ms, uint32_t max_ms, uint32_t random)
{
    uint64_t cap = base_ms ? base_ms : 1;

    for (unsigned i = 0; i < attempt && cap < max_ms; i++)
        cap *= 2;
    if (cap > max_ms)
        cap = max_ms;
    /* Half fixed, half jitter: never hammers the server, never waits too little. */
    uint64_t half = cap / 2;
    uint64_t jitter = (cap - half) ? (uint64_t)random % (cap - half + 1) : 0;
    return (uint32_t)(half + jitter);
}
