/* mariadb_delivery_log: the delivery_log port on MariaDB/MySQL (database `notifications`,
 * table `deliveries` of services/push-email/migrations), prepared statements only. */
#ifndef PUSH_EMAIL_DATASOURCES_MARIADB_DELIVERY_LOG_H
#define PUSH_EMAIL_DATASOURCES_MARIADB_DELIVERY_LOG_H

#include "repositories/delivery_log.h"
#include "shared/db.h"

struct mariadb_delivery_log;

/* Makes the log on one connection, opened lazily and reopened after the server goes away,
 * so this succeeds while the server is down. The schema comes from db_migrations_apply(cfg,
 * "<push-email>/migrations", ...), run by main before. The config strings are copied. NULL
 * when out of memory. Free with mariadb_delivery_log_free (closes the connection). */
struct mariadb_delivery_log *mariadb_delivery_log_new(const struct db_config *cfg);
void mariadb_delivery_log_free(struct mariadb_delivery_log *l);

/* The port, valid while l lives. One thread at a time (push-email's consumer is
 * single-threaded): the connection is not shared. */
struct delivery_log mariadb_delivery_log_port(struct mariadb_delivery_log *l);

#endif
