/* Integration tests of mariadb_delivery_log against the real test MariaDB
 * (scripts/lib/test-mariadb.sh): the begin/mark_sent/mark_failed/record_attempt life of a
 * row, and UNAVAILABLE at once while the server is down, then recovery on the same object
 * when it is back. Each run uses its own database notifications_test_<pid>, dropped at the
 * end. The name starts with "userdata" because scripts/lib/test-mariadb.sh grants the test
 * user `userdata%` only (see the report: it should also grant `notifications%`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "datasources/mariadb_delivery_log.h"
#include "pe_test_util.h"
#include "shared/db.h"

#ifndef PUSH_EMAIL_MIGRATIONS_DIR
#error "PUSH_EMAIL_MIGRATIONS_DIR must be defined by the build"
#endif

static struct db_config cfg;
static char database[64];
static const char *ctl;
static struct mariadb_delivery_log *dlog;
static struct delivery_log port;

static int env_required(const char *name, const char **out)
{
    *out = getenv(name);
    if (*out == NULL || (*out)[0] == '\0') {
        fprintf(stderr,
                "FAIL: %s is not set. These tests need the real test MariaDB:\n"
                "  scripts/lib/test-mariadb.sh start && eval \"$(scripts/lib/test-mariadb.sh "
                "env)\"\n",
                name);
        return -1;
    }
    return 0;
}

/* Runs fixed SQL; the first column of the first row as an integer (-1 when none). */
static long long scalar(const char *sql)
{
    char err[256];
    long long v = -1;
    MYSQL_RES *res = NULL;
    MYSQL_ROW row;
    MYSQL *db = db_connect(&cfg, true, err, sizeof err);

    if (db == NULL) {
        fprintf(stderr, "scalar: %s\n", err);
        return -1;
    }
    if (mysql_real_query(db, sql, (unsigned long)strlen(sql)) == 0 &&
        (res = mysql_store_result(db)) != NULL && (row = mysql_fetch_row(res)) != NULL &&
        row[0] != NULL) {
        v = strtoll(row[0], NULL, 10);
    }
    if (res != NULL) {
        mysql_free_result(res);
    }
    mysql_close(db);
    return v;
}

static int drop_database(void)
{
    char err[256], sql[128];
    MYSQL *db = db_connect(&cfg, false, err, sizeof err);
    int rc;

    if (db == NULL) {
        fprintf(stderr, "drop: %s\n", err);
        return -1;
    }
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%s`", database);
    rc = mysql_real_query(db, sql, (unsigned long)strlen(sql)) == 0 ? 0 : -1;
    mysql_close(db);
    return rc;
}

static int group_setup(void **state)
{
    const char *port_s;
    char err[512] = "";
    unsigned applied = 0;
    (void)state;

    if (env_required("TEST_DB_HOST", &cfg.host) != 0 || env_required("TEST_DB_PORT", &port_s) ||
        env_required("TEST_DB_USER", &cfg.user) != 0 ||
        env_required("TEST_DB_PASSWORD", &cfg.password) != 0) {
        return -1;
    }
    ctl = getenv("TEST_DB_CTL");
    cfg.port = (uint16_t)strtoul(port_s, NULL, 10);
    snprintf(database, sizeof database, "userdata_notifications_test_%ld", (long)getpid());
    cfg.database = database;
    cfg.connect_timeout_s = 2;
    cfg.io_timeout_s = 5;
    if (db_migrations_apply(&cfg, PUSH_EMAIL_MIGRATIONS_DIR, &applied, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: migrations: %s\n", err);
        return -1;
    }
    if (applied != 1) {
        fprintf(stderr, "FAIL: expected 1 migration applied, got %u\n", applied);
        return -1;
    }
    dlog = mariadb_delivery_log_new(&cfg);
    if (dlog == NULL) {
        return -1;
    }
    port = mariadb_delivery_log_port(dlog);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mariadb_delivery_log_free(dlog);
    return drop_database();
}

static void test_begin_new_is_pending_and_again_the_same(void **state)
{
    enum delivery_state st = DELIVERY_SENT;
    (void)state;

    assert_int_equal(port.ops->begin(port.self, "1:bin.000001:100:0:welcome:a@example.org",
                                     "welcome", "a@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    st = DELIVERY_SENT;
    assert_int_equal(port.ops->begin(port.self, "1:bin.000001:100:0:welcome:a@example.org",
                                     "welcome", "a@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries"), 1);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE key_hash = UNHEX(SHA2("
                            "'1:bin.000001:100:0:welcome:a@example.org', 256)) AND kind = "
                            "'welcome' AND recipient = 'a@example.org' AND attempts = 0"),
                     1);
}

static void test_mark_sent_is_seen_by_begin(void **state)
{
    const char *key = "1:bin.000001:200:0:welcome:b@example.org";
    enum delivery_state st;
    (void)state;

    assert_int_equal(port.ops->begin(port.self, key, "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(port.ops->mark_sent(port.self, key), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at "
                            "IS NOT NULL AND recipient = 'b@example.org'"),
                     1);
}

static void test_record_attempt_counts_and_mark_failed_fails(void **state)
{
    const char *key = "1:bin.000001:300:0:welcome:c@example.org";
    enum delivery_state st;
    (void)state;

    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->record_attempt(port.self, key, "451 4.3.0 try again later"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->record_attempt(port.self, key, "connect: refused\r\n\xff"),
                     DELIVERY_LOG_OK);
    assert_int_equal(scalar("SELECT attempts FROM deliveries WHERE recipient = 'c@example.org'"),
                     2);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(port.ops->mark_failed(port.self, key, "550 5.1.1 mailbox unavailable"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_FAILED);
    assert_int_equal(scalar("SELECT attempts FROM deliveries WHERE recipient = 'c@example.org' "
                            "AND last_error = '550 5.1.1 mailbox unavailable'"),
                     3);
}

static void test_marking_an_unknown_key_is_internal(void **state)
{
    (void)state;
    assert_int_equal(port.ops->mark_sent(port.self, "never-begun"), DELIVERY_LOG_INTERNAL);
}

static void test_long_key_and_utf8_recipient_are_stored(void **state)
{
    char key[2048];
    enum delivery_state st;
    (void)state;

    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "zoë@exämple.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(port.ops->mark_sent(port.self, key), DELIVERY_LOG_OK);
    assert_int_equal(scalar("SELECT CHAR_LENGTH(dedupe_key) FROM deliveries WHERE recipient = "
                            "'zoë@exämple.org'"),
                     512);
}

/* RUN_SERIAL orders tests of one ctest run only: other runs that stop the shared test
 * database take the same exclusive lock (see tests/integration/userdata). */
static int db_lock(void)
{
    char real[PATH_MAX], path[PATH_MAX + 64];
    const char *dir = getenv("TEST_DB_DIR");
    long long deadline = pe_now_ms() + 300000;
    int fd = -1;

    if (dir != NULL && dir[0] != '\0') {
        snprintf(path, sizeof path, "%s/service-tests.lock", dir);
    } else if (ctl != NULL && realpath(ctl, real) != NULL) {
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(real, '/');
            if (slash != NULL) {
                *slash = '\0';
            }
        }
        snprintf(path, sizeof path, "%s/.cache/test-mariadb/service-tests.lock", real);
    } else {
        snprintf(path, sizeof path, "/tmp/test-mariadb-%u.service-tests.lock", (unsigned)cfg.port);
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (pe_now_ms() > deadline) {
            close(fd);
            return -1;
        }
        pe_sleep_ms(200);
    }
    return fd;
}

static int db_ctl(const char *verb)
{
    char *argv[] = {(char *)(uintptr_t)ctl, (char *)(uintptr_t)verb, NULL};
    return pe_run(argv, NULL);
}

static void test_server_down_is_unavailable_fast_then_recovers(void **state)
{
    const char *key = "1:bin.000001:400:0:welcome:d@example.org";
    enum delivery_state st;
    long long t0;
    int lock;
    (void)state;

    if (ctl == NULL || ctl[0] == '\0') {
        fail_msg("TEST_DB_CTL is not set (eval \"$(scripts/lib/test-mariadb.sh env)\")");
    }
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "d@example.org", &st),
                     DELIVERY_LOG_OK);
    lock = db_lock();
    assert_true(lock >= 0);
    if (db_ctl("stop") != 0) {
        close(lock);
        fail_msg("could not stop the test database");
    }
    t0 = pe_now_ms();
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "d@example.org", &st),
                     DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(port.ops->mark_sent(port.self, key), DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(port.ops->ping(port.self), DELIVERY_LOG_UNAVAILABLE);
    long long took = pe_now_ms() - t0;
    int started = db_ctl("start");
    close(lock);
    assert_int_equal(started, 0);
    assert_true(took < 3000);
    /* The same object works again, without being told. */
    assert_int_equal(port.ops->ping(port.self), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->mark_sent(port.self, key), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "d@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_new_is_pending_and_again_the_same),
        cmocka_unit_test(test_mark_sent_is_seen_by_begin),
        cmocka_unit_test(test_record_attempt_counts_and_mark_failed_fails),
        cmocka_unit_test(test_marking_an_unknown_key_is_internal),
        cmocka_unit_test(test_long_key_and_utf8_recipient_are_stored),
        cmocka_unit_test(test_server_down_is_unavailable_fast_then_recovers),
    };
    return cmocka_run_group_tests_name("mariadb_delivery_log", tests, group_setup, group_teardown);
}
