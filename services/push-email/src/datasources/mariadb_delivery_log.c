/* mariadb_delivery_log: the delivery_log port on MariaDB/MySQL through MariaDB Connector/C.
 *
 * Rows are keyed by SHA-256(dedupe key) (BINARY(32)): a fixed-size primary key whatever
 * the key's length; the key itself is kept beside it (cut to 512 bytes) for people.
 *
 *   begin          INSERT IGNORE (one row added: a new key, PENDING), else SELECT its state
 *                  state. (Not INSERT IGNORE: it would also turn real errors into warnings.)
 *   mark_sent      state 'sent', sent_at now, last_error cleared.
 *   mark_failed    state 'failed' (a row already 'sent' stays 'sent'), attempts + 1, error.
 *   record_attempt attempts + 1, last_error.
 *
 * One connection (the consumer is single-threaded), opened lazily with db_connect and its
 * statements prepared once. On a connection-level error (db_is_connection_error) the
 * connection is closed and the call runs ONCE more on a fresh one, unless the failing
 * connection was itself fresh (the server is down: UNAVAILABLE at once). Every statement is
 * idempotent in its effect except the attempts counter, which a retry after a lost reply
 * may count twice: it is information for people, not a decision input.
 *
 * Errors: server unreachable, connection lost twice, lock wait timeout, deadlock,
 * read-only server -> DELIVERY_LOG_UNAVAILABLE (retry later); anything else (no such row,
 * schema missing, our bug) -> DELIVERY_LOG_INTERNAL. Logged with shared/log.h; values of
 * rows are not logged (the key holds an address). */
#include "datasources/mariadb_delivery_log.h"

#include <mysql.h>
#include <mysqld_error.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/log.h"

#define HASH_LEN      crypto_hash_sha256_BYTES
#define KEY_MAX       512 /* bytes kept of dedupe_key; the column holds 512 characters */
#define KIND_MAX      64
#define RECIPIENT_MAX 320
#define ERROR_MAX     512

enum stmt_id { ST_INSERT, ST_STATE, ST_SENT, ST_FAILED, ST_ATTEMPT, ST_COUNT };

static const char *const stmt_sql[ST_COUNT] = {
    [ST_INSERT] = "INSERT IGNORE INTO deliveries (key_hash, dedupe_key, kind, recipient) "
                  "VALUES (?, ?, ?, ?)",
    [ST_STATE] = "SELECT state FROM deliveries WHERE key_hash = ?",
    [ST_SENT] = "UPDATE deliveries SET state = 'sent', sent_at = CURRENT_TIMESTAMP(6), "
                "last_error = NULL WHERE key_hash = ?",
    [ST_FAILED] = "UPDATE deliveries SET state = IF(state = 'sent', state, 'failed'), "
                  "attempts = attempts + 1, last_error = ? WHERE key_hash = ?",
    [ST_ATTEMPT] = "UPDATE deliveries SET attempts = attempts + 1, last_error = ? "
                   "WHERE key_hash = ?",
};

struct mariadb_delivery_log {
    struct db_config cfg; /* strings point into the copies below */
    char *host, *user, *password, *database;
    MYSQL *db;                  /* NULL while closed; owned */
    MYSQL_STMT *stmt[ST_COUNT]; /* prepared on first use; owned, closed with db */
};

/* Outcome of one attempt of an operation. */
struct step {
    enum delivery_log_err err;
    int lost; /* the connection is broken: close it (and maybe retry) */
};

/* ---------------------------------------------------------------- errors -- */

static int is_transient_error(unsigned e)
{
    switch (e) {
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_LOCK_DEADLOCK:
    case ER_OPTION_PREVENTS_STATEMENT: /* --read-only during a failover */
    case ER_QUERY_INTERRUPTED:
    case ER_STATEMENT_TIMEOUT:
    case ER_CON_COUNT_ERROR:
    case ER_TOO_MANY_USER_CONNECTIONS:
        return 1;
    default:
        return 0;
    }
}

static struct step stmt_failure(const char *op, MYSQL_STMT *st)
{
    struct step s = {DELIVERY_LOG_INTERNAL, 0};
    unsigned e = mysql_stmt_errno(st);
    char num[16];

    if (db_is_connection_error(e)) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
        s.lost = 1;
    } else if (is_transient_error(e)) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
    }
    snprintf(num, sizeof num, "%u", e);
    log_write(LOG_ERROR, "delivery log db error", "op", op, "errno", num, "error",
              mysql_stmt_error(st), NULL);
    return s;
}

/* ---------------------------------------------------------------- values -- */

/* Length of s cut to at most max bytes, never inside a UTF-8 sequence. */
static unsigned long utf8_cut(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n <= max) {
        return (unsigned long)n;
    }
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80) {
        n--;
    }
    return (unsigned long)n;
}

/* An error text for the last_error column: printable ASCII only (a server's reply may
 * hold any byte, and strict mode refuses invalid UTF-8), at most ERROR_MAX bytes. */
static unsigned long error_text(const char *in, char out[ERROR_MAX + 1])
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)(in ? in : ""); *p && n < ERROR_MAX; p++) {
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? (char)*p : '?';
    }
    out[n] = '\0';
    return (unsigned long)n;
}

static void bind_bytes(MYSQL_BIND *b, const void *p, unsigned long *len)
{
    memset(b, 0, sizeof *b);
    b->buffer_type = MYSQL_TYPE_STRING;
    b->buffer = (void *)(uintptr_t)p;
    b->buffer_length = *len;
    b->length = len;
}

/* ---------------------------------------------------------------- connection -- */

static void conn_close(struct mariadb_delivery_log *l)
{
    for (int i = ST_COUNT - 1; i >= 0; i--) {
        if (l->stmt[i] != NULL) {
            mysql_stmt_close(l->stmt[i]);
            l->stmt[i] = NULL;
        }
    }
    if (l->db != NULL) {
        mysql_close(l->db);
        l->db = NULL;
    }
}

/* Opens the connection when closed. *fresh = opened now. */
static enum delivery_log_err conn_ready(struct mariadb_delivery_log *l, int *fresh)
{
    char err[512];

    *fresh = 0;
    if (l->db != NULL) {
        return DELIVERY_LOG_OK;
    }
    l->db = db_connect(&l->cfg, true, err, sizeof err);
    if (l->db == NULL) {
        log_write(LOG_ERROR, "delivery log db unavailable", "error", err, NULL);
        return DELIVERY_LOG_UNAVAILABLE;
    }
    *fresh = 1;
    return DELIVERY_LOG_OK;
}

/* The prepared statement id of the open connection (prepared now when needed). */
static MYSQL_STMT *conn_stmt(struct mariadb_delivery_log *l, enum stmt_id id, struct step *s)
{
    MYSQL_STMT *st = l->stmt[id];

    if (st != NULL) {
        return st;
    }
    st = mysql_stmt_init(l->db);
    if (st == NULL) {
        s->err = DELIVERY_LOG_INTERNAL;
        return NULL;
    }
    if (mysql_stmt_prepare(st, stmt_sql[id], (unsigned long)strlen(stmt_sql[id])) != 0) {
        *s = stmt_failure("prepare", st);
        mysql_stmt_close(st);
        return NULL;
    }
    l->stmt[id] = st;
    return st;
}

/* Executes statement id with params; *matched = rows matched (UPDATE) or added (INSERT
 * IGNORE: 0 when the key was there). */
static struct step exec_stmt(struct mariadb_delivery_log *l, enum stmt_id id, const char *op,
                             MYSQL_BIND *params, unsigned long long *matched)
{
    struct step s = {DELIVERY_LOG_OK, 0};
    MYSQL_STMT *st = conn_stmt(l, id, &s);

    if (st == NULL) {
        return s;
    }
    if (mysql_stmt_bind_param(st, params) != 0 || mysql_stmt_execute(st) != 0) {
        return stmt_failure(op, st);
    }
    if (matched != NULL) {
        *matched = (unsigned long long)mysql_stmt_affected_rows(st);
    }
    return s;
}

/* ---------------------------------------------------------------- operations -- */

struct args {
    unsigned char hash[HASH_LEN];
    unsigned long hash_len;
    const char *key;
    const char *kind;
    const char *recipient;
    char error[ERROR_MAX + 1];
    enum delivery_state state; /* out of begin */
};

typedef struct step (*op_fn)(struct mariadb_delivery_log *l, struct args *a);

static struct step op_begin(struct mariadb_delivery_log *l, struct args *a)
{
    MYSQL_BIND p[4], r;
    unsigned long key_len = utf8_cut(a->key, KEY_MAX);
    unsigned long kind_len = utf8_cut(a->kind, KIND_MAX);
    unsigned long rcpt_len = utf8_cut(a->recipient, RECIPIENT_MAX);
    char state[16];
    unsigned long state_len = 0;
    my_bool is_null = 0;
    struct step s;
    MYSQL_STMT *st;
    int frc;

    bind_bytes(&p[0], a->hash, &a->hash_len);
    bind_bytes(&p[1], a->key, &key_len);
    bind_bytes(&p[2], a->kind, &kind_len);
    bind_bytes(&p[3], a->recipient, &rcpt_len);
    unsigned long long added = 0;
    s = exec_stmt(l, ST_INSERT, "begin insert", p, &added);
    if (s.err != DELIVERY_LOG_OK) {
        return s;
    }
    if (added == 1) {
        /* The key is new: pending, and one round trip saved (most keys are new). */
        a->state = DELIVERY_PENDING;
        return s;
    }
    s = exec_stmt(l, ST_STATE, "begin select", p, NULL);
    if (s.err != DELIVERY_LOG_OK) {
        return s;
    }
    st = l->stmt[ST_STATE];
    memset(&r, 0, sizeof r);
    r.buffer_type = MYSQL_TYPE_STRING;
    r.buffer = state;
    r.buffer_length = sizeof state - 1;
    r.length = &state_len;
    r.is_null = &is_null;
    if (mysql_stmt_bind_result(st, &r) != 0 || mysql_stmt_store_result(st) != 0) {
        return stmt_failure("begin fetch", st);
    }
    frc = mysql_stmt_fetch(st);
    mysql_stmt_free_result(st);
    if (frc == 1) {
        return stmt_failure("begin fetch", st);
    }
    if (frc == MYSQL_NO_DATA || is_null || state_len >= sizeof state) {
        log_write(LOG_ERROR, "delivery log: row vanished after insert", NULL);
        s.err = DELIVERY_LOG_INTERNAL;
        return s;
    }
    state[state_len] = '\0';
    if (strcmp(state, "sent") == 0) {
        a->state = DELIVERY_SENT;
    } else if (strcmp(state, "failed") == 0) {
        a->state = DELIVERY_FAILED;
    } else {
        a->state = DELIVERY_PENDING;
    }
    return s;
}

/* An UPDATE of one row by key: no such row is the caller's bug (begin comes first). */
static struct step update_one(struct mariadb_delivery_log *l, enum stmt_id id, const char *op,
                              MYSQL_BIND *p)
{
    unsigned long long matched = 0;
    struct step s = exec_stmt(l, id, op, p, &matched);

    if (s.err == DELIVERY_LOG_OK && matched == 0) {
        log_write(LOG_ERROR, "delivery log: no row for key (begin not called?)", "op", op, NULL);
        s.err = DELIVERY_LOG_INTERNAL;
    }
    return s;
}

static struct step op_sent(struct mariadb_delivery_log *l, struct args *a)
{
    MYSQL_BIND p[1];

    bind_bytes(&p[0], a->hash, &a->hash_len);
    return update_one(l, ST_SENT, "mark_sent", p);
}

static struct step op_with_error(struct mariadb_delivery_log *l, struct args *a, enum stmt_id id,
                                 const char *op)
{
    MYSQL_BIND p[2];
    unsigned long err_len = (unsigned long)strlen(a->error);

    bind_bytes(&p[0], a->error, &err_len);
    bind_bytes(&p[1], a->hash, &a->hash_len);
    return update_one(l, id, op, p);
}

static struct step op_failed(struct mariadb_delivery_log *l, struct args *a)
{
    return op_with_error(l, a, ST_FAILED, "mark_failed");
}

static struct step op_attempt(struct mariadb_delivery_log *l, struct args *a)
{
    return op_with_error(l, a, ST_ATTEMPT, "record_attempt");
}

static struct step op_ping(struct mariadb_delivery_log *l, struct args *a)
{
    struct step s = {DELIVERY_LOG_OK, 0};
    (void)a;

    if (mysql_ping(l->db) != 0) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
        s.lost = 1;
    }
    return s;
}

/* Runs fn on a ready connection, once more on a fresh one after a lost connection. */
static enum delivery_log_err run(struct mariadb_delivery_log *l, op_fn fn, struct args *a)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0;
        enum delivery_log_err e = conn_ready(l, &fresh);
        struct step s;

        if (e != DELIVERY_LOG_OK) {
            return e;
        }
        s = fn(l, a);
        if (!s.lost) {
            return s.err;
        }
        conn_close(l);
        if (fresh) {
            return s.err; /* a brand-new connection broke: the server is going down */
        }
    }
    return DELIVERY_LOG_UNAVAILABLE;
}

static void args_init(struct args *a, const char *key)
{
    memset(a, 0, sizeof *a);
    crypto_hash_sha256(a->hash, (const unsigned char *)key, strlen(key));
    a->hash_len = HASH_LEN;
    a->key = key;
}

static enum delivery_log_err log_begin(void *self, const char *key, const char *kind,
                                       const char *recipient, enum delivery_state *state)
{
    struct args a;
    enum delivery_log_err e;

    args_init(&a, key);
    a.kind = kind != NULL ? kind : "";
    a.recipient = recipient != NULL ? recipient : "";
    e = run(self, op_begin, &a);
    if (e == DELIVERY_LOG_OK) {
        *state = a.state;
    }
    return e;
}

static enum delivery_log_err log_mark_sent(void *self, const char *key)
{
    struct args a;

    args_init(&a, key);
    return run(self, op_sent, &a);
}

static enum delivery_log_err log_mark_failed(void *self, const char *key, const char *error)
{
    struct args a;

    args_init(&a, key);
    error_text(error, a.error);
    return run(self, op_failed, &a);
}

static enum delivery_log_err log_record_attempt(void *self, const char *key, const char *error)
{
    struct args a;

    args_init(&a, key);
    error_text(error, a.error);
    return run(self, op_attempt, &a);
}

static enum delivery_log_err log_ping(void *self)
{
    struct args a;

    memset(&a, 0, sizeof a);
    return run(self, op_ping, &a);
}

static const struct delivery_log_ops mariadb_delivery_log_ops = {
    .begin = log_begin,
    .mark_sent = log_mark_sent,
    .mark_failed = log_mark_failed,
    .record_attempt = log_record_attempt,
    .ping = log_ping,
};

/* ---------------------------------------------------------------- lifetime -- */

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

/* Caller frees the result with mariadb_delivery_log_free. */
struct mariadb_delivery_log *mariadb_delivery_log_new(const struct db_config *cfg)
{
    struct mariadb_delivery_log *l = NULL;

    if (sodium_init() < 0) {
        return NULL;
    }
    l = calloc(1, sizeof *l);
    if (l == NULL) {
        return NULL;
    }
    l->cfg = *cfg;
    l->host = dup_or_empty(cfg->host);
    l->user = dup_or_empty(cfg->user);
    l->password = dup_or_empty(cfg->password);
    l->database = dup_or_empty(cfg->database);
    if (l->host == NULL || l->user == NULL || l->password == NULL || l->database == NULL) {
        mariadb_delivery_log_free(l);
        return NULL;
    }
    l->cfg.host = l->host;
    l->cfg.user = l->user;
    l->cfg.password = l->password;
    l->cfg.database = l->database;
    return l;
}

/* Closes the connection and frees l (NULL is fine). */
void mariadb_delivery_log_free(struct mariadb_delivery_log *l)
{
    if (l == NULL) {
        return;
    }
    conn_close(l);
    if (l->password != NULL) {
        explicit_bzero(l->password, strlen(l->password));
    }
    free(l->database);
    free(l->password);
    free(l->user);
    free(l->host);
    free(l);
}

struct delivery_log mariadb_delivery_log_port(struct mariadb_delivery_log *l)
{
    struct delivery_log port = {.ops = &mariadb_delivery_log_ops, .self = l};
    return port;
}
