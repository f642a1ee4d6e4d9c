/* mariadb_user_repo: the user_repo port on MariaDB/MySQL through MariaDB Connector/C.
 *
 * Pool: pool_size slots, each holding at most one MYSQL connection and its cached prepared
 * statements. A caller checks a slot out (mutex + condvar, bounded wait), uses it alone
 * (one connection per thread at a time), and checks it back in. Connections are opened
 * lazily. At checkout a connection is pinged when it was idle for more than a second or
 * when any connection of the pool was lost since it was last used (a server restart breaks
 * them all), so a restart while idle costs no failed request.
 *
 * Retry policy: on a connection-level error (server gone, lost, killed, shut down) the
 * connection is closed and the operation is run ONCE more on a fresh connection, unless the
 * failing connection was itself fresh (then the server is down: UNAVAILABLE at once).
 * Reads are idempotent. A write whose statement may have reached the server before the
 * connection broke is retried with its outcome checked, so the retry reports what happened:
 *   insert: a duplicate on the retry is OK when the stored row with our id equals ours;
 *   update: no matching row on the retry is OK when the stored row equals ours (version
 *           already moved to u->version by our first attempt);
 *   remove: NOT_FOUND on the retry is OK (our first attempt may have deleted it; a delete
 *           is idempotent in its effect).
 * Worst-case time of a call: pool wait (5 s) + 2 x (connect + io timeouts).
 *
 * Threads: mysql_library_init runs once (pthread_once) before the first mysql_init, since
 * it is not thread-safe. Connector/C 3.x keeps no per-thread state, so mysql_thread_init /
 * mysql_thread_end are no-ops there and are not called; a handle is used by one thread at
 * a time, which is what the library requires.
 *
 * Errors of the library are mapped to enum user_repo_err here and logged with shared/log.h;
 * password hashes never appear in a log line (no value of a row is ever logged: a duplicate
 * is logged by its key name, never by the server's message, which quotes the value). The
 * lines an outage repeats on every call (db unavailable, pool exhausted, statement errors,
 * lost connections) are rate-limited: at most 10 a minute of each kind, the next one
 * telling how many were dropped ("lines_dropped"). */
#include "datasources/mariadb_user_repo.h"

#include <errno.h>
#include <errmsg.h>
#include <inttypes.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/db.h"
#include "shared/log.h"

#define POOL_WAIT_S  5
#define IDLE_PING_US 1000000 /* ping a connection idle longer than this at checkout */
#define USER_COLUMNS 13
#define USER_COLUMN_LIST                                                                           \
    "id, username, email, password_hash, password_changed_at, full_name, date_of_birth, "          \
    "address, locale, status, created_at, updated_at, version"

/* Key names from migrations/V001__create_users.sql. */
#define KEY_USERNAME "uq_users_username"
#define KEY_EMAIL    "uq_users_email"

enum stmt_id {
    ST_INSERT,
    ST_FIND,
    ST_LIST_FIRST,
    ST_LIST_AFTER,
    ST_UPDATE,
    ST_REMOVE,
    ST_REMOVE_VERSION,
    ST_COUNT
};

/* Ids are compared as ASCII (the column's character set): an id parameter that is not
 * ASCII (a hostile URL) then simply matches nothing, instead of failing with "illegal mix of
 * collations"; the primary key is still used. */
#define ID_PARAM "CONVERT(? USING ascii)"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_INSERT] =
        "INSERT INTO users (" USER_COLUMN_LIST ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [ST_FIND] = "SELECT " USER_COLUMN_LIST " FROM users WHERE id = " ID_PARAM,
    [ST_LIST_FIRST] = "SELECT " USER_COLUMN_LIST " FROM users ORDER BY id LIMIT ?",
    [ST_LIST_AFTER] =
        "SELECT " USER_COLUMN_LIST " FROM users WHERE id > " ID_PARAM " ORDER BY id LIMIT ?",
    [ST_UPDATE] = "UPDATE users SET username = ?, email = ?, password_hash = ?, "
                  "password_changed_at = ?, full_name = ?, date_of_birth = ?, address = ?, "
                  "locale = ?, status = ?, created_at = ?, updated_at = ?, version = ? "
                  "WHERE id = " ID_PARAM " AND version = ?",
    [ST_REMOVE] = "DELETE FROM users WHERE id = " ID_PARAM,
    [ST_REMOVE_VERSION] = "DELETE FROM users WHERE id = " ID_PARAM " AND version = ?",
};

struct conn {
    MYSQL *db;                  /* NULL while closed; owned */
    MYSQL_STMT *stmt[ST_COUNT]; /* prepared on first use; owned, closed with db */
    int64_t last_used_us;       /* monotonic clock */
    unsigned long epoch;        /* r->lost_epoch when this connection was last known good */
    int in_use;
};

struct mariadb_user_repo {
    struct mariadb_config cfg; /* strings point into the copies below */
    char *host, *user, *password, *database;
    pthread_mutex_t mu;       /* guards in_use of every slot and lost_epoch */
    pthread_cond_t cv;        /* signalled when a slot is checked in */
    unsigned long lost_epoch; /* counts lost connections: the others may be stale too */
    unsigned n;
    struct conn *conns;
};

/* ---------------------------------------------------------------- library and clocks -- */

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_rc;

static void library_init(void)
{
    library_rc = mysql_library_init(0, NULL, NULL);
}

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + (int64_t)(ts.tv_nsec / 1000);
}

/* ---------------------------------------------------------------- errors -- */

/* True for errors after which the connection cannot be used any more. */
static int is_connection_error(unsigned e)
{
    switch (e) {
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_COMMANDS_OUT_OF_SYNC: /* our bug, but the connection is unusable either way */
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NEW_ABORTING_CONNECTION:
    case 4031: /* MySQL 8: ER_CLIENT_INTERACTION_TIMEOUT (disconnected after wait_timeout) */
        return 1;
    default:
        return 0;
    }
}

/* While the database is down every request fails the same way: one line per request
 * would flood the log (and its shipper) under load. At most 10 lines a minute per kind. */
static struct log_rate unavailable_log_rate = LOG_RATE_INIT(10, 60);
static struct log_rate exhausted_log_rate = LOG_RATE_INIT(10, 60);
static struct log_rate db_error_log_rate = LOG_RATE_INIT(10, 60);
static struct log_rate lost_log_rate = LOG_RATE_INIT(10, 60);

/* True when rate allows a line now; dropped then holds the count of lines it refused since
 * the last one, as text for the "lines_dropped" field. */
static int log_allowed(struct log_rate *rate, char dropped[24])
{
    unsigned long n = 0;
    if (!log_rate_allow(rate, &n)) {
        return 0;
    }
    snprintf(dropped, 24, "%lu", n);
    return 1;
}

static void log_db_error(const char *op, unsigned e, const char *sqlstate, const char *msg)
{
    char num[16], dropped[24];
    if (!log_allowed(&db_error_log_rate, dropped)) {
        return;
    }
    snprintf(num, sizeof num, "%u", e);
    log_write(LOG_ERROR, "db error", "op", op, "errno", num, "sqlstate", sqlstate, "error", msg,
              "lines_dropped", dropped, NULL);
}

/* Outcome of one statement-level step. */
struct step {
    enum user_repo_err err;
    int lost; /* the connection is broken: close it */
};

/* Maps the statement's current error (a duplicate entry goes to map_dup instead). */
static struct step stmt_failure(const char *op, MYSQL_STMT *st)
{
    struct step s = {USER_REPO_INTERNAL, 0};
    unsigned e = mysql_stmt_errno(st);

    if (is_connection_error(e)) {
        s.err = USER_REPO_UNAVAILABLE;
        s.lost = 1;
    } else if (db_is_transient_error(e)) {
        s.err = USER_REPO_UNAVAILABLE;
    }
    log_db_error(op, e, mysql_stmt_sqlstate(st), mysql_stmt_error(st));
    return s;
}

/* The name of the duplicated key in "Duplicate entry 'x' for key 'uq_users_email'"
 * (MariaDB) or "... for key 'users.uq_users_email'" (MySQL 8), copied into key (size
 * bytes; "" when msg is not of that shape). The session speaks English whatever the
 * server's lc_messages (shared/db.c), so that is the shape. The name follows the LAST
 * " for key '" and ends the message, since the duplicated value, printed before it, could
 * contain anything; it is a name from our schema, so it may be logged, the message not. */
static void dup_key_name(const char *msg, char *key, size_t size)
{
    static const char marker[] = " for key '";
    const char *name = NULL;
    const char *p = msg;
    size_t len;

    key[0] = '\0';
    while ((p = strstr(p, marker)) != NULL) {
        name = p + sizeof marker - 1;
        p = name;
    }
    if (name == NULL) {
        return;
    }
    len = strlen(name);
    if (len < 2 || name[len - 1] != '\'' || len - 1 >= size) {
        return;
    }
    memcpy(key, name, len - 1);
    key[len - 1] = '\0';
}

/* Maps a duplicate-entry error of op to the key it hit. A key the repo does not know
 * (PRIMARY: an id collision, which the caller never makes) is INTERNAL and logged by its
 * name only. */
static enum user_repo_err map_dup(const char *op, MYSQL_STMT *st)
{
    char key[128];
    const char *name = key;

    dup_key_name(mysql_stmt_error(st), key, sizeof key);
    if (strncmp(name, "users.", 6) == 0) {
        name += 6;
    }
    if (strcmp(name, KEY_USERNAME) == 0) {
        return USER_REPO_DUPLICATE_USERNAME;
    }
    if (strcmp(name, KEY_EMAIL) == 0) {
        return USER_REPO_DUPLICATE_EMAIL;
    }
    char num[16], dropped[24];
    if (log_allowed(&db_error_log_rate, dropped)) {
        snprintf(num, sizeof num, "%u", (unsigned)ER_DUP_ENTRY);
        log_write(LOG_ERROR, "db error", "op", op, "errno", num, "sqlstate",
                  mysql_stmt_sqlstate(st), "error", "duplicate entry for an unexpected key", "key",
                  key[0] != '\0' ? key : "(not named)", "lines_dropped", dropped, NULL);
    }
    return USER_REPO_INTERNAL;
}

/* ---------------------------------------------------------------- time conversion -- */

/* Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian, UTC). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (int64_t)(m > 2 ? m - 3 : m + 9) + 2) / 5 + (int64_t)d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static void time_from_us(int64_t us, MYSQL_TIME *t)
{
    int64_t days = floor_div(us, INT64_C(86400000000));
    int64_t rem = us - days * INT64_C(86400000000); /* 0 .. 86399999999 */
    int64_t y;
    unsigned m, d;

    civil_from_days(days, &y, &m, &d);
    memset(t, 0, sizeof *t);
    t->year = (unsigned)y;
    t->month = m;
    t->day = d;
    t->hour = (unsigned)(rem / INT64_C(3600000000));
    t->minute = (unsigned)(rem / 60000000 % 60);
    t->second = (unsigned)(rem / 1000000 % 60);
    t->second_part = (unsigned long)(rem % 1000000);
    t->time_type = MYSQL_TIMESTAMP_DATETIME;
}

static int64_t us_from_time(const MYSQL_TIME *t)
{
    int64_t days = days_from_civil((int64_t)t->year, t->month, t->day);
    return days * INT64_C(86400000000) + (int64_t)t->hour * INT64_C(3600000000) +
           (int64_t)t->minute * 60000000 + (int64_t)t->second * 1000000 + (int64_t)t->second_part;
}

/* "YYYY-MM-DD" -> MYSQL_TIME; -1 when s is not of that shape (the caller validated it). */
static int date_parse(const char *s, MYSQL_TIME *t)
{
    unsigned v[3] = {0, 0, 0};
    static const int width[3] = {4, 2, 2};
    const char *p = s;

    for (int f = 0; f < 3; f++) {
        for (int i = 0; i < width[f]; i++, p++) {
            if (*p < '0' || *p > '9') {
                return -1;
            }
            v[f] = v[f] * 10 + (unsigned)(*p - '0');
        }
        if (f < 2 && *p++ != '-') {
            return -1;
        }
    }
    if (*p != '\0') {
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->year = v[0];
    t->month = v[1];
    t->day = v[2];
    t->time_type = MYSQL_TIMESTAMP_DATE;
    return 0;
}

/* ---------------------------------------------------------------- binding -- */

static void bind_str(MYSQL_BIND *b, const char *s, unsigned long *len, my_bool *is_null,
                     int empty_is_null)
{
    memset(b, 0, sizeof *b);
    *len = (unsigned long)strlen(s);
    *is_null = (my_bool)(empty_is_null && *len == 0);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(uintptr_t)s; /* Connector/C does not write input buffers */
    b->buffer_length = *len;
    b->length = len;
    b->is_null = is_null;
}

static void bind_u64(MYSQL_BIND *b, uint64_t *v)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_LONGLONG;
    b->buffer = v;
    b->is_unsigned = 1;
}

static void bind_time(MYSQL_BIND *b, enum enum_field_types type, MYSQL_TIME *t, my_bool *is_null)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = type;
    b->buffer = t;
    b->buffer_length = sizeof *t;
    b->is_null = is_null;
}

/* Parameters of one user row, in USER_COLUMN_LIST order; storage for bind buffers. */
struct user_params {
    MYSQL_BIND b[USER_COLUMNS + 1]; /* + expected version for UPDATE */
    unsigned long len[USER_COLUMNS];
    my_bool null[USER_COLUMNS];
    MYSQL_TIME pca, ca, ua, dob;
    char status[16];
    uint64_t version, expected;
};

enum col {
    C_ID,
    C_USERNAME,
    C_EMAIL,
    C_HASH,
    C_PCA,
    C_FULL_NAME,
    C_DOB,
    C_ADDRESS,
    C_LOCALE,
    C_STATUS,
    C_CA,
    C_UA,
    C_VERSION
};

static const char *status_text(enum user_status s)
{
    return s == USER_STATUS_CONFIRMED ? "CONFIRMED" : "UNCONFIRMED";
}

/* Fills p->b[0..13) for u in column order. Borrows u's strings: u must outlive the bind.
 * -1 when date_of_birth is not YYYY-MM-DD. */
static int user_params_fill(struct user_params *p, const struct user *u)
{
    memset(p, 0, sizeof *p);
    bind_str(&p->b[C_ID], u->id, &p->len[C_ID], &p->null[C_ID], 0);
    bind_str(&p->b[C_USERNAME], u->username, &p->len[C_USERNAME], &p->null[C_USERNAME], 0);
    bind_str(&p->b[C_EMAIL], u->email, &p->len[C_EMAIL], &p->null[C_EMAIL], 0);
    bind_str(&p->b[C_HASH], u->password_hash, &p->len[C_HASH], &p->null[C_HASH], 0);
    p->null[C_PCA] = (my_bool)(u->password_changed_at_us == 0);
    time_from_us(u->password_changed_at_us, &p->pca);
    bind_time(&p->b[C_PCA], MYSQL_TYPE_DATETIME, &p->pca, &p->null[C_PCA]);
    bind_str(&p->b[C_FULL_NAME], u->full_name, &p->len[C_FULL_NAME], &p->null[C_FULL_NAME], 1);
    p->null[C_DOB] = (my_bool)(u->date_of_birth[0] == '\0');
    if (!p->null[C_DOB] && date_parse(u->date_of_birth, &p->dob) != 0) {
        return -1;
    }
    bind_time(&p->b[C_DOB], MYSQL_TYPE_DATE, &p->dob, &p->null[C_DOB]);
    bind_str(&p->b[C_ADDRESS], u->address, &p->len[C_ADDRESS], &p->null[C_ADDRESS], 1);
    bind_str(&p->b[C_LOCALE], u->locale, &p->len[C_LOCALE], &p->null[C_LOCALE], 0);
    snprintf(p->status, sizeof p->status, "%s", status_text(u->status));
    bind_str(&p->b[C_STATUS], p->status, &p->len[C_STATUS], &p->null[C_STATUS], 0);
    time_from_us(u->created_at_us, &p->ca);
    bind_time(&p->b[C_CA], MYSQL_TYPE_DATETIME, &p->ca, &p->null[C_CA]);
    time_from_us(u->updated_at_us, &p->ua);
    bind_time(&p->b[C_UA], MYSQL_TYPE_DATETIME, &p->ua, &p->null[C_UA]);
    p->version = u->version;
    bind_u64(&p->b[C_VERSION], &p->version);
    return 0;
}

/* Result buffers of one user row. */
struct user_result {
    MYSQL_BIND b[USER_COLUMNS];
    unsigned long len[USER_COLUMNS];
    my_bool null[USER_COLUMNS];
    my_bool error[USER_COLUMNS];
    MYSQL_TIME pca, ca, ua, dob;
    char status[16];
    struct user u;
};

static void result_str(struct user_result *r, enum col c, char *buf, size_t size)
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

static void result_time(struct user_result *r, enum col c, enum enum_field_types type,
                        MYSQL_TIME *t)
{
    MYSQL_BIND *b = &r->b[c];
    memset(b, 0, sizeof *b);
    b->buffer_type = type;
    b->buffer = t;
    b->buffer_length = sizeof *t;
    b->is_null = &r->null[c];
    b->error = &r->error[c];
}

static void user_result_init(struct user_result *r)
{
    memset(r, 0, sizeof *r);
    result_str(r, C_ID, r->u.id, sizeof r->u.id);
    result_str(r, C_USERNAME, r->u.username, sizeof r->u.username);
    result_str(r, C_EMAIL, r->u.email, sizeof r->u.email);
    result_str(r, C_HASH, r->u.password_hash, sizeof r->u.password_hash);
    result_time(r, C_PCA, MYSQL_TYPE_DATETIME, &r->pca);
    result_str(r, C_FULL_NAME, r->u.full_name, sizeof r->u.full_name);
    result_time(r, C_DOB, MYSQL_TYPE_DATE, &r->dob);
    result_str(r, C_ADDRESS, r->u.address, sizeof r->u.address);
    result_str(r, C_LOCALE, r->u.locale, sizeof r->u.locale);
    result_str(r, C_STATUS, r->status, sizeof r->status);
    result_time(r, C_CA, MYSQL_TYPE_DATETIME, &r->ca);
    result_time(r, C_UA, MYSQL_TYPE_DATETIME, &r->ua);
    memset(&r->b[C_VERSION], 0, sizeof r->b[C_VERSION]);
    r->b[C_VERSION].buffer_type = MYSQL_TYPE_LONGLONG;
    r->b[C_VERSION].buffer = &r->u.version;
    r->b[C_VERSION].is_unsigned = 1;
    r->b[C_VERSION].is_null = &r->null[C_VERSION];
    r->b[C_VERSION].error = &r->error[C_VERSION];
}

/* Terminates the strings of a fetched row and converts the rest into r->u. -1 when a value
 * does not fit its buffer (the schema and the entity limits disagree). */
static int user_result_finish(struct user_result *r)
{
    static const enum col strs[] = {C_ID,        C_USERNAME, C_EMAIL,  C_HASH,
                                    C_FULL_NAME, C_ADDRESS,  C_LOCALE, C_STATUS};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        enum col c = strs[i];
        char *buf = r->b[c].buffer;
        if (r->null[c]) {
            buf[0] = '\0';
        } else if (r->len[c] >= r->b[c].buffer_length) {
            return -1;
        } else {
            buf[r->len[c]] = '\0';
        }
    }
    r->u.password_changed_at_us = r->null[C_PCA] ? 0 : us_from_time(&r->pca);
    r->u.created_at_us = us_from_time(&r->ca);
    r->u.updated_at_us = us_from_time(&r->ua);
    if (r->null[C_DOB]) {
        r->u.date_of_birth[0] = '\0';
    } else {
        snprintf(r->u.date_of_birth, sizeof r->u.date_of_birth, "%04u-%02u-%02u",
                 r->dob.year % 10000, r->dob.month % 100, r->dob.day % 100);
    }
    r->u.status =
        strcmp(r->status, "CONFIRMED") == 0 ? USER_STATUS_CONFIRMED : USER_STATUS_UNCONFIRMED;
    return 0;
}

static int user_equal(const struct user *a, const struct user *b)
{
    return strcmp(a->id, b->id) == 0 && strcmp(a->username, b->username) == 0 &&
           strcmp(a->email, b->email) == 0 && strcmp(a->full_name, b->full_name) == 0 &&
           strcmp(a->address, b->address) == 0 && strcmp(a->date_of_birth, b->date_of_birth) == 0 &&
           strcmp(a->locale, b->locale) == 0 && a->status == b->status &&
           strcmp(a->password_hash, b->password_hash) == 0 &&
           a->password_changed_at_us == b->password_changed_at_us &&
           a->created_at_us == b->created_at_us && a->updated_at_us == b->updated_at_us &&
           a->version == b->version;
}

/* ---------------------------------------------------------------- connections -- */

/* One connection with r's settings and its database selected (shared/db.h: timeouts,
 * utf8mb4, UTC, strict mode, CLIENT_FOUND_ROWS, no automatic reconnect). Caller closes the
 * result with mysql_close. NULL with errstr filled when the server cannot be reached or
 * refuses us. */
static MYSQL *repo_connect(const struct mariadb_config *cfg, char *errstr, size_t errlen)
{
    const struct db_config dc = {
        .host = cfg->host,
        .port = cfg->port,
        .user = cfg->user,
        .password = cfg->password,
        .database = cfg->database,
        .connect_timeout_s = cfg->connect_timeout_s,
        .io_timeout_s = cfg->io_timeout_s,
    };
    return db_connect(&dc, true, errstr, errlen);
}

static void conn_close(struct conn *c)
{
    for (int i = ST_COUNT - 1; i >= 0; i--) {
        if (c->stmt[i] != NULL) {
            mysql_stmt_close(c->stmt[i]);
            c->stmt[i] = NULL;
        }
    }
    if (c->db != NULL) {
        mysql_close(c->db);
        c->db = NULL;
    }
}

/* Makes c usable: opens it when closed; pings it when idle for a while or when another
 * connection was lost since it was last known good (a server restart breaks them all);
 * with reopen, always opens a new one. *fresh = opened now. epoch = r->lost_epoch as read at
 * checkout. UNAVAILABLE when the server cannot be reached. */
static enum user_repo_err conn_ready(struct mariadb_user_repo *r, struct conn *c,
                                     unsigned long epoch, int reopen, int *fresh)
{
    char err[512];

    *fresh = 0;
    if (c->db != NULL && reopen) {
        conn_close(c);
    }
    if (c->db != NULL && (c->epoch != epoch || monotonic_us() - c->last_used_us > IDLE_PING_US) &&
        mysql_ping(c->db) != 0) {
        conn_close(c);
    }
    c->epoch = epoch;
    if (c->db == NULL) {
        c->db = repo_connect(&r->cfg, err, sizeof err);
        if (c->db == NULL) {
            char dropped[24];
            if (log_allowed(&unavailable_log_rate, dropped)) {
                log_write(LOG_ERROR, "db unavailable", "error", err, "lines_dropped", dropped,
                          NULL);
            }
            return USER_REPO_UNAVAILABLE;
        }
        *fresh = 1;
    }
    return USER_REPO_OK;
}

/* Borrows a free slot (waits up to POOL_WAIT_S); *epoch = the pool's lost_epoch now. NULL
 * when none frees up in time. */
static struct conn *pool_checkout(struct mariadb_user_repo *r, unsigned long *epoch)
{
    struct conn *c = NULL;
    struct timespec deadline;

    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += POOL_WAIT_S;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        /* Prefer an open connection; fall back to a closed slot. */
        for (unsigned i = 0; i < r->n; i++) {
            struct conn *s = &r->conns[i];
            if (!s->in_use && (c == NULL || (c->db == NULL && s->db != NULL))) {
                c = s;
            }
        }
        if (c != NULL) {
            c->in_use = 1;
            *epoch = r->lost_epoch;
            break;
        }
        if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    char dropped[24];
    if (c == NULL && log_allowed(&exhausted_log_rate, dropped)) {
        log_write(LOG_ERROR, "db pool exhausted", "lines_dropped", dropped, NULL);
    }
    return c;
}

/* Returns c to the pool; lost = c broke (and was closed), so the others get checked. */
static void pool_checkin(struct mariadb_user_repo *r, struct conn *c, int lost)
{
    c->last_used_us = monotonic_us();
    pthread_mutex_lock(&r->mu);
    if (lost) {
        r->lost_epoch++;
    }
    c->in_use = 0;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* The cached statement id of c, prepared on first use. NULL with *s set on failure. */
static MYSQL_STMT *conn_stmt(struct conn *c, enum stmt_id id, struct step *s)
{
    MYSQL_STMT *st = c->stmt[id];
    const char *sql = stmt_sql[id];

    if (st != NULL) {
        return st;
    }
    st = mysql_stmt_init(c->db);
    if (st == NULL) {
        s->err = USER_REPO_INTERNAL;
        log_write(LOG_ERROR, "db error", "error", "mysql_stmt_init: out of memory", NULL);
        return NULL;
    }
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0) {
        *s = stmt_failure("prepare", st);
        mysql_stmt_close(st);
        return NULL;
    }
    c->stmt[id] = st;
    return st;
}

/* ---------------------------------------------------------------- operations -- */

/* An operation: run() is one attempt on a ready connection (attempt 0, or 1 for the retry);
 * a write records in its arg ("sent") when its statement may have reached the server before
 * the connection broke, so that attempt 1 can recognise its own earlier effect. */
struct op {
    const char *name;
    struct step (*run)(struct conn *c, void *arg, int attempt);
    void *arg;
};

/* Executes st with params bound; on success the result (if any) is stored client-side. */
static struct step exec_stmt(const char *op, MYSQL_STMT *st, MYSQL_BIND *params,
                             MYSQL_BIND *results)
{
    struct step s = {USER_REPO_OK, 0};

    if (params != NULL && mysql_stmt_bind_param(st, params) != 0) {
        return stmt_failure(op, st);
    }
    if (mysql_stmt_execute(st) != 0) {
        return stmt_failure(op, st);
    }
    if (results != NULL) {
        if (mysql_stmt_bind_result(st, results) != 0 || mysql_stmt_store_result(st) != 0) {
            s = stmt_failure(op, st);
            mysql_stmt_free_result(st);
        }
    }
    return s;
}

/* Loads the row with id into *out (NOT_FOUND when absent). */
static struct step do_find(struct conn *c, const char *id, struct user *out)
{
    struct step s = {USER_REPO_OK, 0};
    struct user_result *res = NULL;
    MYSQL_BIND param;
    unsigned long id_len;
    my_bool id_null;
    MYSQL_STMT *st = conn_stmt(c, ST_FIND, &s);

    if (st == NULL) {
        goto out;
    }
    res = malloc(sizeof *res);
    if (res == NULL) {
        s.err = USER_REPO_INTERNAL;
        goto out;
    }
    user_result_init(res);
    bind_str(&param, id, &id_len, &id_null, 0);
    s = exec_stmt("find", st, &param, res->b);
    if (s.err != USER_REPO_OK) {
        goto out;
    }
    switch (mysql_stmt_fetch(st)) {
    case 0:
        if (user_result_finish(res) != 0) {
            log_write(LOG_ERROR, "db error", "op", "find", "error", "value too long", NULL);
            s.err = USER_REPO_INTERNAL;
        } else {
            *out = res->u;
        }
        break;
    case MYSQL_NO_DATA:
        s.err = USER_REPO_NOT_FOUND;
        break;
    case MYSQL_DATA_TRUNCATED:
        log_write(LOG_ERROR, "db error", "op", "find", "error", "value truncated", NULL);
        s.err = USER_REPO_INTERNAL;
        break;
    default:
        s = stmt_failure("find", st);
        break;
    }
    mysql_stmt_free_result(st);
out:
    if (res != NULL) {
        explicit_bzero(res, sizeof *res); /* held a password hash */
        free(res);
    }
    return s;
}

struct find_arg {
    const char *id;
    struct user *out;
};

static struct step op_find(struct conn *c, void *arg, int attempt)
{
    struct find_arg *a = arg;
    (void)attempt;
    return do_find(c, a->id, a->out);
}

struct insert_arg {
    const struct user *u;
    int sent; /* set by attempt 0 when the INSERT may have been executed */
};

static struct step op_insert(struct conn *c, void *arg, int attempt)
{
    struct insert_arg *a = arg;
    struct step s = {USER_REPO_OK, 0};
    struct user_params *p = NULL;
    struct user *stored = NULL;
    MYSQL_STMT *st = conn_stmt(c, ST_INSERT, &s);

    if (st == NULL) {
        goto out;
    }
    p = malloc(sizeof *p);
    if (p == NULL || user_params_fill(p, a->u) != 0) {
        s.err = USER_REPO_INTERNAL;
        goto out;
    }
    if (mysql_stmt_bind_param(st, p->b) != 0) {
        s = stmt_failure("insert", st);
        goto out;
    }
    if (mysql_stmt_execute(st) == 0) {
        goto out;
    }
    if (mysql_stmt_errno(st) != ER_DUP_ENTRY) {
        s = stmt_failure("insert", st);
        if (attempt == 0 && s.lost) {
            a->sent = 1;
        }
        goto out;
    }
    s.err = map_dup("insert", st);
    if (attempt == 1 && a->sent) {
        /* Did our first attempt store the row after all? */
        stored = malloc(sizeof *stored);
        if (stored == NULL) {
            goto out;
        }
        struct step f = do_find(c, a->u->id, stored);
        if (f.err == USER_REPO_OK && user_equal(stored, a->u)) {
            s.err = USER_REPO_OK;
        } else if (f.lost) {
            s = f;
        }
    }
out:
    if (stored != NULL) {
        explicit_bzero(stored, sizeof *stored);
        free(stored);
    }
    free(p);
    return s;
}

struct update_arg {
    const struct user *u;
    uint64_t expected;
    int sent;
};

static struct step op_update(struct conn *c, void *arg, int attempt)
{
    struct update_arg *a = arg;
    struct step s = {USER_REPO_OK, 0};
    struct user_params *p = NULL;
    struct user *stored = NULL;
    MYSQL_BIND b[USER_COLUMNS + 1];
    MYSQL_STMT *st = conn_stmt(c, ST_UPDATE, &s);

    if (st == NULL) {
        goto out;
    }
    p = malloc(sizeof *p);
    if (p == NULL || user_params_fill(p, a->u) != 0) {
        s.err = USER_REPO_INTERNAL;
        goto out;
    }
    /* SET columns (all but id), then WHERE id = ? AND version = ? */
    memcpy(&b[0], &p->b[C_USERNAME], sizeof(MYSQL_BIND) * (USER_COLUMNS - 1));
    b[USER_COLUMNS - 1] = p->b[C_ID];
    p->expected = a->expected;
    bind_u64(&b[USER_COLUMNS], &p->expected);
    if (mysql_stmt_bind_param(st, b) != 0) {
        s = stmt_failure("update", st);
        goto out;
    }
    if (mysql_stmt_execute(st) != 0) {
        if (mysql_stmt_errno(st) == ER_DUP_ENTRY) {
            s.err = map_dup("update", st);
            goto out;
        }
        s = stmt_failure("update", st);
        if (attempt == 0 && s.lost) {
            a->sent = 1;
        }
        goto out;
    }
    if (mysql_stmt_affected_rows(st) > 0) {
        goto out;
    }
    /* No row at that id and version: tell a missing row from a moved version. */
    stored = malloc(sizeof *stored);
    if (stored == NULL) {
        s.err = USER_REPO_INTERNAL;
        goto out;
    }
    s = do_find(c, a->u->id, stored);
    if (s.err == USER_REPO_OK) {
        s.err = (attempt == 1 && a->sent && user_equal(stored, a->u))
                    ? USER_REPO_OK /* our first attempt did it */
                    : USER_REPO_VERSION_CONFLICT;
    }
out:
    if (stored != NULL) {
        explicit_bzero(stored, sizeof *stored);
        free(stored);
    }
    free(p);
    return s;
}

struct remove_arg {
    const char *id;
    uint64_t expected; /* 0: any version */
    int sent;
};

static struct step op_remove(struct conn *c, void *arg, int attempt)
{
    struct remove_arg *a = arg;
    struct step s = {USER_REPO_OK, 0};
    MYSQL_BIND b[2];
    unsigned long id_len;
    my_bool id_null;
    uint64_t expected = a->expected;
    struct user *stored = NULL;
    MYSQL_STMT *st = conn_stmt(c, expected != 0 ? ST_REMOVE_VERSION : ST_REMOVE, &s);

    if (st == NULL) {
        goto out;
    }
    bind_str(&b[0], a->id, &id_len, &id_null, 0);
    bind_u64(&b[1], &expected);
    if (mysql_stmt_bind_param(st, b) != 0) {
        s = stmt_failure("remove", st);
        goto out;
    }
    if (mysql_stmt_execute(st) != 0) {
        s = stmt_failure("remove", st);
        if (attempt == 0 && s.lost) {
            a->sent = 1;
        }
        goto out;
    }
    if (mysql_stmt_affected_rows(st) > 0) {
        goto out;
    }
    if (expected == 0) {
        s.err = USER_REPO_NOT_FOUND;
    } else {
        stored = malloc(sizeof *stored);
        if (stored == NULL) {
            s.err = USER_REPO_INTERNAL;
            goto out;
        }
        s = do_find(c, a->id, stored);
        if (s.err == USER_REPO_OK) {
            s.err = USER_REPO_VERSION_CONFLICT;
        }
    }
    if (s.err == USER_REPO_NOT_FOUND && attempt == 1 && a->sent) {
        s.err = USER_REPO_OK; /* our first attempt may have deleted it */
    }
out:
    if (stored != NULL) {
        explicit_bzero(stored, sizeof *stored);
        free(stored);
    }
    return s;
}

struct list_arg {
    const char *after;
    size_t limit;
    struct user *out;
    size_t *n;
};

static struct step op_list(struct conn *c, void *arg, int attempt)
{
    struct list_arg *a = arg;
    struct step s = {USER_REPO_OK, 0};
    struct user_result *res = NULL;
    MYSQL_BIND b[2];
    unsigned long after_len;
    my_bool after_null;
    uint64_t limit = a->limit;
    size_t n = 0;
    MYSQL_STMT *st;
    (void)attempt;

    *a->n = 0;
    st = conn_stmt(c, a->after != NULL ? ST_LIST_AFTER : ST_LIST_FIRST, &s);
    if (st == NULL) {
        goto out;
    }
    res = malloc(sizeof *res);
    if (res == NULL) {
        s.err = USER_REPO_INTERNAL;
        goto out;
    }
    user_result_init(res);
    if (a->after != NULL) {
        bind_str(&b[0], a->after, &after_len, &after_null, 0);
        bind_u64(&b[1], &limit);
    } else {
        bind_u64(&b[0], &limit);
    }
    s = exec_stmt("list", st, b, res->b);
    if (s.err != USER_REPO_OK) {
        goto out;
    }
    for (;;) {
        int rc = mysql_stmt_fetch(st);
        if (rc == MYSQL_NO_DATA) {
            break;
        }
        if (rc == MYSQL_DATA_TRUNCATED || (rc == 0 && user_result_finish(res) != 0)) {
            log_write(LOG_ERROR, "db error", "op", "list", "error", "value truncated", NULL);
            s.err = USER_REPO_INTERNAL;
            break;
        }
        if (rc != 0) {
            s = stmt_failure("list", st);
            break;
        }
        if (n < a->limit) { /* LIMIT guarantees it; guard the caller's array anyway */
            a->out[n++] = res->u;
        }
    }
    mysql_stmt_free_result(st);
    if (s.err == USER_REPO_OK) {
        *a->n = n;
    }
out:
    if (res != NULL) {
        explicit_bzero(res, sizeof *res);
        free(res);
    }
    return s;
}

static struct step op_ping(struct conn *c, void *arg, int attempt)
{
    struct step s = {USER_REPO_OK, 0};
    (void)arg;
    (void)attempt;
    if (mysql_ping(c->db) != 0) {
        unsigned e = mysql_errno(c->db);
        log_db_error("ping", e, mysql_sqlstate(c->db), mysql_error(c->db));
        s.err = USER_REPO_UNAVAILABLE;
        s.lost = 1;
    }
    return s;
}

/* Runs op on a pooled connection, once more on a fresh one after a lost connection. */
static enum user_repo_err repo_run(struct mariadb_user_repo *r, const struct op *op)
{
    struct step s = {USER_REPO_UNAVAILABLE, 0};

    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0;
        unsigned long epoch = 0;
        struct conn *c = pool_checkout(r, &epoch);
        if (c == NULL) {
            s.err = USER_REPO_UNAVAILABLE;
            break;
        }
        /* The retry runs on a new connection: another pooled one may be just as stale. */
        s.err = conn_ready(r, c, epoch, attempt > 0, &fresh);
        s.lost = 0;
        if (s.err == USER_REPO_OK) {
            s = op->run(c, op->arg, attempt);
            if (s.lost) {
                conn_close(c);
            }
        }
        pool_checkin(r, c, s.lost);
        if (s.err != USER_REPO_UNAVAILABLE || !s.lost || fresh) {
            break;
        }
        char dropped[24];
        if (log_allowed(&lost_log_rate, dropped)) {
            log_write(LOG_WARN, "db connection lost; retrying once", "op", op->name,
                      "lines_dropped", dropped, NULL);
        }
    }
    return s.err;
}

static enum user_repo_err repo_insert(void *self, const struct user *u)
{
    struct insert_arg a = {u, 0};
    struct op op = {"insert", op_insert, &a};
    return repo_run(self, &op);
}

static enum user_repo_err repo_find(void *self, const char *id, struct user *out)
{
    struct find_arg a = {id, out};
    struct op op = {"find", op_find, &a};
    return repo_run(self, &op);
}

static enum user_repo_err repo_list(void *self, const char *after, size_t limit, struct user *out,
                                    size_t *n)
{
    struct list_arg a = {after, limit, out, n};
    struct op op = {"list", op_list, &a};
    *n = 0;
    if (limit == 0) {
        return USER_REPO_OK;
    }
    return repo_run(self, &op);
}

static enum user_repo_err repo_update(void *self, const struct user *u, uint64_t expected)
{
    struct update_arg a = {u, expected, 0};
    struct op op = {"update", op_update, &a};
    return repo_run(self, &op);
}

static enum user_repo_err repo_remove(void *self, const char *id, uint64_t expected)
{
    struct remove_arg a = {id, expected, 0};
    struct op op = {"remove", op_remove, &a};
    return repo_run(self, &op);
}

static enum user_repo_err repo_ping(void *self)
{
    struct op op = {"ping", op_ping, NULL};
    return repo_run(self, &op);
}

static const struct user_repo_ops mariadb_user_repo_ops = {
    .insert = repo_insert,
    .find = repo_find,
    .list = repo_list,
    .update = repo_update,
    .remove = repo_remove,
    .ping = repo_ping,
};

/* ---------------------------------------------------------------- lifecycle -- */

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* Caller frees the result with mariadb_user_repo_free. */
struct mariadb_user_repo *mariadb_user_repo_new(const struct mariadb_config *cfg)
{
    struct mariadb_user_repo *r = NULL;
    pthread_condattr_t ca;
    int have_mu = 0, have_cv = 0;

    pthread_once(&library_once, library_init);
    if (library_rc != 0) {
        goto fail;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        goto fail;
    }
    r->cfg = *cfg;
    r->host = dup_or_empty(cfg->host);
    r->user = dup_or_empty(cfg->user);
    r->password = dup_or_empty(cfg->password);
    r->database = dup_or_empty(cfg->database);
    r->n = cfg->pool_size > 0 ? cfg->pool_size : 1;
    r->conns = calloc(r->n, sizeof *r->conns);
    if (r->host == NULL || r->user == NULL || r->password == NULL || r->database == NULL ||
        r->conns == NULL) {
        goto fail;
    }
    r->cfg.host = r->host;
    r->cfg.user = r->user;
    r->cfg.password = r->password;
    r->cfg.database = r->database;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        goto fail;
    }
    have_mu = 1;
    /* The pool wait is measured on the monotonic clock: a wall-clock jump cannot stretch it. */
    if (pthread_condattr_init(&ca) != 0) {
        goto fail;
    }
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&r->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        goto fail;
    }
    pthread_condattr_destroy(&ca);
    have_cv = 1;
    return r;
fail:
    if (r != NULL) {
        if (have_cv) {
            pthread_cond_destroy(&r->cv);
        }
        if (have_mu) {
            pthread_mutex_destroy(&r->mu);
        }
        free(r->conns);
        free(r->database);
        free(r->password);
        free(r->user);
        free(r->host);
        free(r);
    }
    return NULL;
}

/* Closes every connection and frees r (NULL is fine). No call may be in progress. */
void mariadb_user_repo_free(struct mariadb_user_repo *r)
{
    if (r == NULL) {
        return;
    }
    for (unsigned i = r->n; i-- > 0;) {
        conn_close(&r->conns[i]);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->conns);
    explicit_bzero(r->password, strlen(r->password));
    free(r->database);
    free(r->password);
    free(r->user);
    free(r->host);
    free(r);
}

struct user_repo mariadb_user_repo_port(struct mariadb_user_repo *r)
{
    struct user_repo port = {.ops = &mariadb_user_repo_ops, .self = r};
    return port;
}
