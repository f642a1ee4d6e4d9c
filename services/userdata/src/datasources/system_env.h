/* system_env: the user_env port on the real clock and libuuid's random UUIDs. */
#ifndef USERDATA_DATASOURCES_SYSTEM_ENV_H
#define USERDATA_DATASOURCES_SYSTEM_ENV_H

#include "repositories/user_env.h"

struct user_env system_env_port(void);

#endif
