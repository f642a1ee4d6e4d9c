/* system_notify_env: the notify_env port on the system clock and libsodium's BLAKE2b. */
#ifndef PUSH_EMAIL_DATASOURCES_SYSTEM_NOTIFY_ENV_H
#define PUSH_EMAIL_DATASOURCES_SYSTEM_NOTIFY_ENV_H

#include "repositories/notify_env.h"

struct system_notify_env;

/* domain: the right-hand side of every Message-ID (e.g. the From address's domain); an
 * address "x@example.org" is accepted and its domain taken. Copied. NULL when the domain
 * is empty or not a host name of at most 120 characters, or when out of memory. Free with
 * system_notify_env_free. */
struct system_notify_env *system_notify_env_new(const char *domain);
void system_notify_env_free(struct system_notify_env *e);

/* The port, valid while e lives. Thread-safe. */
struct notify_env system_notify_env_port(struct system_notify_env *e);

#endif
