/* Integration tests of mariadb_delivery_log against the real test MariaDB
 * (scripts/lib/test-mariadb.sh): the begin/mark_sent/mark_failed/record_attempt life of a
 * row; `sent` marks written behind (seen by begin at once, in the table once durable, many
 * committed together, a second object sees them after flush); UNAVAILABLE at once while the
 * server is down, marks kept meanwhile and committed when it is back, on the same object. Each run
 * uses its own database notifications_test_<pid>, dropped at the end. The name starts with
 * "userdata" because scripts/lib/test-mariadb.sh grants the test user `userdata%` only (see the
 * report: it should also grant `notifications%`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <mysql.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
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

/* calloc is wrapped (-Wl,--wrap=calloc, CMakeLists.txt) for the code linked statically into
 * this test, the delivery log's included: while g_fail_calloc > 0, that many calls from the
 * thread g_fail_thread return NULL (out of memory). */
void *__real_calloc(size_t n, size_t size);
static int g_fail_calloc;
static pthread_t g_fail_thread;

void *__wrap_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size)
{
    if (g_fail_calloc > 0 && pthread_equal(pthread_self(), g_fail_thread)) {
        g_fail_calloc--;
        return NULL;
    }
    return __real_calloc(n, size);
}

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

static long long count_sent(const char *recipient)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND sent_at IS NOT NULL AND "
             "recipient = '%s'",
             recipient);
    return scalar(sql);
}

static void test_begin_is_pending_and_records_nothing(void **state)
{
    enum delivery_state st = DELIVERY_SENT;
    (void)state;

    for (int i = 0; i < 2; i++) {
        st = DELIVERY_SENT;
        assert_int_equal(port.ops->begin(port.self, "1:bin.000001:100:0:welcome:a@example.org",
                                         "welcome", "a@example.org", &st),
                         DELIVERY_LOG_OK);
        assert_int_equal(st, DELIVERY_PENDING);
    }
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE recipient = 'a@example.org'"),
                     0);
}

static void test_mark_sent_is_seen_at_once_and_durable_after_flush(void **state)
{
    const char *key = "1:bin.000001:200:0:welcome:b@example.org";
    enum delivery_state st;
    (void)state;

    uint64_t before = port.ops->written(port.self);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(port.ops->mark_sent(port.self, key, "welcome", "b@example.org"),
                     DELIVERY_LOG_OK);
    /* Queued for the writer, with a ticket; begin() sees it before any commit. */
    assert_int_equal(port.ops->written(port.self), before + 1);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    /* flush() (what the send gate and the consumer wait on) returns once it is committed:
     * a crash now would not send this email again. */
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_true(port.ops->durable(port.self) >= before + 1);
    assert_int_equal(count_sent("b@example.org"), 1);
    /* And begin() says so. */
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(count_sent("b@example.org"), 1);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE key_hash = UNHEX(SHA2("
                            "'1:bin.000001:200:0:welcome:b@example.org', 256)) AND kind = "
                            "'welcome' AND attempts = 0"),
                     1);
    /* A second log (a restarted push-email) reads it from the table. */
    struct mariadb_delivery_log *other = mariadb_delivery_log_new(&cfg);
    assert_non_null(other);
    struct delivery_log p2 = mariadb_delivery_log_port(other);
    assert_int_equal(p2.ops->begin(p2.self, key, "welcome", "b@example.org", &st), DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    mariadb_delivery_log_free(other);
}

/* SQL as the test server's root (TCP, no password: scripts/lib/test-mariadb.sh). */
static int as_root(const char *sql)
{
    char err[256];
    struct db_config root = cfg;
    root.user = "root";
    root.password = "";
    MYSQL *db = db_connect(&root, false, err, sizeof err);
    if (db == NULL) {
        fprintf(stderr, "as_root: %s\n", err);
        return -1;
    }
    int rc = mysql_real_query(db, sql, (unsigned long)strlen(sql)) == 0 ? 0 : -1;
    if (rc != 0) {
        fprintf(stderr, "as_root: %s\n", mysql_error(db));
    }
    mysql_close(db);
    return rc;
}

/* A server whose sessions start with autocommit off (autocommit=0 in its configuration, as
 * some hardened setups have): every write is still committed, and another connection sees
 * it while the log is still open. Without it the marks would sit in open transactions,
 * durable() would count them, and a restart would mail those people again. */
static void test_marks_are_committed_when_the_server_defaults_to_no_autocommit(void **state)
{
    const char *key = "1:bin.000001:250:0:welcome:ac@example.org";
    const char *key2 = "1:bin.000001:251:0:welcome:ac2@example.org";
    enum delivery_state st;
    (void)state;

    assert_int_equal(as_root("SET GLOBAL autocommit = 0"), 0);
    struct mariadb_delivery_log *l = mariadb_delivery_log_new(&cfg);
    assert_non_null(l);
    struct delivery_log p = mariadb_delivery_log_port(l);
    int ok_begin = p.ops->begin(p.self, key, "welcome", "ac@example.org", &st) == DELIVERY_LOG_OK;
    int ok_mark = p.ops->mark_sent(p.self, key, "welcome", "ac@example.org") == DELIVERY_LOG_OK;
    int ok_flush = p.ops->flush(p.self, 10000) == DELIVERY_LOG_OK;
    int ok_failed = p.ops->mark_failed(p.self, key2, "welcome", "ac2@example.org",
                                       "550 no such user") == DELIVERY_LOG_OK;
    long long sent = count_sent("ac@example.org");
    long long failed = scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'failed' AND "
                              "recipient = 'ac2@example.org'");
    int restored = as_root("SET GLOBAL autocommit = 1");
    mariadb_delivery_log_free(l);
    assert_int_equal(restored, 0);
    assert_true(ok_begin && ok_mark && ok_flush && ok_failed);
    assert_int_equal(sent, 1);
    assert_int_equal(failed, 1);
}

static void test_many_marks_are_committed(void **state)
{
    char key[128], rcpt[64];
    (void)state;

    struct mariadb_delivery_log *l = mariadb_delivery_log_new(&cfg);
    assert_non_null(l);
    struct delivery_log p = mariadb_delivery_log_port(l);
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof key, "1:bin.000002:%d:0:welcome:bulk%d@example.org", i, i);
        snprintf(rcpt, sizeof rcpt, "bulk%d@example.org", i);
        assert_int_equal(p.ops->mark_sent(p.self, key, "welcome", rcpt), DELIVERY_LOG_OK);
    }
    mariadb_delivery_log_free(l);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND "
                            "recipient LIKE 'bulk%@example.org'"),
                     1000);
}

/* Kills every connection to the test database but the one doing it (the server drops
 * them, as after a wait_timeout or a failover). Returns how many it killed. */
static int kill_connections(void)
{
    char err[256], sql[256];
    MYSQL *db = db_connect(&cfg, true, err, sizeof err);
    MYSQL_RES *res;
    MYSQL_ROW row;
    long ids[64];
    int n = 0;

    if (db == NULL) {
        return -1;
    }
    snprintf(sql, sizeof sql,
             "SELECT id FROM information_schema.PROCESSLIST WHERE db = '%s' AND "
             "id <> CONNECTION_ID()",
             database);
    if (mysql_real_query(db, sql, (unsigned long)strlen(sql)) == 0 &&
        (res = mysql_store_result(db)) != NULL) {
        while ((row = mysql_fetch_row(res)) != NULL && n < 64) {
            ids[n++] = strtol(row[0], NULL, 10);
        }
        mysql_free_result(res);
    }
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, "KILL CONNECTION %ld", ids[i]);
        (void)mysql_real_query(db, sql, (unsigned long)strlen(sql));
    }
    mysql_close(db);
    return n;
}

/* A mark goes out on the caller's own connection (opened after a query of the caller's
 * succeeded) when nothing is pending before it, and its reply is read at the next flush:
 * values with quotes and backslashes arrive as they are. When the server has dropped that
 * connection, the writer commits the mark instead: nothing is lost. */
static void test_a_mark_on_a_dropped_connection_is_committed_by_the_writer(void **state)
{
    const char *key1 = "1:bin.000005:1:0:welcome:o'brien\\x@example.org";
    const char *key2 = "1:bin.000005:2:0:welcome:second@example.org";
    enum delivery_state st;
    (void)state;

    struct mariadb_delivery_log *l = mariadb_delivery_log_new(&cfg);
    assert_non_null(l);
    struct delivery_log p = mariadb_delivery_log_port(l);
    assert_int_equal(p.ops->begin(p.self, key1, "welcome", "o'brien\\x@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(p.ops->mark_sent(p.self, key1, "welcome", "o'brien\\x@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(p.ops->flush(p.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(p.ops->durable(p.self), p.ops->written(p.self));
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE state = 'sent' AND "
                            "recipient = 'o\\'brien\\\\x@example.org' AND key_hash = "
                            "UNHEX(SHA2('1:bin.000005:1:0:welcome:o\\'brien\\\\x@example."
                            "org', 256))"),
                     1);

    assert_true(kill_connections() >= 1);
    assert_int_equal(p.ops->mark_sent(p.self, key2, "welcome", "second@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(p.ops->begin(p.self, key2, "welcome", "second@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_int_equal(p.ops->flush(p.self, 15000), DELIVERY_LOG_OK);
    assert_int_equal(p.ops->durable(p.self), p.ops->written(p.self));
    assert_int_equal(count_sent("second@example.org"), 1);
    /* The next mark takes the writer's path (the direct one waits DIRECT_RETRY_MS after a
     * failure): committed all the same. */
    assert_int_equal(p.ops->mark_sent(p.self, "1:bin.000005:3:0:welcome:third@example.org",
                                      "welcome", "third@example.org"),
                     DELIVERY_LOG_OK);
    mariadb_delivery_log_free(l);
    assert_int_equal(count_sent("third@example.org"), 1);
}

static void test_record_attempt_counts_and_mark_failed_fails(void **state)
{
    const char *key = "1:bin.000001:300:0:welcome:c@example.org";
    enum delivery_state st;
    (void)state;

    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->record_attempt(port.self, key, "welcome", "c@example.org",
                                              "451 4.3.0 try again later"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->record_attempt(port.self, key, "welcome", "c@example.org",
                                              "connect: refused\r\n\xff"),
                     DELIVERY_LOG_OK);
    assert_int_equal(
        scalar("SELECT attempts FROM deliveries WHERE recipient = 'c@example.org' "
               "AND state = 'pending' AND last_error = CONCAT('connect: refused', REPEAT('?', 3))"),
        2);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    assert_int_equal(port.ops->mark_failed(port.self, key, "welcome", "c@example.org",
                                           "550 5.1.1 mailbox unavailable"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "c@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_FAILED);
    assert_int_equal(scalar("SELECT attempts FROM deliveries WHERE recipient = 'c@example.org' "
                            "AND last_error = '550 5.1.1 mailbox unavailable'"),
                     3);
    /* Failing a key never tried before creates its row. */
    assert_int_equal(port.ops->mark_failed(port.self, "1:bin.000001:301:0:welcome:e@example.org",
                                           "welcome", "e@example.org", "550 no such user"),
                     DELIVERY_LOG_OK);
    assert_int_equal(scalar("SELECT COUNT(*) FROM deliveries WHERE recipient = 'e@example.org' "
                            "AND state = 'failed' AND attempts = 1"),
                     1);
}

static void test_a_sent_key_stays_sent(void **state)
{
    const char *key = "1:bin.000001:350:0:welcome:f@example.org";
    enum delivery_state st;
    (void)state;

    assert_int_equal(port.ops->mark_sent(port.self, key, "welcome", "f@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->mark_failed(port.self, key, "welcome", "f@example.org", "550 late"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "f@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
}

/* prefetch: one lookup for a batch's keys (more than one statement's 64); begin() then
 * answers from it, also after our own marks, and falls back to the table for others. */
static void test_prefetch_answers_begin_for_a_batch(void **state)
{
    static char keys[100][96];
    const char *ptrs[100];
    enum delivery_state st;
    (void)state;

    for (int i = 0; i < 100; i++) {
        snprintf(keys[i], sizeof keys[i], "1:bin.000003:%d:0:welcome:pf%d@example.org", i, i);
        ptrs[i] = keys[i];
    }
    /* Rows before the prefetch: 3 sent, 7 failed; the rest have none. */
    assert_int_equal(port.ops->mark_sent(port.self, keys[3], "welcome", "pf3@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->mark_failed(port.self, keys[7], "welcome", "pf7@example.org", "550"),
                     DELIVERY_LOG_OK);
    /* 97 was sent by another member of the group: only the table knows. */
    struct mariadb_delivery_log *other = mariadb_delivery_log_new(&cfg);
    struct delivery_log p2 = mariadb_delivery_log_port(other);
    assert_int_equal(p2.ops->mark_sent(p2.self, keys[97], "welcome", "pf97@example.org"),
                     DELIVERY_LOG_OK);
    mariadb_delivery_log_free(other);

    port.ops->prefetch(port.self, ptrs, 100);
    assert_int_equal(port.ops->begin(port.self, keys[3], "welcome", "pf3@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_int_equal(port.ops->begin(port.self, keys[7], "welcome", "pf7@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_FAILED);
    assert_int_equal(port.ops->begin(port.self, keys[97], "welcome", "pf97@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT); /* second statement of the prefetch */
    assert_int_equal(port.ops->begin(port.self, keys[50], "welcome", "pf50@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_PENDING);
    /* Our own mark updates what begin() answers, also once it is committed. */
    assert_int_equal(port.ops->mark_sent(port.self, keys[50], "welcome", "pf50@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, keys[50], "welcome", "pf50@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    /* A key outside the batch asks the table. */
    assert_int_equal(port.ops->begin(port.self, "1:bin.000001:200:0:welcome:b@example.org",
                                     "welcome", "b@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
}

/* A mark being committed while a prefetch looks the key up: the SELECT cannot see it yet,
 * and once committed it leaves the in-memory list. begin() must still say SENT. A third
 * connection's gap lock on the key holds the writer's INSERT while the prefetch runs (a
 * plain SELECT does not wait for it). */
static void test_prefetch_during_a_commit_still_says_sent(void **state)
{
    const char *key = "1:bin.000004:10:0:welcome:race@example.org";
    char err[256], sql[256];
    enum delivery_state st = DELIVERY_PENDING;
    (void)state;

    MYSQL *locker = db_connect(&cfg, true, err, sizeof err);
    assert_non_null(locker);
    snprintf(sql, sizeof sql,
             "SELECT * FROM deliveries WHERE key_hash = UNHEX(SHA2('%s', 256)) FOR UPDATE", key);
    assert_int_equal(mysql_query(locker, "START TRANSACTION"), 0);
    assert_int_equal(mysql_query(locker, sql), 0);
    mysql_free_result(mysql_store_result(locker));

    uint64_t want = port.ops->written(port.self) + 1;
    assert_int_equal(port.ops->mark_sent(port.self, key, "welcome", "race@example.org"),
                     DELIVERY_LOG_OK);
    pe_sleep_ms(300); /* the writer is now waiting for the lock */
    assert_true(port.ops->durable(port.self) < want);
    port.ops->prefetch(port.self, &key, 1);
    assert_int_equal(mysql_query(locker, "COMMIT"), 0); /* the writer commits now */
    mysql_close(locker);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "race@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
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
    assert_int_equal(port.ops->mark_sent(port.self, key, "welcome", "zoë@exämple.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
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

/* While the server is down: begin, mark_failed and ping answer UNAVAILABLE at once; a mark
 * made then (its email went out before the server went away) is kept, flush() says it is
 * not durable, and the writer commits it once the server is back, on the same object. */
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
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    /* Prefetched just before: begin() answers these from memory while the server is down
     * (proof that a prefetched begin needs no round trip). */
    const char *pf[] = {"1:bin.000001:200:0:welcome:b@example.org",
                        "1:bin.000001:403:0:welcome:z@example.org"};
    port.ops->prefetch(port.self, pf, 2);
    lock = db_lock();
    assert_true(lock >= 0);
    if (db_ctl("stop") != 0) {
        close(lock);
        fail_msg("could not stop the test database");
    }
    t0 = pe_now_ms();
    enum delivery_log_err begin_down = port.ops->begin(
        port.self, "1:bin.000001:401:0:welcome:x@example.org", "welcome", "x@example.org", &st);
    enum delivery_log_err failed_down = port.ops->mark_failed(
        port.self, "1:bin.000001:402:0:welcome:y@example.org", "welcome", "y@example.org", "550");
    enum delivery_log_err ping_down = port.ops->ping(port.self);
    long long took = pe_now_ms() - t0;
    enum delivery_state pf_sent = DELIVERY_PENDING, pf_new = DELIVERY_SENT;
    enum delivery_log_err pf_sent_e =
        port.ops->begin(port.self, pf[0], "welcome", "b@example.org", &pf_sent);
    enum delivery_log_err pf_new_e =
        port.ops->begin(port.self, pf[1], "welcome", "z@example.org", &pf_new);
    enum delivery_log_err mark_down =
        port.ops->mark_sent(port.self, key, "welcome", "d@example.org");
    enum delivery_log_err seen_down =
        port.ops->begin(port.self, key, "welcome", "d@example.org", &st);
    enum delivery_state st_down = st;
    enum delivery_log_err flush_down = port.ops->flush(port.self, 1500);
    int started = db_ctl("start");
    close(lock);
    assert_int_equal(started, 0);
    assert_int_equal(pf_sent_e, DELIVERY_LOG_OK);
    assert_int_equal(pf_sent, DELIVERY_SENT);
    assert_int_equal(pf_new_e, DELIVERY_LOG_OK);
    assert_int_equal(pf_new, DELIVERY_PENDING);
    assert_int_equal(begin_down, DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(failed_down, DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(ping_down, DELIVERY_LOG_UNAVAILABLE);
    assert_true(took < 3000);
    assert_int_equal(mark_down, DELIVERY_LOG_OK); /* queued */
    assert_int_equal(seen_down, DELIVERY_LOG_OK); /* from memory */
    assert_int_equal(st_down, DELIVERY_SENT);
    assert_int_equal(flush_down, DELIVERY_LOG_UNAVAILABLE);
    assert_true(port.ops->durable(port.self) < port.ops->written(port.self));
    /* The writer retries with a backoff (at most 2 s between tries). */
    assert_int_equal(port.ops->flush(port.self, 15000), DELIVERY_LOG_OK);
    assert_int_equal(count_sent("d@example.org"), 1);
    /* The same object works again, without being told. */
    assert_int_equal(port.ops->ping(port.self), DELIVERY_LOG_OK);
    assert_int_equal(port.ops->begin(port.self, key, "welcome", "d@example.org", &st),
                     DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
}

/* Out of memory while the server is down: the first mark that cannot be allocated takes the
 * spare set aside at start, is kept and committed once the server is back (before, it had
 * to be written at once, failed, and its email would have been sent again); a second one
 * while the spare is in use is UNAVAILABLE. The spare is used again after its commit. */
static void test_a_mark_made_out_of_memory_is_kept_in_the_spare(void **state)
{
    const char *k1 = "1:bin.000007:1:0:welcome:oom1@example.org";
    const char *k2 = "1:bin.000007:2:0:welcome:oom2@example.org";
    const char *k3 = "1:bin.000007:3:0:welcome:oom3@example.org";
    enum delivery_state st = DELIVERY_PENDING;
    (void)state;

    if (ctl == NULL || ctl[0] == '\0') {
        fail_msg("TEST_DB_CTL is not set (eval \"$(scripts/lib/test-mariadb.sh env)\")");
    }
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    int lock = db_lock();
    assert_true(lock >= 0);
    if (db_ctl("stop") != 0) {
        close(lock);
        fail_msg("could not stop the test database");
    }
    g_fail_thread = pthread_self();
    g_fail_calloc = 2;
    enum delivery_log_err m1 = port.ops->mark_sent(port.self, k1, "welcome", "oom1@example.org");
    enum delivery_log_err m2 = port.ops->mark_sent(port.self, k2, "welcome", "oom2@example.org");
    int left = g_fail_calloc;
    g_fail_calloc = 0;
    enum delivery_log_err seen = port.ops->begin(port.self, k1, "welcome", "oom1@example.org", &st);
    int started = db_ctl("start");
    close(lock);
    assert_int_equal(started, 0);
    assert_int_equal(left, 0); /* both allocations failed */
    assert_int_equal(m1, DELIVERY_LOG_OK);
    assert_int_equal(seen, DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_int_equal(m2, DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(port.ops->flush(port.self, 15000), DELIVERY_LOG_OK);
    assert_int_equal(count_sent("oom1@example.org"), 1);
    assert_int_equal(count_sent("oom2@example.org"), 0);
    /* Committed: the spare is free again. */
    g_fail_calloc = 1;
    enum delivery_log_err m3 = port.ops->mark_sent(port.self, k3, "welcome", "oom3@example.org");
    left = g_fail_calloc;
    g_fail_calloc = 0;
    assert_int_equal(left, 0);
    assert_int_equal(m3, DELIVERY_LOG_OK);
    assert_int_equal(port.ops->flush(port.self, 10000), DELIVERY_LOG_OK);
    assert_int_equal(count_sent("oom3@example.org"), 1);
}

/* The pid of the test server, from `test-mariadb.sh status` ("running: pid N, ..."). */
static pid_t db_pid(void)
{
    char cmd[PATH_MAX + 16], line[512];
    long pid = -1;

    snprintf(cmd, sizeof cmd, "'%s' status", ctl);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        const char *p = strstr(line, "pid ");
        if (p != NULL) {
            pid = strtol(p + 4, NULL, 10);
        }
    }
    pclose(f);
    return pid > 0 ? (pid_t)pid : -1;
}

/* SIGSTOP is asynchronous: kill() returns before every thread of the server has stopped,
 * and a thread still running could yet answer a query. True once every thread of pid is
 * in state T (stopped), within 5 s. */
static bool all_threads_stopped(pid_t pid)
{
    char dir[64];
    long long deadline = pe_now_ms() + 5000;

    snprintf(dir, sizeof dir, "/proc/%ld/task", (long)pid);
    for (;;) {
        DIR *d = opendir(dir);
        bool all = d != NULL;
        struct dirent *e;

        while (d != NULL && (e = readdir(d)) != NULL) {
            char path[384], buf[512];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
            FILE *f = fopen(path, "r");
            size_t n = f != NULL ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f != NULL)
                fclose(f);
            buf[n] = '\0';
            const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
            if (paren != NULL && paren[1] == ' ' && paren[2] != 'T' && paren[2] != 't')
                all = false;
        }
        if (d != NULL)
            closedir(d);
        if (all)
            return true;
        if (pe_now_ms() >= deadline)
            return false;
        pe_sleep_ms(10);
    }
}

/* A server that stops answering without dropping the connection (SIGSTOP): a mark sent on
 * the caller's connection is not durable while no reply comes; after the I/O timeout (5 s
 * here) the writer takes it over, and commits it once the server answers again. */
static void test_a_silent_server_leaves_the_mark_to_the_writer(void **state)
{
    enum delivery_state st = DELIVERY_PENDING;
    const char *key = "1:bin.000006:2:0:welcome:silent@example.org";
    (void)state;

    if (ctl == NULL || ctl[0] == '\0') {
        fail_msg("TEST_DB_CTL is not set (eval \"$(scripts/lib/test-mariadb.sh env)\")");
    }
    struct mariadb_delivery_log *l = mariadb_delivery_log_new(&cfg);
    assert_non_null(l);
    struct delivery_log p = mariadb_delivery_log_port(l);
    assert_int_equal(p.ops->begin(p.self, key, "welcome", "silent@example.org", &st),
                     DELIVERY_LOG_OK); /* the server answers: the direct connection opens */
    assert_int_equal(p.ops->mark_sent(p.self, "1:bin.000006:1:0:welcome:loud@example.org",
                                      "welcome", "loud@example.org"),
                     DELIVERY_LOG_OK);
    assert_int_equal(p.ops->flush(p.self, 10000), DELIVERY_LOG_OK);
    int lock = db_lock();
    assert_true(lock >= 0);
    pid_t pid = db_pid();
    if (pid <= 0 || kill(pid, SIGSTOP) != 0) {
        close(lock);
        fail_msg("could not stop the test server (pid %ld)", (long)pid);
    }
    if (!all_threads_stopped(pid)) {
        kill(pid, SIGCONT);
        close(lock);
        fail_msg("the test server (pid %ld) did not stop within 5 s of SIGSTOP", (long)pid);
    }
    enum delivery_log_err marked = p.ops->mark_sent(p.self, key, "welcome", "silent@example.org");
    enum delivery_log_err flush_silent = p.ops->flush(p.self, 1000);
    enum delivery_log_err seen = p.ops->begin(p.self, key, "welcome", "silent@example.org", &st);
    bool behind = p.ops->durable(p.self) < p.ops->written(p.self);
    pe_sleep_ms(5500);
    enum delivery_log_err flush_late = p.ops->flush(p.self, 500);
    kill(pid, SIGCONT);
    close(lock);
    assert_int_equal(marked, DELIVERY_LOG_OK);
    assert_int_equal(flush_silent, DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(seen, DELIVERY_LOG_OK);
    assert_int_equal(st, DELIVERY_SENT);
    assert_true(behind);
    assert_int_equal(flush_late, DELIVERY_LOG_UNAVAILABLE);
    assert_int_equal(p.ops->flush(p.self, 20000), DELIVERY_LOG_OK);
    assert_int_equal(p.ops->durable(p.self), p.ops->written(p.self));
    assert_int_equal(count_sent("silent@example.org"), 1);
    mariadb_delivery_log_free(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_begin_is_pending_and_records_nothing),
        cmocka_unit_test(test_mark_sent_is_seen_at_once_and_durable_after_flush),
        cmocka_unit_test(test_marks_are_committed_when_the_server_defaults_to_no_autocommit),
        cmocka_unit_test(test_many_marks_are_committed),
        cmocka_unit_test(test_a_mark_on_a_dropped_connection_is_committed_by_the_writer),
        cmocka_unit_test(test_record_attempt_counts_and_mark_failed_fails),
        cmocka_unit_test(test_a_sent_key_stays_sent),
        cmocka_unit_test(test_prefetch_answers_begin_for_a_batch),
        cmocka_unit_test(test_prefetch_during_a_commit_still_says_sent),
        cmocka_unit_test(test_long_key_and_utf8_recipient_are_stored),
        cmocka_unit_test(test_server_down_is_unavailable_fast_then_recovers),
        cmocka_unit_test(test_a_mark_made_out_of_memory_is_kept_in_the_spare),
        cmocka_unit_test(test_a_silent_server_leaves_the_mark_to_the_writer),
    };
    return cmocka_run_group_tests_name("mariadb_delivery_log", tests, group_setup, group_teardown);
}
