/* userdata_baseline: the database work of the userdata service's GET /api/v1/users/{id} and
 * PUT /api/v1/users/{id}, done directly through Connector/C, with no HTTP, no JSON and no
 * pool. It is the "how fast could it be" line that bench/userdata/run.sh sets the service
 * against.
 *
 * It mirrors services/userdata/src/datasources/mariadb_user_repo.c on purpose, statement for
 * statement:
 *   - connection: utf8mb4, no auto-reconnect, CLIENT_FOUND_ROWS, then the same session
 *     SET (time_zone, sql_mode, innodb_lock_wait_timeout) once per connection;
 *   - at "checkout": mysql_ping when the connection was idle for more than a second (never
 *     under load, but it is what the service does);
 *   - GET = ST_FIND: SELECT <13 columns> FROM users WHERE id = CONVERT(? USING ascii),
 *     results bound to the same buffers, mysql_stmt_store_result, fetch, free_result;
 *   - PUT = what users_replace does when the value changes: ST_FIND, then ST_UPDATE
 *     (12 SET columns, WHERE id = CONVERT(? USING ascii) AND version = ?), with
 *     updated_at = now and version + 1; when another thread moved the version first
 *     (0 rows), ST_FIND again (the adapter tells a missing row from a moved version) and
 *     the whole find + update again (the interactor retries unpinned writes).
 * Each thread has its own MYSQL connection and statements (one connection per thread).
 *
 * Usage:
 *   userdata_baseline --mode get|put --ids FILE --threads N --duration S [--warmup S]
 *                     [--host H] [--port P] [--user U] [--password PW] [--database DB]
 * FILE has one user per line: "<id> <username> <email>" (only the id is used).
 * Prints one line: mode=... threads=... ops=... ops_per_s=... p50_ms=... p90_ms=...
 * p99_ms=... max_ms=... errors=... conflicts=...
 */
#include <errno.h>
#include <inttypes.h>
#include <mysql.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define USER_COLUMNS 13
#define USER_COLUMN_LIST                                                                           \
    "id, username, email, password_hash, password_changed_at, full_name, date_of_birth, "          \
    "address, locale, status, created_at, updated_at, version"
#define ID_PARAM     "CONVERT(? USING ascii)"
#define IDLE_PING_US 1000000

static const char find_sql[] = "SELECT " USER_COLUMN_LIST " FROM users WHERE id = " ID_PARAM;
static const char update_sql[] = "UPDATE users SET username = ?, email = ?, password_hash = ?, "
                                 "password_changed_at = ?, full_name = ?, date_of_birth = ?, "
                                 "address = ?, locale = ?, status = ?, created_at = ?, "
                                 "updated_at = ?, version = ? "
                                 "WHERE id = " ID_PARAM " AND version = ?";

struct options {
    const char *host, *user, *password, *database, *ids_path;
    unsigned port;
    int put;
    unsigned threads;
    double duration_s, warmup_s;
};

static struct options opt = {"127.0.0.1", "userdata", "", "userdata_bench", NULL, 3317, 0,
                             8,           10.0,       2.0};

static char (*ids)[37];
static size_t n_ids;

static atomic_int phase; /* 0 warmup, 1 measuring, 2 stop */

struct worker {
    pthread_t tid;
    unsigned index;
    unsigned seed;
    uint32_t *lat_us; /* samples of the measuring phase */
    size_t n, cap;
    uint64_t errors, conflicts;
    int failed_setup;
};

/* Row buffers, as the adapter's struct user_result (buffer sizes from entities/user.h). */
struct row {
    MYSQL_BIND b[USER_COLUMNS];
    unsigned long len[USER_COLUMNS];
    my_bool null[USER_COLUMNS];
    my_bool error[USER_COLUMNS];
    char id[37], username[33], email[255], hash[129], full_name[801], address[2001], locale[36],
        status[16];
    MYSQL_TIME pca, dob, ca, ua;
    uint64_t version;
};

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void bind_out_str(struct row *r, int c, char *buf, size_t size)
{
    MYSQL_BIND *b = &r->b[c];
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = buf;
    b->buffer_length = (unsigned long)size;
    b->length = &r->len[c];
    b->is_null = &r->null[c];
    b->error = &r->error[c];
}

static void bind_out_time(struct row *r, int c, enum enum_field_types t, MYSQL_TIME *v)
{
    MYSQL_BIND *b = &r->b[c];
    memset(b, 0, sizeof *b);
    b->buffer_type = t;
    b->buffer = v;
    b->buffer_length = sizeof *v;
    b->is_null = &r->null[c];
    b->error = &r->error[c];
}

static void row_init(struct row *r)
{
    memset(r, 0, sizeof *r);
    bind_out_str(r, 0, r->id, sizeof r->id);
    bind_out_str(r, 1, r->username, sizeof r->username);
    bind_out_str(r, 2, r->email, sizeof r->email);
    bind_out_str(r, 3, r->hash, sizeof r->hash);
    bind_out_time(r, 4, MYSQL_TYPE_DATETIME, &r->pca);
    bind_out_str(r, 5, r->full_name, sizeof r->full_name);
    bind_out_time(r, 6, MYSQL_TYPE_DATE, &r->dob);
    bind_out_str(r, 7, r->address, sizeof r->address);
    bind_out_str(r, 8, r->locale, sizeof r->locale);
    bind_out_str(r, 9, r->status, sizeof r->status);
    bind_out_time(r, 10, MYSQL_TYPE_DATETIME, &r->ca);
    bind_out_time(r, 11, MYSQL_TYPE_DATETIME, &r->ua);
    memset(&r->b[12], 0, sizeof r->b[12]);
    r->b[12].buffer_type = MYSQL_TYPE_LONGLONG;
    r->b[12].buffer = &r->version;
    r->b[12].is_unsigned = 1;
    r->b[12].is_null = &r->null[12];
    r->b[12].error = &r->error[12];
}

/* NUL-terminates the fetched strings (the adapter's user_result_finish does the same). */
static void row_finish(struct row *r)
{
    static const int strs[] = {0, 1, 2, 3, 5, 7, 8, 9};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        int c = strs[i];
        char *buf = r->b[c].buffer;
        buf[r->null[c] ? 0 : r->len[c]] = '\0';
    }
}

static void bind_in_str(MYSQL_BIND *b, const char *s, unsigned long *len, my_bool *is_null,
                        int empty_is_null)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)strlen(s);
    *is_null = (my_bool)(empty_is_null && *len == 0);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(uintptr_t)s;
    b->buffer_length = *len;
    b->length = len;
    b->is_null = is_null;
}

static void bind_in_time(MYSQL_BIND *b, enum enum_field_types t, MYSQL_TIME *v, my_bool *is_null)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = t;
    b->buffer = v;
    b->buffer_length = sizeof *v;
    b->is_null = is_null;
}

static void bind_in_u64(MYSQL_BIND *b, uint64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_unsigned = 1;
}

static void now_time(MYSQL_TIME *t)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    memset(t, 0, sizeof *t);
    t->year = (unsigned)tm.tm_year + 1900;
    t->month = (unsigned)tm.tm_mon + 1;
    t->day = (unsigned)tm.tm_mday;
    t->hour = (unsigned)tm.tm_hour;
    t->minute = (unsigned)tm.tm_min;
    t->second = (unsigned)tm.tm_sec;
    t->second_part = (unsigned long)(ts.tv_nsec / 1000);
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
}

static MYSQL *connect_db(void)
{
    unsigned connect_timeout = 2, io_timeout = 5;
    my_bool no = 0;
    MYSQL *db = mysql_init(NULL);
    if (db == NULL)
        return NULL;
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db, MYSQL_OPT_RECONNECT, &no);
    if (mysql_real_connect(db, opt.host, opt.user, opt.password, opt.database, opt.port, NULL,
                           CLIENT_FOUND_ROWS) == NULL) {
        fprintf(stderr, "baseline: connect: %s\n", mysql_error(db));
        mysql_close(db);
        return NULL;
    }
    static const char setup[] = "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,"
                                "NO_ZERO_DATE,NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
                                "NO_ENGINE_SUBSTITUTION', innodb_lock_wait_timeout = 4";
    if (mysql_real_query(db, setup, (unsigned long)strlen(setup)) != 0) {
        fprintf(stderr, "baseline: session setup: %s\n", mysql_error(db));
        mysql_close(db);
        return NULL;
    }
    return db;
}

static MYSQL_STMT *prepare(MYSQL *db, const char *sql)
{
    MYSQL_STMT *st = mysql_stmt_init(db);
    if (st == NULL)
        return NULL;
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0) {
        fprintf(stderr, "baseline: prepare: %s\n", mysql_stmt_error(st));
        mysql_stmt_close(st);
        return NULL;
    }
    return st;
}

/* ST_FIND: 0 found, 1 not found, -1 error. */
static int do_find(MYSQL_STMT *st, const char *id, struct row *r)
{
    MYSQL_BIND p;
    unsigned long id_len;
    my_bool id_null;
    int rc;

    row_init(r);
    bind_in_str(&p, id, &id_len, &id_null, 0);
    if (mysql_stmt_bind_param(st, &p) != 0 || mysql_stmt_execute(st) != 0 ||
        mysql_stmt_bind_result(st, r->b) != 0 || mysql_stmt_store_result(st) != 0) {
        fprintf(stderr, "baseline: find: %s\n", mysql_stmt_error(st));
        mysql_stmt_free_result(st);
        return -1;
    }
    rc = mysql_stmt_fetch(st);
    mysql_stmt_free_result(st);
    if (rc == 0) {
        row_finish(r);
        return 0;
    }
    return rc == MYSQL_NO_DATA ? 1 : -1;
}

/* ST_UPDATE of r with a new full_name: 0 written, 1 version moved, -1 error. */
static int do_update(MYSQL_STMT *st, struct row *r, const char *full_name)
{
    MYSQL_BIND b[USER_COLUMNS + 1];
    unsigned long len[USER_COLUMNS];
    my_bool null[USER_COLUMNS];
    MYSQL_TIME ua;
    uint64_t version = r->version + 1, expected = r->version;

    memset(null, 0, sizeof null);
    bind_in_str(&b[0], r->username, &len[0], &null[0], 0);
    bind_in_str(&b[1], r->email, &len[1], &null[1], 0);
    bind_in_str(&b[2], r->hash, &len[2], &null[2], 0);
    null[3] = r->null[4];
    bind_in_time(&b[3], MYSQL_TYPE_DATETIME, &r->pca, &null[3]);
    bind_in_str(&b[4], full_name, &len[4], &null[4], 1);
    null[5] = r->null[6];
    bind_in_time(&b[5], MYSQL_TYPE_DATE, &r->dob, &null[5]);
    bind_in_str(&b[6], r->address, &len[6], &null[6], 1);
    bind_in_str(&b[7], r->locale, &len[7], &null[7], 0);
    bind_in_str(&b[8], r->status, &len[8], &null[8], 0);
    bind_in_time(&b[9], MYSQL_TYPE_DATETIME, &r->ca, &null[9]);
    now_time(&ua);
    bind_in_time(&b[10], MYSQL_TYPE_DATETIME, &ua, &null[10]);
    bind_in_u64(&b[11], &version);
    bind_in_str(&b[12], r->id, &len[12], &null[12], 0);
    bind_in_u64(&b[13], &expected);
    if (mysql_stmt_bind_param(st, b) != 0 || mysql_stmt_execute(st) != 0) {
        fprintf(stderr, "baseline: update: %s\n", mysql_stmt_error(st));
        return -1;
    }
    return mysql_stmt_affected_rows(st) > 0 ? 0 : 1;
}

static void record(struct worker *w, int64_t us)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 65536;
        uint32_t *p = realloc(w->lat_us, cap * sizeof *p);
        if (p == NULL)
            return;
        w->lat_us = p;
        w->cap = cap;
    }
    w->lat_us[w->n++] = (uint32_t)(us > 0 ? us : 0);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct row *r = malloc(sizeof *r);
    MYSQL *db = connect_db();
    MYSQL_STMT *find = db ? prepare(db, find_sql) : NULL;
    MYSQL_STMT *update = db && opt.put ? prepare(db, update_sql) : NULL;
    int64_t last_used = monotonic_us();
    char full_name[64];

    if (r == NULL || find == NULL || (opt.put && update == NULL)) {
        w->failed_setup = 1;
        goto out;
    }
    for (;;) {
        int ph = atomic_load_explicit(&phase, memory_order_relaxed);
        if (ph == 2)
            break;
        const char *id = ids[rand_r(&w->seed) % n_ids];
        int64_t t0 = monotonic_us();
        int rc;
        if (t0 - last_used > IDLE_PING_US && mysql_ping(db) != 0) { /* as conn_ready does */
            w->errors++;
            break;
        }
        if (!opt.put) {
            rc = do_find(find, id, r);
        } else {
            snprintf(full_name, sizeof full_name, "Bench User %u", (unsigned)rand_r(&w->seed));
            for (int attempt = 0; attempt < 5; attempt++) { /* USERS_WRITE_ATTEMPTS */
                rc = do_find(find, id, r);
                if (rc != 0)
                    break;
                rc = do_update(update, r, full_name);
                if (rc != 1)
                    break;
                if (ph == 1)
                    w->conflicts++;
                if (do_find(find, id, r) < 0) { /* the adapter's "missing or moved?" look */
                    rc = -1;
                    break;
                }
            }
        }
        int64_t t1 = monotonic_us();
        last_used = t1;
        if (rc != 0) {
            w->errors++;
            continue;
        }
        if (ph == 1)
            record(w, t1 - t0);
    }
out:
    if (update != NULL)
        mysql_stmt_close(update);
    if (find != NULL)
        mysql_stmt_close(find);
    if (db != NULL)
        mysql_close(db);
    free(r);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int load_ids(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    size_t cap = 0;
    if (f == NULL) {
        perror(path);
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        size_t len = strcspn(line, " \t\r\n");
        if (len != 36)
            continue;
        if (n_ids == cap) {
            cap = cap ? cap * 2 : 16384;
            void *p = realloc(ids, cap * sizeof *ids);
            if (p == NULL) {
                fclose(f);
                return -1;
            }
            ids = p;
        }
        memcpy(ids[n_ids], line, 36);
        ids[n_ids][36] = '\0';
        n_ids++;
    }
    fclose(f);
    if (n_ids == 0) {
        fprintf(stderr, "baseline: no ids in %s\n", path);
        return -1;
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: userdata_baseline --mode get|put --ids FILE --threads N --duration S "
                    "[--warmup S] [--host H] [--port P] [--user U] [--password PW] "
                    "[--database DB]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(a, "--mode") == 0)
            opt.put = strcmp(v, "put") == 0;
        else if (strcmp(a, "--ids") == 0)
            opt.ids_path = v;
        else if (strcmp(a, "--threads") == 0)
            opt.threads = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--duration") == 0)
            opt.duration_s = strtod(v, NULL);
        else if (strcmp(a, "--warmup") == 0)
            opt.warmup_s = strtod(v, NULL);
        else if (strcmp(a, "--host") == 0)
            opt.host = v;
        else if (strcmp(a, "--port") == 0)
            opt.port = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--user") == 0)
            opt.user = v;
        else if (strcmp(a, "--password") == 0)
            opt.password = v;
        else if (strcmp(a, "--database") == 0)
            opt.database = v;
        else
            usage();
        i++;
    }
    if (opt.ids_path == NULL || opt.threads == 0 || opt.threads > 1024 || opt.duration_s <= 0)
        usage();
    if (load_ids(opt.ids_path) != 0)
        return 1;
    if (mysql_library_init(0, NULL, NULL) != 0)
        return 1;

    struct worker *w = calloc(opt.threads, sizeof *w);
    if (w == NULL)
        return 1;
    for (unsigned i = 0; i < opt.threads; i++) {
        w[i].index = i;
        w[i].seed = (unsigned)time(NULL) ^ (i * 2654435761u);
        if (pthread_create(&w[i].tid, NULL, worker_main, &w[i]) != 0) {
            fprintf(stderr, "baseline: pthread_create failed\n");
            return 1;
        }
    }
    sleep_s(opt.warmup_s);
    int64_t t0 = monotonic_us();
    atomic_store(&phase, 1);
    sleep_s(opt.duration_s);
    atomic_store(&phase, 2);
    int64_t t1 = monotonic_us();

    size_t total = 0;
    uint64_t errors = 0, conflicts = 0;
    int failed = 0;
    for (unsigned i = 0; i < opt.threads; i++) {
        pthread_join(w[i].tid, NULL);
        total += w[i].n;
        errors += w[i].errors;
        conflicts += w[i].conflicts;
        failed |= w[i].failed_setup;
    }
    uint32_t *all = malloc((total ? total : 1) * sizeof *all);
    if (all == NULL)
        return 1;
    size_t k = 0;
    for (unsigned i = 0; i < opt.threads; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof *all);
        k += w[i].n;
        free(w[i].lat_us);
    }
    qsort(all, total, sizeof *all, cmp_u32);
#define PCT(p) (total ? (double)all[(size_t)((double)(total - 1) * (p))] / 1000.0 : 0.0)
    double secs = (double)(t1 - t0) / 1e6;
    printf("mode=%s threads=%u ops=%zu ops_per_s=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
           "max_ms=%.3f errors=%" PRIu64 " conflicts=%" PRIu64 "\n",
           opt.put ? "put" : "get", opt.threads, total, (double)total / secs, PCT(0.50), PCT(0.90),
           PCT(0.99), total ? (double)all[total - 1] / 1000.0 : 0.0, errors, conflicts);
    free(all);
    free(w);
    free(ids);
    mysql_library_end();
    return failed || errors ? 1 : 0;
}
