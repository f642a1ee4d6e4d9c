/* db_fixture: a private database on the real test MariaDB for one integration test run. */
#ifndef TESTS_INTEGRATION_USERDATA_DB_FIXTURE_H
#define TESTS_INTEGRATION_USERDATA_DB_FIXTURE_H

#include <stddef.h>

#include "datasources/mariadb_user_repo.h"
#include "shared/db.h"

struct db_fixture {
    struct mariadb_config cfg; /* strings point into the buffers below */
    struct db_config db;       /* the same settings for shared/db.h (migrations, admin SQL) */
    char host[256];
    char user[128];
    char password[256];
    char database[65];
    char ctl[4096]; /* TEST_DB_CTL: the test-mariadb.sh script; "" when unset */
};

/* Reads TEST_DB_HOST/PORT/USER/PASSWORD (and TEST_DB_CTL), names a fresh database
 * "userdata_test_<tag>_<pid>_<random>" and checks that the server answers. Returns 0, or
 * -1 after printing why (unset variables, unreachable server) to stderr: the caller fails. */
int db_fixture_init(struct db_fixture *f, const char *tag);

/* Runs fixed admin SQL (DROP, KILL, ...) on a connection of its own; with_database selects
 * f's database. -1 after printing the server's error. */
int db_fixture_exec(const struct db_fixture *f, int with_database, const char *sql);

/* Runs fixed admin SQL as the test server's root (user root, no password, as
 * scripts/lib/test-mariadb.sh sets it up), for what the test user may not do (SET GLOBAL).
 * When out is not NULL it gets the first column of the first row ("" for none or NULL).
 * -1 after printing why (root cannot log in, say on another server). */
int db_fixture_root_exec(const struct db_fixture *f, const char *sql, char *out, size_t outlen);

/* Counts rows of a fixed query's first column as an integer (e.g. SELECT COUNT(*)).
 * -1 on error. */
long long db_fixture_scalar(const struct db_fixture *f, const char *sql);

/* DROP DATABASE IF EXISTS of f's database. */
int db_fixture_drop(const struct db_fixture *f);

/* Runs "$TEST_DB_CTL <verb>" (start, stop, restart) and waits for it. Its exit code, or -1
 * when TEST_DB_CTL is unset or cannot be run. */
int db_fixture_ctl(const struct db_fixture *f, const char *verb);

/* Absolute path of services/userdata/migrations (compiled in). */
const char *db_fixture_migrations_dir(void);

#endif
