/* mark_cost: what one delivery-log mark costs the MariaDB server, in CPU and in wall time.
 *
 * Runs COUNT statements one after the other on one connection and reads the server's CPU
 * time (utime + stime of its pid, /proc/<pid>/stat, in clock ticks) before and after:
 *
 *   do1      DO 1: a round trip that touches no table (the fixed cost of any statement)
 *   mark     push-email's direct mark (mariadb_delivery_log.c, direct_send): one autocommit
 *            INSERT ... ON DUPLICATE KEY UPDATE state = 'sent' in the text protocol, into
 *            a `deliveries` table made by the push-email migration, each with its own key
 *   prepared the same upsert as a prepared statement (binary protocol)
 *   narrow   the same upsert into a table of (key_hash, state, sent_at) only
 *
 * It works in database notifications_bench (which the stack keeps out of its binlog, as it
 * does `notifications`), creates its tables there and drops them at the end.
 *
 *   mark_cost --port 3307 --pid <mariadbd pid> --migration <V001 sql> --count 4000 MODE...
 *
 * Prints one line per mode: server CPU µs per statement and wall µs per statement. A clock
 * tick is 10 ms, so 4,000 statements of ~80 µs read to within about ±3 %. */
#include <mysql.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int server_pid;

static double server_cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (f == NULL || fgets(buf, sizeof buf, f) == NULL) {
        fprintf(stderr, "mark_cost: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    /* Fields after the ")" that ends the command name: state is field 3, utime 14, stime 15. */
    unsigned long utime = 0, stime = 0;
    const char *p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) {
        fprintf(stderr, "mark_cost: unexpected %s\n", path);
        exit(1);
    }
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void query(MYSQL *db, const char *sql)
{
    if (mysql_query(db, sql) != 0) {
        fprintf(stderr, "mark_cost: %.80s: %s\n", sql, mysql_error(db));
        exit(1);
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        exit(1);
    }
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* A key shaped like push-email's: binlog position, kind, recipient. */
static void make_row(int i, unsigned char hash[32], char *key, size_t keylen, char *rcpt,
                     size_t rcptlen)
{
    for (int j = 0; j < 32; j++) {
        hash[j] = (unsigned char)(rand() & 0xff);
    }
    snprintf(rcpt, rcptlen, "user%d@example.com", i);
    snprintf(key, keylen, "mariadb-bin.000003:%d:0-1-%d|welcome|%s", 100000 + i * 700, i, rcpt);
}

static void run(MYSQL *db, const char *mode, int count)
{
    static const char upsert[] =
        "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, sent_at) VALUES "
        "(?, ?, ?, ?, 'sent', CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE state = 'sent', "
        "sent_at = CURRENT_TIMESTAMP(6), last_error = NULL";
    MYSQL_STMT *st = NULL;

    query(db, "DELETE FROM deliveries");
    query(db, "DELETE FROM deliveries_narrow");
    if (strcmp(mode, "prepared") == 0) {
        st = mysql_stmt_init(db);
        if (st == NULL || mysql_stmt_prepare(st, upsert, sizeof upsert - 1) != 0) {
            fprintf(stderr, "mark_cost: prepare: %s\n", mysql_error(db));
            exit(1);
        }
    } else if (strcmp(mode, "do1") != 0 && strcmp(mode, "mark") != 0 &&
               strcmp(mode, "narrow") != 0) {
        fprintf(stderr, "mark_cost: unknown mode %s\n", mode);
        exit(2);
    }
    double c0 = server_cpu_s(), t0 = now_s();
    for (int i = 0; i < count; i++) {
        unsigned char hash[32];
        char key[200], rcpt[64], hex[65], sql[1024];
        make_row(i, hash, key, sizeof key, rcpt, sizeof rcpt);
        mysql_hex_string(hex, (const char *)hash, 32);
        if (strcmp(mode, "do1") == 0) {
            query(db, "DO 1");
        } else if (strcmp(mode, "mark") == 0) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, "
                     "sent_at) VALUES (X'%s', '%s', 'welcome', '%s', 'sent', "
                     "CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE state = 'sent', sent_at = "
                     "CURRENT_TIMESTAMP(6), last_error = NULL",
                     hex, key, rcpt);
            query(db, sql);
        } else if (strcmp(mode, "narrow") == 0) {
            snprintf(sql, sizeof sql,
                     "INSERT INTO deliveries_narrow (key_hash, state, sent_at) VALUES (X'%s', 2, "
                     "CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE state = 2",
                     hex);
            query(db, sql);
        } else {
            MYSQL_BIND b[4];
            unsigned long len[4] = {32, strlen(key), 7, strlen(rcpt)};
            memset(b, 0, sizeof b);
            b[0].buffer_type = MYSQL_TYPE_BLOB;
            b[0].buffer = hash;
            b[1].buffer_type = MYSQL_TYPE_STRING;
            b[1].buffer = key;
            b[2].buffer_type = MYSQL_TYPE_STRING;
            b[2].buffer = (char *)"welcome";
            b[3].buffer_type = MYSQL_TYPE_STRING;
            b[3].buffer = rcpt;
            for (int j = 0; j < 4; j++) {
                b[j].length = &len[j];
            }
            if (mysql_stmt_bind_param(st, b) != 0 || mysql_stmt_execute(st) != 0) {
                fprintf(stderr, "mark_cost: execute: %s\n", mysql_stmt_error(st));
                exit(1);
            }
        }
    }
    double c1 = server_cpu_s(), t1 = now_s();
    printf("%-9s %d statements: server CPU %.1f us/statement, wall %.1f us/statement\n", mode,
           count, (c1 - c0) * 1e6 / count, (t1 - t0) * 1e6 / count);
    if (st != NULL) {
        mysql_stmt_close(st);
    }
}

int main(int argc, char **argv)
{
    unsigned port = 3307;
    int count = 4000, i = 1;
    const char *migration = NULL;

    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--pid") == 0)
            server_pid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--count") == 0)
            count = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--migration") == 0)
            migration = argv[i + 1];
    }
    if (server_pid <= 0 || migration == NULL || count <= 0 || i >= argc) {
        fprintf(stderr, "usage: mark_cost [--port P] --pid MARIADBD_PID --migration V001.sql "
                        "[--count N] do1|mark|prepared|narrow...\n");
        return 2;
    }
    MYSQL *db = mysql_init(NULL);
    if (db == NULL ||
        mysql_real_connect(db, "127.0.0.1", "root", "", NULL, port, NULL, 0) == NULL) {
        fprintf(stderr, "mark_cost: connect: %s\n", db != NULL ? mysql_error(db) : "no memory");
        return 1;
    }
    query(db, "CREATE DATABASE IF NOT EXISTS notifications_bench");
    query(db, "USE notifications_bench");
    query(db, "DROP TABLE IF EXISTS deliveries");
    query(db, slurp(migration));
    query(db, "CREATE TABLE IF NOT EXISTS deliveries_narrow (key_hash BINARY(32) NOT NULL "
              "PRIMARY KEY, state TINYINT NOT NULL, sent_at DATETIME(6) NULL) ENGINE = InnoDB");
    srand(1);
    for (; i < argc; i++) {
        run(db, argv[i], count);
    }
    query(db, "DROP TABLE deliveries");
    query(db, "DROP TABLE deliveries_narrow");
    mysql_close(db);
    return 0;
}
