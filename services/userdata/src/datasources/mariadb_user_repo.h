/* mariadb_user_repo: the user_repo port on MariaDB/MySQL through libmysqlclient
 * (MariaDB Connector/C), prepared statements only, a small pool of connections. */
#ifndef USERDATA_DATASOURCES_MARIADB_USER_REPO_H
#define USERDATA_DATASOURCES_MARIADB_USER_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "repositories/user_repo.h"

struct mariadb_config {
    const char *host; /* e.g. "127.0.0.1" */
    uint16_t port;    /* e.g. 3307 */
    const char *user;
    const char *password;       /* may be NULL/empty */
    const char *database;       /* e.g. "userdata" */
    unsigned pool_size;         /* connections; one per worker thread */
    unsigned connect_timeout_s; /* connect/read/write timeouts: a down server never hangs us */
    unsigned io_timeout_s;
};

struct mariadb_user_repo;

/* Makes the pool. Connections are opened lazily and reopened after the server goes away,
 * so this succeeds while the server is down. The config strings are copied. NULL when out
 * of memory. Free with mariadb_user_repo_free (closes every connection). */
struct mariadb_user_repo *mariadb_user_repo_new(const struct mariadb_config *cfg);
void mariadb_user_repo_free(struct mariadb_user_repo *r);
/* The port, valid while r lives. */
struct user_repo mariadb_user_repo_port(struct mariadb_user_repo *r);

#endif
