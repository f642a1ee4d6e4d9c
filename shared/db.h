/* db: MariaDB/MySQL connections and versioned SQL migrations, shared by the services'
 * database adapters (MariaDB Connector/C). Only adapters include this header. */
#ifndef SHARED_DB_H
#define SHARED_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct st_mysql;

struct db_config {
    const char *host;
    uint16_t port;
    const char *user;
    const char *password; /* may be NULL/empty */
    const char *database;
    unsigned connect_timeout_s; /* connect/read/write timeouts: a down server never hangs us */
    unsigned io_timeout_s;
};

/* Opens a connection (utf8mb4, UTC session time zone, strict sql_mode, English error
 * messages, the timeouts), selecting cfg->database when with_database. NULL with errstr
 * filled on failure.
 * Caller closes with mysql_close. Thread-safe (initialises the library once). */
struct st_mysql *db_connect(const struct db_config *cfg, bool with_database, char *errstr,
                            size_t errlen);

/* True for a database name we are willing to put between backticks: 1 to 64 letters,
 * digits, '_' or '$'. */
bool db_name_valid(const char *name);
#define DB_NAME_RULE "1 to 64 letters, digits, '_' or '$'"

/* Failures of the migration calls besides -1 ("the server may yet come up"). */
#define DB_MIGRATIONS_PERMANENT (-2) /* retrying cannot help: fix the files or the settings */
#define DB_MIGRATIONS_STOPPED   (-3) /* db_migrations_apply_waiting: stop() said stop */

/* Creates cfg->database if it does not exist, takes a named lock so that concurrent
 * starters apply each file once, and applies the files V<N>__<name>.sql of dir not yet
 * recorded in schema_migrations, in version order. A file whose checksum changed after it
 * was applied is an error. Returns 0; -1 with errstr filled when the server could not be
 * reached or was busy (try again); DB_MIGRATIONS_PERMANENT with errstr filled for a bad
 * database name, an unreadable directory, a badly named or changed file, or a statement
 * the server rejects. *applied (may be NULL) = files applied now. */
int db_migrations_apply(const struct db_config *cfg, const char *dir, unsigned *applied,
                        char *errstr, size_t errlen);

/* True when mysql_errno_value (mysql_errno / mysql_stmt_errno) means the connection is
 * broken (server gone, lost, killed, shutting down): close it and open a new one. */
bool db_is_connection_error(unsigned mysql_errno_value);

/* True when mysql_errno_value is an error of a healthy connection that may go away if the
 * same work is tried again later (lock wait timeout, deadlock, read-only during a failover,
 * interrupted, too many connections): the caller reports "unavailable", not a bug. */
bool db_is_transient_error(unsigned mysql_errno_value);

/* db_migrations_apply, retried once a second while the database cannot be reached yet
 * (a service starting beside its database), for at most wait_s seconds or until stop()
 * returns true (stop may be NULL). Logs the outcome. Returns 0; -1 (errstr filled) when
 * wait_s passed; DB_MIGRATIONS_PERMANENT (errstr filled) at once when retrying cannot
 * help; DB_MIGRATIONS_STOPPED when stop() asked to stop. */
int db_migrations_apply_waiting(const struct db_config *cfg, const char *dir, unsigned wait_s,
                                bool (*stop)(void), char *errstr, size_t errlen);

#endif
