/* retry_policy: how long to wait before trying a transiently failed event again. */
#ifndef PUSH_EMAIL_INTERACTORS_RETRY_POLICY_H
#define PUSH_EMAIL_INTERACTORS_RETRY_POLICY_H

#include <stdint.h>

/* Exponential backoff with full jitter: a delay in [cap/2, cap] where
 * cap = min(max_ms, base_ms * 2^attempt); random is any uniformly random 32-bit value.
 * attempt 0 is the first retry. */
uint32_t retry_delay_ms(unsigned attempt, uint32_t base_ms, uint32_t max_ms, uint32_t random);

#endif
