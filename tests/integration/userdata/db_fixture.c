/* db_fixture: a private database on the real test MariaDB for one integration test run. */
#include "db_fixture.h"

#include <mysql.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef USERDATA_MIGRATIONS_DIR
#error "USERDATA_MIGRATIONS_DIR must be defined by the build"
#endif

static int copy_env(const char *name, char *out, size_t size, int required)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        out[0] = '\0';
        if (required) {
            fprintf(stderr,
                    "FAIL: %s is not set. These tests need the real test MariaDB:\n"
                    "  scripts/lib/test-mariadb.sh start && eval \"$(scripts/lib/test-mariadb.sh "
                    "env)\"\n",
                    name);
        }
        return required ? -1 : 0;
    }
    if ((size_t)snprintf(out, size, "%s", v) >= size) {
        fprintf(stderr, "FAIL: %s is too long\n", name);
        return -1;
    }
    return 0;
}

int db_fixture_init(struct db_fixture *f, const char *tag)
{
    char port[16];
    char err[512];
    MYSQL *db;
    long p;

    memset(f, 0, sizeof *f);
    if (copy_env("TEST_DB_HOST", f->host, sizeof f->host, 1) != 0 ||
        copy_env("TEST_DB_PORT", port, sizeof port, 1) != 0 ||
        copy_env("TEST_DB_USER", f->user, sizeof f->user, 1) != 0 ||
        copy_env("TEST_DB_PASSWORD", f->password, sizeof f->password, 1) != 0 ||
        copy_env("TEST_DB_CTL", f->ctl, sizeof f->ctl, 0) != 0) {
        return -1;
    }
    p = strtol(port, NULL, 10);
    if (p <= 0 || p > 65535) {
        fprintf(stderr, "FAIL: TEST_DB_PORT=%s is not a port\n", port);
        return -1;
    }
    if (sodium_init() < 0) {
        return -1;
    }
    snprintf(f->database, sizeof f->database, "userdata_test_%s_%ld_%08x", tag, (long)getpid(),
             (unsigned)randombytes_random());
    f->cfg.host = f->host;
    f->cfg.port = (uint16_t)p;
    f->cfg.user = f->user;
    f->cfg.password = f->password;
    f->cfg.database = f->database;
    f->cfg.pool_size = 4;
    f->cfg.connect_timeout_s = 3;
    f->cfg.io_timeout_s = 5;
    f->db = (struct db_config){
        .host = f->host,
        .port = f->cfg.port,
        .user = f->user,
        .password = f->password,
        .database = f->database,
        .connect_timeout_s = f->cfg.connect_timeout_s,
        .io_timeout_s = f->cfg.io_timeout_s,
    };
    db = db_connect(&f->db, false, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr,
                "FAIL: the test MariaDB at %s:%ld does not answer: %s\n"
                "  start it with scripts/lib/test-mariadb.sh start\n",
                f->host, p, err);
        f->database[0] = '\0'; /* nothing to drop in teardown */
        return -1;
    }
    mysql_close(db);
    return 0;
}

/* Runs sql on a connection of its own (cfg, selecting its database when with_database).
 * When first is not NULL it gets the first column of the first row ("" for none or NULL).
 * 0, or -1 after printing why, prefixed with who. */
static int run_sql(const struct db_config *cfg, bool with_database, const char *who,
                   const char *sql, char *first, size_t firstlen)
{
    char err[512];
    int rc = -1;
    MYSQL_RES *res = NULL;
    MYSQL *db = db_connect(cfg, with_database, err, sizeof err);

    if (first != NULL && firstlen > 0) {
        first[0] = '\0';
    }
    if (db == NULL) {
        fprintf(stderr, "%s: %s\n", who, err);
        goto out;
    }
    if (mysql_real_query(db, sql, (unsigned long)strlen(sql)) != 0) {
        fprintf(stderr, "%s: %s: %s\n", who, sql, mysql_error(db));
        goto out;
    }
    res = mysql_store_result(db);
    if (res != NULL && first != NULL && firstlen > 0) {
        MYSQL_ROW row = mysql_fetch_row(res);
        if (row != NULL && row[0] != NULL) {
            snprintf(first, firstlen, "%s", row[0]);
        }
    }
    rc = 0;
out:
    if (res != NULL) {
        mysql_free_result(res);
    }
    if (db != NULL) {
        mysql_close(db);
    }
    return rc;
}

int db_fixture_exec(const struct db_fixture *f, int with_database, const char *sql)
{
    return run_sql(&f->db, with_database != 0, "db_fixture_exec", sql, NULL, 0);
}

int db_fixture_root_exec(const struct db_fixture *f, const char *sql, char *out, size_t outlen)
{
    struct db_config root = f->db;
    root.user = "root";
    root.password = "";
    return run_sql(&root, false, "db_fixture_root_exec", sql, out, outlen);
}

long long db_fixture_scalar(const struct db_fixture *f, const char *sql)
{
    char first[64];

    if (run_sql(&f->db, true, "db_fixture_scalar", sql, first, sizeof first) != 0 ||
        first[0] == '\0') {
        return -1;
    }
    return strtoll(first, NULL, 10);
}

int db_fixture_drop(const struct db_fixture *f)
{
    char sql[128];
    if (f->database[0] == '\0' || f->cfg.host == NULL) {
        return 0; /* init failed before naming a database: nothing was created */
    }
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%s`", f->database);
    return db_fixture_exec(f, 0, sql);
}

int db_fixture_ctl(const struct db_fixture *f, const char *verb)
{
    pid_t pid;
    int status;

    if (f->ctl[0] == '\0') {
        fprintf(stderr, "FAIL: TEST_DB_CTL is not set (eval \"$(scripts/lib/test-mariadb.sh "
                        "env)\")\n");
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        execl("/bin/bash", "bash", f->ctl, verb, (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *db_fixture_migrations_dir(void)
{
    return USERDATA_MIGRATIONS_DIR;
}
