/* Integration tests of userdata's adapters against the real test MariaDB (no mocks):
 * mariadb_user_repo (every port operation, error mapping, pagination, injection strings,
 * lost connections, a stopped server), sodium_hasher and system_env. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <mysql.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "datasources/mariadb_user_repo.h"
#include "datasources/sodium_hasher.h"
#include "datasources/system_env.h"
#include "db_fixture.h"
#include "tests/lib/ci.h"
#include "tests/lib/stdout_capture.h"

static struct db_fixture fx;
static struct mariadb_user_repo *repo;
static struct user_repo port;
static struct user_env env;

#define assert_repo(expected, call)                                                                \
    do {                                                                                           \
        enum user_repo_err got_ = (call);                                                          \
        if (got_ != (expected)) {                                                                  \
            fail_msg("%s: got %s, want %s", #call, user_repo_err_name(got_),                       \
                     user_repo_err_name(expected));                                                \
        }                                                                                          \
    } while (0)

static int group_setup(void **state)
{
    char err[512];
    unsigned applied = 0;
    (void)state;

    if (db_fixture_init(&fx, "repo") != 0) {
        return -1;
    }
    if (db_migrations_apply(&fx.db, db_fixture_migrations_dir(), &applied, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: db_migrations_apply: %s\n", err);
        return -1;
    }
    repo = mariadb_user_repo_new(&fx.cfg);
    if (repo == NULL) {
        return -1;
    }
    port = mariadb_user_repo_port(repo);
    env = system_env_port();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    mariadb_user_repo_free(repo);
    repo = NULL;
    return db_fixture_drop(&fx);
}

/* A valid user with a fresh id and unique username/email derived from tag. */
static void make_user(struct user *u, const char *tag)
{
    memset(u, 0, sizeof *u);
    env.ops->new_id(env.self, u->id);
    snprintf(u->username, sizeof u->username, "%.12s_%.8s", tag, u->id);
    snprintf(u->email, sizeof u->email, "%s.%s@example.org", tag, u->id);
    snprintf(u->locale, sizeof u->locale, "en");
    snprintf(u->password_hash, sizeof u->password_hash, "$argon2id$v=19$m=8192,t=2,p=1$fake");
    u->status = USER_STATUS_UNCONFIRMED;
    u->created_at_us = env.ops->now_us(env.self);
    u->updated_at_us = u->created_at_us;
    u->version = 1;
}

static void assert_user_equal(const struct user *want, const struct user *got)
{
    assert_string_equal(want->id, got->id);
    assert_string_equal(want->username, got->username);
    assert_string_equal(want->email, got->email);
    assert_string_equal(want->full_name, got->full_name);
    assert_string_equal(want->address, got->address);
    assert_string_equal(want->date_of_birth, got->date_of_birth);
    assert_string_equal(want->locale, got->locale);
    assert_int_equal(want->status, got->status);
    assert_string_equal(want->password_hash, got->password_hash);
    assert_true(want->password_changed_at_us == got->password_changed_at_us);
    assert_true(want->created_at_us == got->created_at_us);
    assert_true(want->updated_at_us == got->updated_at_us);
    assert_true(want->version == got->version);
}

static void test_insert_then_find_returns_every_field(void **state)
{
    struct user u, got;
    (void)state;

    make_user(&u, "full");
    snprintf(u.full_name, sizeof u.full_name, "Zoë 山田太郎 🎉 O'Brien");
    snprintf(u.address, sizeof u.address, "Rua das Flores 12, São Paulo\n東京都 😀");
    snprintf(u.date_of_birth, sizeof u.date_of_birth, "1901-12-31");
    snprintf(u.locale, sizeof u.locale, "pt-BR");
    u.status = USER_STATUS_CONFIRMED;
    u.password_changed_at_us = INT64_C(1700000000123456);
    u.created_at_us = INT64_C(1600000000000001);
    u.updated_at_us = INT64_C(1731000000999999);
    u.version = 42;
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    memset(&got, 0x5a, sizeof got);
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_user_equal(&u, &got);
}

static void test_empty_optional_fields_are_stored_as_null(void **state)
{
    struct user u, got;
    char sql[256];
    (void)state;

    make_user(&u, "nulls");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    memset(&got, 0x5a, sizeof got);
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_user_equal(&u, &got);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM users WHERE id = '%s' AND full_name IS NULL AND address IS "
             "NULL AND date_of_birth IS NULL AND password_changed_at IS NULL",
             u.id);
    assert_int_equal(db_fixture_scalar(&fx, sql), 1);
}

static void test_timestamps_keep_microseconds_in_utc(void **state)
{
    struct user u, got;
    char sql[256];
    (void)state;

    make_user(&u, "time");
    u.created_at_us = INT64_C(1700000000123456); /* 2023-11-14 22:13:20.123456 UTC */
    u.updated_at_us = INT64_C(951782400000007);  /* 2000-02-29 00:00:00.000007 UTC */
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_true(got.created_at_us == u.created_at_us);
    assert_true(got.updated_at_us == u.updated_at_us);
    /* What Debezium will read from the binlog is the civil UTC time. */
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM users WHERE id = '%s' AND created_at = "
             "'2023-11-14 22:13:20.123456' AND updated_at = '2000-02-29 00:00:00.000007'",
             u.id);
    assert_int_equal(db_fixture_scalar(&fx, sql), 1);
}

static void test_find_of_unknown_id_is_not_found(void **state)
{
    struct user got;
    (void)state;
    assert_repo(USER_REPO_NOT_FOUND,
                port.ops->find(port.self, "00000000-0000-4000-8000-000000000000", &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, "", &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, "é😀 not an id", &got));
}

static void test_duplicate_username_and_email_are_told_apart(void **state)
{
    struct user a, b;
    char upper[sizeof a.username];
    (void)state;

    make_user(&a, "dup");
    /* The username holds the other key's name to prove the key is read from the end. */
    snprintf(a.username, sizeof a.username, "k for key 'uq_users_email' %.4s", a.id);
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &a));

    make_user(&b, "dup");
    memcpy(b.username, a.username, sizeof b.username);
    assert_repo(USER_REPO_DUPLICATE_USERNAME, port.ops->insert(port.self, &b));

    /* Usernames are unique case-insensitively (utf8mb4_unicode_ci). */
    make_user(&b, "dup");
    memcpy(upper, a.username, sizeof upper);
    for (char *p = upper; *p != '\0'; p++) {
        if (*p >= 'a' && *p <= 'z') {
            *p = (char)(*p - 'a' + 'A');
        }
    }
    memcpy(b.username, upper, sizeof b.username);
    assert_repo(USER_REPO_DUPLICATE_USERNAME, port.ops->insert(port.self, &b));

    make_user(&b, "dup");
    memcpy(b.email, a.email, sizeof b.email);
    assert_repo(USER_REPO_DUPLICATE_EMAIL, port.ops->insert(port.self, &b));

    /* The losing inserts stored nothing. */
    struct user got;
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, b.id, &got));
}

static void test_update_checks_the_version(void **state)
{
    struct user u, other, got;
    (void)state;

    make_user(&u, "upd");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));

    snprintf(u.full_name, sizeof u.full_name, "New Name ✓");
    snprintf(u.date_of_birth, sizeof u.date_of_birth, "2000-02-29");
    u.updated_at_us += 1;
    u.version = 2;
    assert_repo(USER_REPO_OK, port.ops->update(port.self, &u, 1));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_user_equal(&u, &got);

    /* Same write again: the row is at version 2 now, not 1. */
    u.version = 2;
    assert_repo(USER_REPO_VERSION_CONFLICT, port.ops->update(port.self, &u, 1));
    assert_repo(USER_REPO_VERSION_CONFLICT, port.ops->update(port.self, &u, 3));

    /* Clearing optional fields stores NULL again. */
    u.full_name[0] = '\0';
    u.date_of_birth[0] = '\0';
    u.version = 3;
    assert_repo(USER_REPO_OK, port.ops->update(port.self, &u, 2));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_user_equal(&u, &got);

    /* Taking another user's email is a duplicate, not a conflict. */
    make_user(&other, "upd");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &other));
    memcpy(u.email, other.email, sizeof u.email);
    u.version = 4;
    assert_repo(USER_REPO_DUPLICATE_EMAIL, port.ops->update(port.self, &u, 3));
}

static void test_update_of_missing_id_is_not_found(void **state)
{
    struct user u;
    (void)state;
    make_user(&u, "ghost");
    u.version = 2;
    assert_repo(USER_REPO_NOT_FOUND, port.ops->update(port.self, &u, 1));
}

static void test_remove_deletes_once_and_checks_the_version(void **state)
{
    struct user u, got;
    (void)state;

    make_user(&u, "rm");
    u.version = 5;
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    assert_repo(USER_REPO_VERSION_CONFLICT, port.ops->remove(port.self, u.id, 4));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_repo(USER_REPO_OK, port.ops->remove(port.self, u.id, 5));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, u.id, &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->remove(port.self, u.id, 0));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->remove(port.self, u.id, 5));

    make_user(&u, "rm");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    assert_repo(USER_REPO_OK, port.ops->remove(port.self, u.id, 0));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, u.id, &got));
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_list_pages_through_1000_users_each_once_in_order(void **state)
{
    enum { N = 1000, PAGE = 37 };
    char(*ids)[USER_ID_LEN + 1] = calloc(N, sizeof *ids);
    int *seen = calloc(N, sizeof *seen);
    struct user *page = calloc(PAGE, sizeof *page);
    char after[USER_ID_LEN + 1] = "";
    size_t total = 0, pages = 0;
    (void)state;

    assert_non_null(ids);
    assert_non_null(seen);
    assert_non_null(page);
    for (int i = 0; i < N; i++) {
        struct user u;
        make_user(&u, "list");
        memcpy(ids[i], u.id, sizeof ids[i]);
        assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    }
    qsort(ids, N, sizeof *ids, cmp_id);
    for (;;) {
        size_t n = 99999;
        assert_repo(USER_REPO_OK,
                    port.ops->list(port.self, after[0] ? after : NULL, PAGE, page, &n));
        assert_true(n <= PAGE);
        for (size_t i = 0; i < n; i++) {
            /* Strictly ascending across pages: nobody twice, nobody skipped by the cursor. */
            if (after[0] != '\0') {
                assert_true(strcmp(after, page[i].id) < 0);
            }
            memcpy(after, page[i].id, sizeof after);
            char(*hit)[USER_ID_LEN + 1] = bsearch(page[i].id, ids, N, sizeof *ids, cmp_id);
            if (hit != NULL) {
                seen[hit - ids]++;
            }
            total++;
        }
        pages++;
        if (n < PAGE) {
            break;
        }
    }
    for (int i = 0; i < N; i++) {
        if (seen[i] != 1) {
            fail_msg("user %s seen %d times", ids[i], seen[i]);
        }
    }
    assert_true(total >= N);
    assert_true(pages >= N / PAGE);
    /* limit 0 asks for nothing and gets nothing. */
    size_t n = 1;
    assert_repo(USER_REPO_OK, port.ops->list(port.self, NULL, 0, page, &n));
    assert_int_equal(n, 0);
    free(page);
    free(seen);
    free(ids);
}

static void test_sql_injection_strings_are_stored_literally(void **state)
{
    static const char drop[] = "'); DROP TABLE users; --";
    static const char quote[] = "\\' OR 1=1 --";
    struct user u, got;
    size_t n = 0;
    struct user page[2];
    (void)state;

    make_user(&u, "inj");
    snprintf(u.username, sizeof u.username, "%s", drop);
    snprintf(u.email, sizeof u.email, "x'--%.8s@example.org", u.id);
    snprintf(u.full_name, sizeof u.full_name, "%s", quote);
    snprintf(u.address, sizeof u.address, "%s\n%s; SELECT SLEEP(10);", drop, quote);
    snprintf(u.locale, sizeof u.locale, "';--");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_user_equal(&u, &got);
    assert_string_equal(got.username, drop);
    assert_string_equal(got.full_name, quote);

    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, "' OR '1'='1", &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, quote, &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->remove(port.self, "' OR 1=1 --", 0));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->remove(port.self, "😀' OR 1=1 --", 3));
    struct user ghost = u;
    snprintf(ghost.id, sizeof ghost.id, "😀' OR 1=1 --");
    assert_repo(USER_REPO_NOT_FOUND, port.ops->update(port.self, &ghost, 1));
    /* "~" sorts after every hex id: the injection text is just a cursor past the end. */
    assert_repo(USER_REPO_OK, port.ops->list(port.self, "~' OR 1=1 --", 2, page, &n));
    assert_int_equal(n, 0);
    assert_true(db_fixture_scalar(&fx, "SELECT COUNT(*) FROM users") > 0);
}

static void test_ping_answers_ok(void **state)
{
    (void)state;
    assert_repo(USER_REPO_OK, port.ops->ping(port.self));
}

/* More threads than pooled connections: every call waits its turn and succeeds. */
struct worker {
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 25; i++) {
        struct user u, got;
        make_user(&u, "thr");
        if (port.ops->insert(port.self, &u) != USER_REPO_OK ||
            port.ops->find(port.self, u.id, &got) != USER_REPO_OK ||
            strcmp(got.email, u.email) != 0) {
            w->failures++;
        }
    }
    return NULL;
}

static void test_concurrent_callers_share_the_pool(void **state)
{
    enum { THREADS = 12 };
    pthread_t t[THREADS];
    struct worker w[THREADS];
    (void)state;

    memset(w, 0, sizeof w);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
}

/* The pool's connections are killed by the server (as after a failover or wait_timeout):
 * the next call of every kind is retried once on a fresh connection and succeeds. */
static void kill_pool_connections(void)
{
    char sql[512];
    long long n;
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '%s' AND ID <> "
             "CONNECTION_ID()",
             fx.database);
    n = db_fixture_scalar(&fx, sql);
    assert_true(n > 0);
    /* KILL takes no subquery: kill them one by one through a fixed loop of ids. */
    for (int round = 0; round < 64 && n > 0; round++) {
        char kill[64];
        long long id;
        snprintf(sql, sizeof sql,
                 "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '%s' AND ID <> "
                 "CONNECTION_ID() LIMIT 1",
                 fx.database);
        id = db_fixture_scalar(&fx, sql);
        if (id <= 0) {
            break;
        }
        snprintf(kill, sizeof kill, "KILL CONNECTION %lld", id);
        db_fixture_exec(&fx, 0, kill);
    }
}

static void test_killed_connections_are_replaced_transparently(void **state)
{
    struct user u, v, w, got;
    size_t n;
    struct user page[1];
    (void)state;

    /* Each call runs once on a live connection first, so that its statement is already
     * prepared there and the kill is met by the EXECUTE itself (one thread: the pool hands
     * out the same open connection each time). */
    make_user(&u, "kill");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    kill_pool_connections();
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));

    u.version = 2;
    assert_repo(USER_REPO_OK, port.ops->update(port.self, &u, 1));
    kill_pool_connections();
    u.version = 3;
    assert_repo(USER_REPO_OK, port.ops->update(port.self, &u, 2));

    assert_repo(USER_REPO_OK, port.ops->list(port.self, NULL, 1, page, &n));
    kill_pool_connections();
    assert_repo(USER_REPO_OK, port.ops->list(port.self, NULL, 1, page, &n));
    assert_int_equal(n, 1);

    make_user(&v, "kill");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &v));
    kill_pool_connections();
    make_user(&w, "kill");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &w));

    assert_repo(USER_REPO_OK, port.ops->remove(port.self, v.id, 1));
    kill_pool_connections();
    assert_repo(USER_REPO_OK, port.ops->remove(port.self, u.id, 3));

    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, u.id, &got));
    assert_repo(USER_REPO_NOT_FOUND, port.ops->find(port.self, v.id, &got));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, w.id, &got));
    assert_user_equal(&w, &got);
}

/* ---- log capture (tests/lib/stdout_capture.h) */

static size_t count_of(const char *haystack, const char *needle)
{
    size_t n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
        n++;
    }
    return n;
}

/* ---- a server whose messages are not English */

static char saved_lc_messages[64];

/* The session setup asks for English messages, so the duplicated key is found in the
 * message whatever the server's lc_messages; and the duplicated value, a person's email
 * or username, is never logged. The server's global lc_messages is set to de_DE for the
 * test (restored in its teardown): a new connection starts in German. */
static void test_duplicates_are_told_apart_when_the_server_speaks_german(void **state)
{
    struct user a, b, c, other;
    MYSQL *raw;
    (void)state;

    if (db_fixture_root_exec(&fx, "SELECT @@GLOBAL.lc_messages", saved_lc_messages,
                             sizeof saved_lc_messages) != 0 ||
        saved_lc_messages[0] == '\0') {
        saved_lc_messages[0] = '\0';
        /* In CI scripts/test's server (scripts/lib/test-mariadb.sh) has root: fail there. */
        skip_or_fail_in_ci("no root on the test server (%s:%u): cannot set its lc_messages",
                           fx.host, (unsigned int)fx.cfg.port);
    }
    assert_int_equal(db_fixture_root_exec(&fx, "SET GLOBAL lc_messages = 'de_DE'", NULL, 0), 0);

    /* The premise: a session that does not ask for English gets German. */
    raw = mysql_init(NULL);
    assert_non_null(raw);
    assert_non_null(
        mysql_real_connect(raw, fx.host, fx.user, fx.password, fx.database, fx.cfg.port, NULL, 0));
    assert_int_not_equal(mysql_query(raw, "SELECT * FROM no_such_table"), 0);
    if (strstr(mysql_error(raw), "existiert nicht") == NULL) {
        fail_msg("the server did not answer in German: %s", mysql_error(raw));
    }
    mysql_close(raw);

    /* A new repo: its connections are opened now, under de_DE. */
    struct mariadb_user_repo *r = mariadb_user_repo_new(&fx.cfg);
    assert_non_null(r);
    struct user_repo p = mariadb_user_repo_port(r);

    capture_begin();
    make_user(&a, "de");
    enum user_repo_err ins_a = p.ops->insert(p.self, &a);
    make_user(&b, "de");
    memcpy(b.username, a.username, sizeof b.username);
    enum user_repo_err dup_name = p.ops->insert(p.self, &b);
    make_user(&c, "de");
    memcpy(c.email, a.email, sizeof c.email);
    enum user_repo_err dup_email = p.ops->insert(p.self, &c);
    make_user(&other, "de");
    enum user_repo_err ins_other = p.ops->insert(p.self, &other);
    memcpy(other.email, a.email, sizeof other.email);
    other.version = 2;
    enum user_repo_err upd_email = p.ops->update(p.self, &other, 1);
    /* The same id again: a duplicate of no key the repo knows (PRIMARY) is logged, but
     * without the duplicated value. */
    make_user(&b, "de");
    memcpy(b.id, a.id, sizeof b.id);
    enum user_repo_err dup_id = p.ops->insert(p.self, &b);
    char *log = capture_end(NULL);
    fputs(log, stderr); /* for a failure's report */

    assert_repo(USER_REPO_OK, ins_a);
    assert_repo(USER_REPO_DUPLICATE_USERNAME, dup_name);
    assert_repo(USER_REPO_DUPLICATE_EMAIL, dup_email);
    assert_repo(USER_REPO_OK, ins_other);
    assert_repo(USER_REPO_DUPLICATE_EMAIL, upd_email);
    assert_repo(USER_REPO_INTERNAL, dup_id);
    if (strstr(log, a.email) != NULL || strstr(log, a.username) != NULL ||
        strstr(log, a.id) != NULL) {
        fail_msg("a duplicated value was logged: %s", log);
    }
    assert_non_null(strstr(log, "PRIMARY")); /* the key is named */
    free(log);
    mariadb_user_repo_free(r);
}

static int restore_lc_messages(void **state)
{
    char sql[128];
    (void)state;
    if (saved_lc_messages[0] == '\0') {
        return 0;
    }
    /* The saved name came from the server itself (letters and '_'). */
    snprintf(sql, sizeof sql, "SET GLOBAL lc_messages = '%s'", saved_lc_messages);
    return db_fixture_root_exec(&fx, sql, NULL, 0) == 0 ? 0 : -1;
}

/* ---- an outage under load */

/* A local TCP port nobody listens on: bound for a moment by us, then closed. */
static uint16_t closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &a.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Every call while the database is down fails, but the log gets a bounded number of lines
 * (at most 10 a minute per kind of message), not one per call. */
static void test_an_outage_under_load_logs_a_bounded_number_of_lines(void **state)
{
    struct mariadb_config cfg = fx.cfg;
    struct user got;
    (void)state;

    cfg.host = "127.0.0.1";
    cfg.port = closed_port();
    struct mariadb_user_repo *r = mariadb_user_repo_new(&cfg);
    assert_non_null(r);
    struct user_repo p = mariadb_user_repo_port(r);

    capture_begin();
    int unavailable = 0;
    for (int i = 0; i < 200; i++) {
        unavailable += p.ops->find(p.self, "00000000-0000-4000-8000-000000000000", &got) ==
                       USER_REPO_UNAVAILABLE;
        unavailable += p.ops->ping(p.self) == USER_REPO_UNAVAILABLE;
    }
    char *log = capture_end(NULL);
    fputs(log, stderr); /* for a failure's report */
    mariadb_user_repo_free(r);

    assert_int_equal(unavailable, 400);
    size_t lines = count_of(log, "\"msg\":\"db unavailable\"");
    if (lines < 1 || lines > 10) {
        fail_msg("%zu \"db unavailable\" lines for 400 calls", lines);
    }
    assert_true(count_of(log, "\n") <= 40); /* nothing else floods either */
    free(log);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Each call while the server is stopped must answer UNAVAILABLE fast: connect is refused,
 * so well under one connect timeout (3 s) even with the one retry. */
#define assert_unavailable_fast(call)                                                              \
    do {                                                                                           \
        struct timespec t0_;                                                                       \
        clock_gettime(CLOCK_MONOTONIC, &t0_);                                                      \
        assert_repo(USER_REPO_UNAVAILABLE, (call));                                                \
        double s_ = seconds_since(&t0_);                                                           \
        if (s_ > 7.0) {                                                                            \
            fail_msg("%s took %.1f s", #call, s_);                                                 \
        }                                                                                          \
    } while (0)

static void test_server_down_is_unavailable_then_recovers(void **state)
{
    struct user u, got, v;
    struct user page[2];
    size_t n;
    (void)state;

    make_user(&u, "down");
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &u));

    assert_int_equal(db_fixture_ctl(&fx, "stop"), 0);
    make_user(&v, "down");
    assert_unavailable_fast(port.ops->find(port.self, u.id, &got));
    assert_unavailable_fast(port.ops->insert(port.self, &v));
    assert_unavailable_fast(port.ops->list(port.self, NULL, 2, page, &n));
    u.version = 2;
    assert_unavailable_fast(port.ops->update(port.self, &u, 1));
    assert_unavailable_fast(port.ops->remove(port.self, u.id, 0));
    assert_unavailable_fast(port.ops->ping(port.self));

    assert_int_equal(db_fixture_ctl(&fx, "start"), 0);
    /* The same repo object, not recreated. */
    assert_repo(USER_REPO_OK, port.ops->ping(port.self));
    assert_repo(USER_REPO_OK, port.ops->find(port.self, u.id, &got));
    assert_true(got.version == 1); /* the update while down did not happen */
    assert_repo(USER_REPO_OK, port.ops->insert(port.self, &v));
    assert_repo(USER_REPO_OK, port.ops->update(port.self, &u, 1));

    /* A restart between two calls (connections in the pool are stale) costs no error. */
    assert_repo(USER_REPO_OK, port.ops->find(port.self, v.id, &got));
    assert_int_equal(db_fixture_ctl(&fx, "restart"), 0);
    assert_repo(USER_REPO_OK, port.ops->find(port.self, v.id, &got));
    assert_repo(USER_REPO_OK, port.ops->remove(port.self, v.id, 0));
}

/* Whatever happened above, leave the server running for the next tests. */
static int restart_teardown(void **state)
{
    (void)state;
    return db_fixture_ctl(&fx, "start") == 0 ? 0 : -1;
}

static void test_sodium_hasher_hashes_and_verifies(void **state)
{
    struct sodium_hasher *h = sodium_hasher_new(2, 8u * 1024 * 1024, 2, 60000);
    char hash[USER_PASSWORD_HASH_MAX + 1], hash2[USER_PASSWORD_HASH_MAX + 1];
    (void)state;

    assert_non_null(h);
    struct password_hasher ph = sodium_hasher_port(h);
    assert_int_equal(ph.ops->hash(ph.self, "correct horse 🐴 battery", hash), 0);
    assert_int_equal(strncmp(hash, "$argon2id$", 10), 0);
    assert_null(strstr(hash, "correct horse"));
    assert_int_equal(ph.ops->verify(ph.self, hash, "correct horse 🐴 battery"), 0);
    assert_int_equal(ph.ops->verify(ph.self, hash, "correct horse 🐴 batterY"), -1);
    assert_int_equal(ph.ops->verify(ph.self, hash, ""), -1);
    assert_int_equal(ph.ops->verify(ph.self, "not a hash", "x"), -1);
    /* Salted: the same password hashes differently each time. */
    assert_int_equal(ph.ops->hash(ph.self, "correct horse 🐴 battery", hash2), 0);
    assert_string_not_equal(hash, hash2);
    sodium_hasher_free(h);
}

struct hash_worker {
    struct password_hasher ph;
    int failures;
};

static void *hash_worker_main(void *arg)
{
    struct hash_worker *w = arg;
    char hash[USER_PASSWORD_HASH_MAX + 1];
    for (int i = 0; i < 3; i++) {
        if (w->ph.ops->hash(w->ph.self, "parallel password", hash) != 0 ||
            w->ph.ops->verify(w->ph.self, hash, "parallel password") != 0) {
            w->failures++;
        }
    }
    return NULL;
}

static void test_sodium_hasher_bounds_parallel_hashes_without_deadlock(void **state)
{
    enum { THREADS = 6 };
    struct sodium_hasher *h = sodium_hasher_new(1, 8u * 1024 * 1024, 2, 60000);
    pthread_t t[THREADS];
    struct hash_worker w[THREADS];
    (void)state;

    assert_non_null(h);
    for (int i = 0; i < THREADS; i++) {
        w[i].ph = sodium_hasher_port(h);
        w[i].failures = 0;
        assert_int_equal(pthread_create(&t[i], NULL, hash_worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    sodium_hasher_free(h);
}

struct slow_hash {
    struct password_hasher ph;
    int rc;
};

static void *slow_hash_main(void *arg)
{
    struct slow_hash *s = arg;
    char hash[USER_PASSWORD_HASH_MAX + 1];
    s->rc = s->ph.ops->hash(s->ph.self, "slow", hash);
    return NULL;
}

/* Polls h (every millisecond, up to 10 s) until running and waiting are as given. */
static void await_load(struct sodium_hasher *h, unsigned running, unsigned waiting)
{
    unsigned r = 0, w = 0;
    for (int i = 0; i < 10000; i++) {
        sodium_hasher_load(h, &r, &w);
        if (r == running && w == waiting)
            return;
        usleep(1000);
    }
    fail_msg("hasher load: running %u waiting %u, want %u and %u", r, w, running, waiting);
}

static long ms_between(const struct timespec *a, const struct timespec *b)
{
    return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/* One slot, taken by a long hash: a second hash waits wait_ms and answers BUSY. */
static void test_sodium_hasher_answers_busy_after_its_wait(void **state)
{
    /* 256 MiB and 4 passes: a hash of about a second here; the wait is 200 ms */
    struct sodium_hasher *h = sodium_hasher_new(4, 256u * 1024 * 1024, 1, 200);
    char hash[USER_PASSWORD_HASH_MAX + 1];
    struct slow_hash s = {.rc = -2};
    pthread_t t;
    struct timespec t0, t1;
    (void)state;

    assert_non_null(h);
    s.ph = sodium_hasher_port(h);
    assert_int_equal(pthread_create(&t, NULL, slow_hash_main, &s), 0);
    await_load(h, 1, 0); /* the slow hash has the slot */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = s.ph.ops->hash(s.ph.self, "impatient", hash);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsigned running, waiting;
    sodium_hasher_load(h, &running, &waiting);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, 0);
    assert_int_equal(running, 1); /* the slow hash outlasted the wait */
    assert_int_equal(waiting, 0);
    assert_int_equal(rc, PASSWORD_HASHER_BUSY);
    assert_true(ms_between(&t0, &t1) >= 199);
    /* the slot is free again */
    assert_int_equal(s.ph.ops->hash(s.ph.self, "patient", hash), 0);
    sodium_hasher_free(h);
}

/* With the slot taken and two callers waiting (twice max_parallel), a third is told busy
 * at once instead of waiting too. */
static void test_sodium_hasher_lets_only_twice_its_slots_wait(void **state)
{
    struct sodium_hasher *h = sodium_hasher_new(4, 256u * 1024 * 1024, 1, 60000);
    char hash[USER_PASSWORD_HASH_MAX + 1];
    struct slow_hash s[3];
    pthread_t t[3];
    struct timespec t0, t1;
    (void)state;

    assert_non_null(h);
    for (int i = 0; i < 3; i++) {
        s[i].ph = sodium_hasher_port(h);
        s[i].rc = -2;
        assert_int_equal(pthread_create(&t[i], NULL, slow_hash_main, &s[i]), 0);
        await_load(h, 1, (unsigned)i); /* one hashes, the others wait */
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = s[0].ph.ops->hash(s[0].ph.self, "one too many", hash);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unsigned running, waiting;
    sodium_hasher_load(h, &running, &waiting);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(s[i].rc, 0); /* the waiters got their turn */
    }
    assert_int_equal(running, 1);
    assert_int_equal(waiting, 2);
    assert_int_equal(rc, PASSWORD_HASHER_BUSY);
    assert_true(ms_between(&t0, &t1) < 1000); /* refused, not queued for 60 s */
    sodium_hasher_free(h);
}

static int uuid_v4_valid(const char *s)
{
    if (strlen(s) != USER_ID_LEN) {
        return 0;
    }
    for (int i = 0; i < USER_ID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return 0;
            }
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return 0;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static void test_system_env_makes_distinct_v4_ids_and_tells_time(void **state)
{
    enum { N = 2000 };
    char(*ids)[USER_ID_LEN + 1] = calloc(N, sizeof *ids);
    struct timespec ts;
    (void)state;

    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        env.ops->new_id(env.self, ids[i]);
        if (!uuid_v4_valid(ids[i])) {
            fail_msg("not a lower-case v4 UUID: %s", ids[i]);
        }
    }
    qsort(ids, N, sizeof *ids, cmp_id);
    for (int i = 1; i < N; i++) {
        assert_string_not_equal(ids[i - 1], ids[i]);
    }
    free(ids);

    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = env.ops->now_us(env.self);
    int64_t ref = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    assert_true(now >= ref && now - ref < 5000000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_then_find_returns_every_field),
        cmocka_unit_test(test_empty_optional_fields_are_stored_as_null),
        cmocka_unit_test(test_timestamps_keep_microseconds_in_utc),
        cmocka_unit_test(test_find_of_unknown_id_is_not_found),
        cmocka_unit_test(test_duplicate_username_and_email_are_told_apart),
        cmocka_unit_test_teardown(test_duplicates_are_told_apart_when_the_server_speaks_german,
                                  restore_lc_messages),
        cmocka_unit_test(test_an_outage_under_load_logs_a_bounded_number_of_lines),
        cmocka_unit_test(test_update_checks_the_version),
        cmocka_unit_test(test_update_of_missing_id_is_not_found),
        cmocka_unit_test(test_remove_deletes_once_and_checks_the_version),
        cmocka_unit_test(test_list_pages_through_1000_users_each_once_in_order),
        cmocka_unit_test(test_sql_injection_strings_are_stored_literally),
        cmocka_unit_test(test_ping_answers_ok),
        cmocka_unit_test(test_concurrent_callers_share_the_pool),
        cmocka_unit_test(test_killed_connections_are_replaced_transparently),
        cmocka_unit_test(test_sodium_hasher_hashes_and_verifies),
        cmocka_unit_test(test_sodium_hasher_bounds_parallel_hashes_without_deadlock),
        cmocka_unit_test(test_sodium_hasher_answers_busy_after_its_wait),
        cmocka_unit_test(test_sodium_hasher_lets_only_twice_its_slots_wait),
        cmocka_unit_test(test_system_env_makes_distinct_v4_ids_and_tells_time),
        /* Last: it stops and starts the server. */
        cmocka_unit_test_teardown(test_server_down_is_unavailable_then_recovers, restart_teardown),
    };
    return cmocka_run_group_tests_name("mariadb_user_repo", tests, group_setup, group_teardown);
}
