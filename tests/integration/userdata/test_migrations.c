/* Integration tests of db_migrations_apply (shared/db.h) against the real test MariaDB: applies
 * once, in numeric version order, detects edited files, serialises concurrent starters, and rejects
 * malformed files and database names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "db_fixture.h"

static struct db_fixture fx;
static char tmpdir[] = "/tmp/userdata-migrations-XXXXXX";

static int group_setup(void **state)
{
    (void)state;
    if (db_fixture_init(&fx, "mig") != 0) {
        return -1;
    }
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

static void remove_tmp_files(void)
{
    static const char *const names[] = {
        "V001__create_users.sql",      "V2__b.sql",     "V10__c.sql", "V3__bad.sql", "V3__open.sql",
        "V1_no_double_underscore.sql", "V4__insert.sql"};
    char path[512];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
}

static int group_teardown(void **state)
{
    (void)state;
    remove_tmp_files();
    rmdir(tmpdir);
    return db_fixture_drop(&fx);
}

/* Each test starts on an empty database and an empty temp dir. */
static int test_setup(void **state)
{
    (void)state;
    remove_tmp_files();
    return db_fixture_drop(&fx);
}

static void write_file(const char *name, const char *text)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_repo_migrations_apply_once(void **state)
{
    char err[512] = "";
    unsigned applied = 99;
    (void)state;

    if (db_migrations_apply(&fx.db, db_fixture_migrations_dir(), &applied, err, sizeof err) != 0) {
        fail_msg("first apply: %s", err);
    }
    assert_int_equal(applied, 1);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM users"), 0);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM schema_migrations WHERE "
                                            "version = 1 AND name = 'V001__create_users.sql' "
                                            "AND checksum REGEXP '^[0-9a-f]{64}$'"),
                     1);
    /* The database was created with utf8mb4. */
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '%s' AND "
             "DEFAULT_CHARACTER_SET_NAME = 'utf8mb4'",
             fx.database);
    assert_int_equal(db_fixture_scalar(&fx, sql), 1);

    applied = 99;
    if (db_migrations_apply(&fx.db, db_fixture_migrations_dir(), &applied, err, sizeof err) != 0) {
        fail_msg("second apply: %s", err);
    }
    assert_int_equal(applied, 0);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM schema_migrations"), 1);
}

static void test_versions_apply_in_numeric_order(void **state)
{
    char err[512] = "";
    unsigned applied = 0;
    (void)state;

    /* V10 alters what V2 creates: a name sort would run V10 first and fail. */
    write_file("V2__b.sql", "-- a comment; with a semicolon\n"
                            "CREATE TABLE t2 (\n"
                            "  id INT PRIMARY KEY,\n"
                            "  note VARCHAR(20) DEFAULT 'a;b'\n"
                            ");\n"
                            "INSERT INTO t2 (id) VALUES (1);\n"
                            "INSERT INTO t2 (id) VALUES (2);\n");
    write_file("V10__c.sql", "ALTER TABLE t2 ADD COLUMN extra INT NOT NULL DEFAULT 7;\n");
    if (db_migrations_apply(&fx.db, tmpdir, &applied, err, sizeof err) != 0) {
        fail_msg("apply: %s", err);
    }
    assert_int_equal(applied, 2);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT SUM(extra) FROM t2"), 14);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM t2 WHERE note = 'a;b'"), 2);
    assert_int_equal(
        db_fixture_scalar(&fx, "SELECT GROUP_CONCAT(version ORDER BY applied_at, version) = "
                               "'2,10' FROM schema_migrations"),
        1);
}

static void test_changed_checksum_is_an_error(void **state)
{
    char err[512] = "";
    unsigned applied = 0;
    (void)state;

    write_file("V2__b.sql", "CREATE TABLE t2 (id INT PRIMARY KEY);\n");
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, &applied, err, sizeof err), 0);
    assert_int_equal(applied, 1);
    write_file("V2__b.sql", "CREATE TABLE t2 (id BIGINT PRIMARY KEY);\n");
    err[0] = '\0';
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, &applied, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    assert_int_equal(applied, 0);
    if (strstr(err, "V2__b.sql") == NULL || strstr(err, "changed") == NULL) {
        fail_msg("unclear error: %s", err);
    }
}

static void test_failing_statement_is_reported_and_not_recorded(void **state)
{
    char err[512] = "";
    unsigned applied = 0;
    (void)state;

    write_file("V2__b.sql", "CREATE TABLE t2 (id INT PRIMARY KEY);\n");
    write_file("V3__bad.sql", "CREATE TABLE t3 (id INT PRIMARY KEY, id INT);\n");
    /* The server refuses it (duplicate column): no retry can mend that. */
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, &applied, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    if (strstr(err, "V3__bad.sql") == NULL) {
        fail_msg("error does not name the file: %s", err);
    }
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM schema_migrations"), 1);
}

static void test_statement_without_semicolon_is_an_error(void **state)
{
    char err[512] = "";
    (void)state;

    write_file("V3__open.sql", "CREATE TABLE t3 (id INT PRIMARY KEY)\n");
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, NULL, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    if (strstr(err, "';'") == NULL) {
        fail_msg("unclear error: %s", err);
    }
}

static void test_badly_named_sql_file_is_an_error(void **state)
{
    char err[512] = "";
    (void)state;

    write_file("V1_no_double_underscore.sql", "SELECT 1;\n");
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, NULL, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    if (strstr(err, "V1_no_double_underscore.sql") == NULL) {
        fail_msg("unclear error: %s", err);
    }
}

static void test_hostile_database_name_is_refused(void **state)
{
    char err[512] = "";
    struct db_config cfg = fx.db;
    (void)state;

    cfg.database = "userdata_x`; DROP DATABASE mysql; --";
    assert_false(db_name_valid(cfg.database));
    assert_int_equal(db_migrations_apply(&cfg, db_fixture_migrations_dir(), NULL, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    assert_non_null(strstr(err, "database name"));
}

static void test_unreachable_server_fails_fast(void **state)
{
    char err[512] = "";
    struct db_config cfg = fx.db;
    struct timespec t0, t1;
    (void)state;

    cfg.port = 1; /* nothing listens there */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(db_migrations_apply(&cfg, db_fixture_migrations_dir(), NULL, err, sizeof err),
                     -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 10);
    assert_non_null(strstr(err, "connect"));
}

static bool stop_now(void)
{
    return true;
}

/* The waiting form retries only what may pass: a bad file fails at once though the wait
 * is long, and a stop request while the server is away ends the wait as "stopped". */
static void test_waiting_gives_up_at_once_on_what_cannot_pass(void **state)
{
    char err[512] = "";
    struct db_config cfg = fx.db;
    struct timespec t0, t1;
    (void)state;

    write_file("V1_no_double_underscore.sql", "SELECT 1;\n");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(db_migrations_apply_waiting(&fx.db, tmpdir, 60, NULL, err, sizeof err),
                     DB_MIGRATIONS_PERMANENT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    assert_non_null(strstr(err, "V1_no_double_underscore.sql"));

    cfg.port = 1; /* nothing listens there */
    assert_int_equal(db_migrations_apply_waiting(&cfg, db_fixture_migrations_dir(), 60, stop_now,
                                                 err, sizeof err),
                     DB_MIGRATIONS_STOPPED);
    /* Unreachable with no stop: -1 once the wait is over. */
    assert_int_equal(
        db_migrations_apply_waiting(&cfg, db_fixture_migrations_dir(), 0, NULL, err, sizeof err),
        -1);
}

/* A privilege not granted yet (operators may grant step by step) is worth waiting for: -1,
 * not DB_MIGRATIONS_PERMANENT. The user may create tables and record migrations, but not
 * insert into the table the file creates. */
static void test_missing_privilege_is_retried(void **state)
{
    char err[512] = "";
    char sql[512];
    struct db_config limited = fx.db;
    /* Users and grants need the test server's root (no password, 127.0.0.1 only: see
     * scripts/lib/test-mariadb.sh); TEST_DB_ROOT_USER/_PASSWORD for another server. */
    struct db_fixture admin = fx;
    const char *ru = getenv("TEST_DB_ROOT_USER");
    const char *rp = getenv("TEST_DB_ROOT_PASSWORD");
    (void)state;

    admin.db.user = ru != NULL ? ru : "root";
    admin.db.password = rp != NULL ? rp : "";
    assert_int_equal(db_migrations_apply(&fx.db, tmpdir, NULL, err, sizeof err), 0);
    (void)db_fixture_exec(&admin, 0, "DROP USER IF EXISTS 'mig_limited'@'%'");
    assert_int_equal(
        db_fixture_exec(&admin, 0, "CREATE USER 'mig_limited'@'%' IDENTIFIED BY 'mig-limited-pw'"),
        0);
    snprintf(sql, sizeof sql, "GRANT CREATE, SELECT ON `%s`.* TO 'mig_limited'@'%%'", fx.database);
    assert_int_equal(db_fixture_exec(&admin, 0, sql), 0);
    snprintf(sql, sizeof sql, "GRANT INSERT ON `%s`.`schema_migrations` TO 'mig_limited'@'%%'",
             fx.database);
    assert_int_equal(db_fixture_exec(&admin, 0, sql), 0);
    limited.user = "mig_limited";
    limited.password = "mig-limited-pw";
    write_file("V4__insert.sql",
               "CREATE TABLE t4 (id INT PRIMARY KEY);\nINSERT INTO t4 VALUES (1);\n");
    int rc = db_migrations_apply(&limited, tmpdir, NULL, err, sizeof err);
    (void)db_fixture_exec(&admin, 0, "DROP USER IF EXISTS 'mig_limited'@'%'");
    if (rc != -1)
        fail_msg("want -1 (retry), got %d: %s", rc, err);
    assert_non_null(strstr(err, "V4__insert.sql"));
}

struct starter {
    unsigned applied;
    int rc;
    char err[512];
};

static void *starter_main(void *arg)
{
    struct starter *s = arg;
    s->rc = db_migrations_apply(&fx.db, db_fixture_migrations_dir(), &s->applied, s->err,
                                sizeof s->err);
    return NULL;
}

static void test_concurrent_starters_apply_each_file_once(void **state)
{
    enum { STARTERS = 6 };
    pthread_t t[STARTERS];
    struct starter s[STARTERS];
    unsigned total = 0;
    (void)state;

    memset(s, 0, sizeof s);
    for (int i = 0; i < STARTERS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, starter_main, &s[i]), 0);
    }
    for (int i = 0; i < STARTERS; i++) {
        pthread_join(t[i], NULL);
        if (s[i].rc != 0) {
            fail_msg("starter %d: %s", i, s[i].err);
        }
        total += s[i].applied;
    }
    assert_int_equal(total, 1);
    assert_int_equal(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM schema_migrations"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_repo_migrations_apply_once, test_setup),
        cmocka_unit_test_setup(test_versions_apply_in_numeric_order, test_setup),
        cmocka_unit_test_setup(test_changed_checksum_is_an_error, test_setup),
        cmocka_unit_test_setup(test_failing_statement_is_reported_and_not_recorded, test_setup),
        cmocka_unit_test_setup(test_statement_without_semicolon_is_an_error, test_setup),
        cmocka_unit_test_setup(test_badly_named_sql_file_is_an_error, test_setup),
        cmocka_unit_test_setup(test_hostile_database_name_is_refused, test_setup),
        cmocka_unit_test_setup(test_unreachable_server_fails_fast, test_setup),
        cmocka_unit_test_setup(test_waiting_gives_up_at_once_on_what_cannot_pass, test_setup),
        cmocka_unit_test_setup(test_missing_privilege_is_retried, test_setup),
        cmocka_unit_test_setup(test_concurrent_starters_apply_each_file_once, test_setup),
    };
    return cmocka_run_group_tests_name("migrations", tests, group_setup, group_teardown);
}
