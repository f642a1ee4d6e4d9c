/* mariadb_delivery_log: the delivery_log port on MariaDB/MySQL through MariaDB Connector/C.
 *
 * Rows are keyed by SHA-256(dedupe key) (BINARY(32)): a fixed-size primary key whatever
 * the key's length; the key itself is kept beside it (cut to 512 bytes) for people.
 *
 *   begin          the marks not yet committed (in memory) first, then the states of the
 *                  last prefetch, then SELECT state: no row is PENDING. It writes nothing:
 *                  most keys are new, and a write per email before the send would cost a
 *                  commit on the path of every email.
 *   prefetch       one SELECT ... WHERE key_hash IN (64 keys) per 64 keys the consumer is
 *                  about to begin (a batch of events); kept 5 s at most, and updated by our
 *                  own marks, so that begin() needs no round trip of its own.
 *   mark_sent      kept in memory (begin sees it at once) and committed without the caller
 *                  waiting for it: one autocommit INSERT ... ON DUPLICATE KEY UPDATE
 *                  state = 'sent'. When every mark before it is committed (the usual case),
 *                  the caller's thread sends that statement itself on a connection of its
 *                  own (`direct`, mysql_send_query) and reads the reply later, at the next
 *                  flush() (the next email's send gate, notifier.c) or durable(): no other
 *                  thread is woken (about 3 context switches less per email, measured in
 *                  bench/README.md), and the statement leaves right after the SMTP
 *                  server's 250, with no thread switch in between. Otherwise (marks
 *                  already waiting, the direct connection failed, its reply late) the mark
 *                  is queued for the writer thread, which commits it on its own
 *                  connection, in one transaction with whatever else is queued. A direct
 *                  mark whose reply does not come (lost connection) is handed to the
 *                  writer: the upsert is idempotent. written() and durable() count the
 *                  marks, in order, and the consumer stores an event's offset only once
 *                  its marks are durable. While the database is away the writer keeps its
 *                  marks and tries again. mark_sent never connects: the direct connection
 *                  is opened after a query of the caller's succeeded (a prefetch or a
 *                  begin), and not within DIRECT_RETRY_MS of a failure.
 *   mark_failed    upsert: state 'failed' (a row already 'sent' stays 'sent'), attempts + 1,
 *                  error. Synchronous.
 *   record_attempt upsert: attempts + 1, last_error (state stays). Synchronous.
 *
 * The caller's other operations share one connection (the consumer is single-threaded),
 * opened lazily, statements prepared once. On a connection-level error
 * (db_is_connection_error) the connection is closed and the call runs ONCE more on a fresh
 * one, unless the failing connection was itself fresh (the server is down: UNAVAILABLE at
 * once). The writer keeps a batch it could not commit and tries again with a backoff until
 * it can, or until mariadb_delivery_log_free gives up after flushing for a while (those
 * marks are then lost: their emails would be sent again, with the same Message-ID, after a
 * restart). Every statement is idempotent in its effect except the attempts counter, which
 * a retry after a lost reply may count twice: it is information for people, not a decision
 * input.
 *
 * Errors: server unreachable, connection lost twice, lock wait timeout, deadlock,
 * read-only server -> DELIVERY_LOG_UNAVAILABLE (retry later); anything else (schema
 * missing, our bug) -> DELIVERY_LOG_INTERNAL. Logged with shared/log.h; values of rows are
 * not logged (the key holds an address). */
#include "datasources/mariadb_delivery_log.h"

#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/log.h"

#define HASH_LEN      crypto_hash_sha256_BYTES
#define KEY_MAX       512 /* bytes kept of dedupe_key; the column holds 512 characters */
#define KIND_MAX      64
#define RECIPIENT_MAX 320
#define ERROR_MAX     512

enum stmt_id { ST_STATE, ST_SENT, ST_SENT16, ST_FAILED, ST_ATTEMPT, ST_STATES, ST_COUNT };

/* prefetch: keys looked up per statement (unused slots repeat the first key). */
#define PREFETCH_PER_STMT 64
#define IN64                                                                                       \
    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?," \
    "?,?,"                                                                                         \
    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?"
/* The writer's multi-row upsert: 16 rows per statement. */
#define SENT_ROW  "(?, ?, ?, ?, 'sent', CURRENT_TIMESTAMP(6))"
#define SENT_ROW4 SENT_ROW ", " SENT_ROW ", " SENT_ROW ", " SENT_ROW
#define ROW16     SENT_ROW4 ", " SENT_ROW4 ", " SENT_ROW4 ", " SENT_ROW4
/* How many prefetched states begin() may use, and for how long (another member of the
 * group may write meanwhile; our own writes update the cache). */
#define PREFETCH_CACHE_MAX 256
#define PREFETCH_TTL_MS    5000

static const char *const stmt_sql[ST_COUNT] = {
    [ST_STATE] = "SELECT state FROM deliveries WHERE key_hash = ?",
    [ST_SENT] = "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, sent_at) "
                "VALUES (?, ?, ?, ?, 'sent', CURRENT_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE "
                "state = 'sent', sent_at = CURRENT_TIMESTAMP(6), last_error = NULL",
    [ST_SENT16] = "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, sent_at) "
                  "VALUES " ROW16 " ON DUPLICATE KEY UPDATE state = 'sent', "
                  "sent_at = CURRENT_TIMESTAMP(6), last_error = NULL",
    [ST_FAILED] = "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, attempts, "
                  "last_error) VALUES (?, ?, ?, ?, 'failed', 1, ?) ON DUPLICATE KEY UPDATE "
                  "state = IF(state = 'sent', state, 'failed'), attempts = attempts + 1, "
                  "last_error = VALUES(last_error)",
    [ST_ATTEMPT] = "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, attempts, "
                   "last_error) VALUES (?, ?, ?, ?, 1, ?) ON DUPLICATE KEY UPDATE "
                   "attempts = attempts + 1, last_error = VALUES(last_error)",
    [ST_STATES] = "SELECT key_hash, state FROM deliveries WHERE key_hash IN (" IN64 ")",
};

/* A state known from prefetch (or from our own writes since). */
struct cached_state {
    unsigned char hash[HASH_LEN];
    enum delivery_state state;
    bool marked; /* our mark was queued or being committed when the lookup ran: SENT */
};

/* One connection and its prepared statements. */
struct conn {
    MYSQL *db;                  /* NULL while closed; owned; autocommit */
    MYSQL_STMT *stmt[ST_COUNT]; /* prepared on first use; owned, closed with db */
};

/* A `sent` mark waiting for the writer. */
struct mark {
    struct mark *next;
    uint64_t ticket;
    unsigned char hash[HASH_LEN];
    char key[KEY_MAX + 1];
    char kind[KIND_MAX + 1];
    char recipient[RECIPIENT_MAX + 1];
};

#define WRITER_BATCH_MAX      256 /* marks per transaction */
#define WRITER_BACKOFF_MS     100
#define WRITER_BACKOFF_MAX_MS 2000
/* How long free() lets the writer finish. Short: at exit the consumer has already waited
 * up to 10 s for the same marks (kafka_consumer_free), and a pod's grace period is 30 s. */
#define FREE_FLUSH_MS 3000

struct mariadb_delivery_log {
    struct db_config cfg; /* strings point into the copies below */
    char *host, *user, *password, *database;
    struct conn caller; /* the caller's thread */
    struct conn writer; /* the writer thread's */
    /* The last prefetch's states; the caller's thread only. */
    struct cached_state cache[PREFETCH_CACHE_MAX];
    size_t cache_len;
    int64_t cache_at_ms;

    pthread_mutex_t mu;
    pthread_cond_t wake;                /* writer: marks queued, or stop */
    pthread_cond_t progress;            /* flush(): durable moved */
    struct mark *queued, **queued_tail; /* FIFO, not yet taken by the writer */
    struct mark *inflight;              /* taken by the writer, being committed */
    uint64_t written, durable;
    /* The caller's own path for a mark when nothing else is pending (see the top): its
     * connection, the mark whose upsert was sent there and whose reply is not read yet,
     * and when that path may be tried again after a failure. The caller's thread only
     * (fast is read under mu by mark_pending_locked, from the caller's thread too). */
    struct conn direct;
    struct mark *fast;
    int64_t fast_sent_ms; /* when fast's upsert was sent */
    int64_t direct_retry_ms;
    bool stop;
    bool writer_started;
    pthread_t writer_thread;
    /* One mark set aside at start for when calloc fails: without it, a mark that cannot be
     * kept in memory must be written at once, and if the server is away then, its email
     * would be sent again. spare is NULL while spare_block is in use (guarded by mu). */
    struct mark *spare_block, *spare;
};

/* Outcome of one attempt of an operation. */
struct step {
    enum delivery_log_err err;
    int lost; /* the connection is broken: close it (and maybe retry) */
};

/* ---------------------------------------------------------------- errors -- */

/* Maps a MariaDB error number to the port's error, and logs it. */
static struct step db_failure(const char *op, unsigned e, const char *message)
{
    struct step s = {DELIVERY_LOG_INTERNAL, 0};
    char num[16];

    if (db_is_connection_error(e)) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
        s.lost = 1;
    } else if (db_is_transient_error(e)) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
    }
    snprintf(num, sizeof num, "%u", e);
    log_write(LOG_ERROR, "delivery log db error", "op", op, "errno", num, "error", message, NULL);
    return s;
}

static struct step stmt_failure(const char *op, MYSQL_STMT *st)
{
    return db_failure(op, mysql_stmt_errno(st), mysql_stmt_error(st));
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

/* Opens the connection when closed. *fresh = opened now. */
static enum delivery_log_err conn_ready(const struct db_config *cfg, struct conn *c, int *fresh)
{
    char err[512];

    *fresh = 0;
    if (c->db != NULL) {
        return DELIVERY_LOG_OK;
    }
    c->db = db_connect(cfg, true, err, sizeof err);
    if (c->db == NULL) {
        log_write(LOG_ERROR, "delivery log db unavailable", "error", err, NULL);
        return DELIVERY_LOG_UNAVAILABLE;
    }
    *fresh = 1;
    return DELIVERY_LOG_OK;
}

/* The prepared statement id of the open connection (prepared now when needed). */
static MYSQL_STMT *conn_stmt(struct conn *c, enum stmt_id id, struct step *s)
{
    MYSQL_STMT *st = c->stmt[id];

    if (st != NULL) {
        return st;
    }
    st = mysql_stmt_init(c->db);
    if (st == NULL) {
        s->err = DELIVERY_LOG_INTERNAL;
        return NULL;
    }
    if (mysql_stmt_prepare(st, stmt_sql[id], (unsigned long)strlen(stmt_sql[id])) != 0) {
        *s = stmt_failure("prepare", st);
        mysql_stmt_close(st);
        return NULL;
    }
    c->stmt[id] = st;
    return st;
}

/* Executes statement id with params. */
static struct step exec_stmt(struct conn *c, enum stmt_id id, const char *op, MYSQL_BIND *params)
{
    struct step s = {DELIVERY_LOG_OK, 0};
    MYSQL_STMT *st = conn_stmt(c, id, &s);

    if (st == NULL) {
        return s;
    }
    if (mysql_stmt_bind_param(st, params) != 0 || mysql_stmt_execute(st) != 0) {
        return stmt_failure(op, st);
    }
    return s;
}

/* A failed mysql_* call on the connection itself (not a statement). */
static struct step conn_failure(const char *op, MYSQL *db)
{
    return db_failure(op, mysql_errno(db), mysql_error(db));
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

typedef struct step (*op_fn)(struct conn *c, struct args *a);

/* Binds hash, key, kind, recipient into p[0..3]; lens[0..2] receive the cut lengths. */
static void bind_row(MYSQL_BIND p[4], const unsigned char *hash, unsigned long *hash_len,
                     const char *key, const char *kind, const char *recipient,
                     unsigned long lens[3])
{
    lens[0] = utf8_cut(key, KEY_MAX);
    lens[1] = utf8_cut(kind, KIND_MAX);
    lens[2] = utf8_cut(recipient, RECIPIENT_MAX);
    bind_bytes(&p[0], hash, hash_len);
    bind_bytes(&p[1], key, &lens[0]);
    bind_bytes(&p[2], kind, &lens[1]);
    bind_bytes(&p[3], recipient, &lens[2]);
}

static struct step op_begin(struct conn *c, struct args *a)
{
    MYSQL_BIND p[1], r;
    char state[16];
    unsigned long state_len = 0;
    my_bool is_null = 0;
    struct step s;
    MYSQL_STMT *st;
    int frc;

    bind_bytes(&p[0], a->hash, &a->hash_len);
    s = exec_stmt(c, ST_STATE, "begin select", p);
    if (s.err != DELIVERY_LOG_OK) {
        return s;
    }
    st = c->stmt[ST_STATE];
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
    a->state = DELIVERY_PENDING;
    if (frc == MYSQL_NO_DATA) {
        return s; /* never recorded: not sent */
    }
    if (is_null || state_len >= sizeof state) {
        log_write(LOG_ERROR, "delivery log: unexpected state value", NULL);
        s.err = DELIVERY_LOG_INTERNAL;
        return s;
    }
    state[state_len] = '\0';
    if (strcmp(state, "sent") == 0) {
        a->state = DELIVERY_SENT;
    } else if (strcmp(state, "failed") == 0) {
        a->state = DELIVERY_FAILED;
    }
    return s;
}

static struct step op_with_error(struct conn *c, struct args *a, enum stmt_id id, const char *op)
{
    MYSQL_BIND p[5];
    unsigned long lens[3];
    unsigned long err_len = (unsigned long)strlen(a->error);

    bind_row(p, a->hash, &a->hash_len, a->key, a->kind, a->recipient, lens);
    bind_bytes(&p[4], a->error, &err_len);
    return exec_stmt(c, id, op, p);
}

static struct step op_failed(struct conn *c, struct args *a)
{
    return op_with_error(c, a, ST_FAILED, "mark_failed");
}

static struct step op_attempt(struct conn *c, struct args *a)
{
    return op_with_error(c, a, ST_ATTEMPT, "record_attempt");
}

static struct step op_ping(struct conn *c, struct args *a)
{
    struct step s = {DELIVERY_LOG_OK, 0};
    (void)a;

    if (mysql_ping(c->db) != 0) {
        s.err = DELIVERY_LOG_UNAVAILABLE;
        s.lost = 1;
    }
    return s;
}

/* Runs fn on the caller's connection, once more on a fresh one after a lost connection. */
static enum delivery_log_err run(struct mariadb_delivery_log *l, op_fn fn, struct args *a)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int fresh = 0;
        enum delivery_log_err e = conn_ready(&l->cfg, &l->caller, &fresh);
        struct step s;

        if (e != DELIVERY_LOG_OK) {
            return e;
        }
        s = fn(&l->caller, a);
        if (!s.lost) {
            return s.err;
        }
        conn_close(&l->caller);
        if (fresh) {
            return s.err; /* a brand-new connection broke: the server is going down */
        }
    }
    return DELIVERY_LOG_UNAVAILABLE;
}

static void args_init(struct args *a, const char *key, const char *kind, const char *recipient)
{
    memset(a, 0, sizeof *a);
    crypto_hash_sha256(a->hash, (const unsigned char *)key, strlen(key));
    a->hash_len = HASH_LEN;
    a->key = key;
    a->kind = kind != NULL ? kind : "";
    a->recipient = recipient != NULL ? recipient : "";
}

/* True when a mark for hash is queued or being committed. Caller holds l->mu. */
static bool mark_pending_locked(const struct mariadb_delivery_log *l, const unsigned char *hash)
{
    if (l->fast != NULL && memcmp(l->fast->hash, hash, HASH_LEN) == 0) {
        return true;
    }
    for (const struct mark *m = l->inflight; m != NULL; m = m->next) {
        if (memcmp(m->hash, hash, HASH_LEN) == 0) {
            return true;
        }
    }
    for (const struct mark *m = l->queued; m != NULL; m = m->next) {
        if (memcmp(m->hash, hash, HASH_LEN) == 0) {
            return true;
        }
    }
    return false;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The cached state of hash, if the cache is fresh and has it. */
static struct cached_state *cache_find(struct mariadb_delivery_log *l, const unsigned char *hash)
{
    if (l->cache_len == 0 || mono_ms() - l->cache_at_ms > PREFETCH_TTL_MS) {
        return NULL;
    }
    for (size_t i = 0; i < l->cache_len; i++) {
        if (memcmp(l->cache[i].hash, hash, HASH_LEN) == 0) {
            return &l->cache[i];
        }
    }
    return NULL;
}

/* Our own write of hash: the cache must not answer the old state afterwards. */
static void cache_update(struct mariadb_delivery_log *l, const unsigned char *hash,
                         enum delivery_state state)
{
    struct cached_state *cs = cache_find(l, hash);
    if (cs != NULL && !(cs->state == DELIVERY_SENT && state == DELIVERY_FAILED)) {
        cs->state = state;
    }
}

/* One SELECT ... IN for up to PREFETCH_PER_STMT cache entries from first on. */
static struct step op_states(struct conn *c, struct cached_state *entries, size_t n)
{
    MYSQL_BIND p[PREFETCH_PER_STMT], r[2];
    unsigned long hash_len = HASH_LEN, rhash_len = 0, state_len = 0;
    unsigned char rhash[HASH_LEN];
    char state[16];
    my_bool null_state = 0;
    struct step s;
    MYSQL_STMT *st;
    int frc;

    for (size_t i = 0; i < PREFETCH_PER_STMT; i++) {
        bind_bytes(&p[i], entries[i < n ? i : 0].hash, &hash_len);
    }
    s = exec_stmt(c, ST_STATES, "prefetch", p);
    if (s.err != DELIVERY_LOG_OK) {
        return s;
    }
    st = c->stmt[ST_STATES];
    memset(r, 0, sizeof r);
    r[0].buffer_type = MYSQL_TYPE_STRING;
    r[0].buffer = rhash;
    r[0].buffer_length = sizeof rhash;
    r[0].length = &rhash_len;
    r[1].buffer_type = MYSQL_TYPE_STRING;
    r[1].buffer = state;
    r[1].buffer_length = sizeof state - 1;
    r[1].length = &state_len;
    r[1].is_null = &null_state;
    if (mysql_stmt_bind_result(st, r) != 0 || mysql_stmt_store_result(st) != 0) {
        return stmt_failure("prefetch fetch", st);
    }
    while ((frc = mysql_stmt_fetch(st)) == 0) {
        if (rhash_len != HASH_LEN || null_state || state_len >= sizeof state) {
            continue;
        }
        state[state_len] = '\0';
        enum delivery_state ds = strcmp(state, "sent") == 0     ? DELIVERY_SENT
                                 : strcmp(state, "failed") == 0 ? DELIVERY_FAILED
                                                                : DELIVERY_PENDING;
        for (size_t i = 0; i < n; i++) {
            if (memcmp(entries[i].hash, rhash, HASH_LEN) == 0 && !entries[i].marked) {
                entries[i].state = ds;
            }
        }
    }
    mysql_stmt_free_result(st);
    if (frc != MYSQL_NO_DATA) {
        /* An error, or MYSQL_DATA_TRUNCATED: never leave a key PENDING on a doubt. */
        if (frc == MYSQL_DATA_TRUNCATED) {
            log_write(LOG_ERROR, "delivery log: prefetch row truncated", NULL);
            s.err = DELIVERY_LOG_INTERNAL;
            return s;
        }
        return stmt_failure("prefetch fetch", st);
    }
    return s;
}

#define DIRECT_WAIT_MS  2000 /* mark_sent's wait for the reply of the mark before */
#define DIRECT_RETRY_MS 5000 /* after a failure of the direct path: the writer's alone */
#define DIRECT_SQL_MAX  3000 /* the upsert with its values escaped */

/* The direct path failed: its connection is closed and not opened again for a while. */
static void direct_close(struct mariadb_delivery_log *l)
{
    conn_close(&l->direct);
    l->direct_retry_ms = mono_ms() + DIRECT_RETRY_MS;
}

/* Opens the direct connection (see the top) when it is closed and may be tried again:
 * called right after a query of the caller's succeeded, so the server is answering and
 * the connect is quick; mark_sent itself never connects. */
static void direct_open_if_due(struct mariadb_delivery_log *l)
{
    int fresh = 0;

    if (l->direct.db != NULL || mono_ms() < l->direct_retry_ms) {
        return;
    }
    if (conn_ready(&l->cfg, &l->direct, &fresh) != DELIVERY_LOG_OK) {
        direct_close(l);
        return;
    }
    log_write(LOG_INFO, "delivery log: direct connection for marks open", NULL);
}

static void log_prefetch(void *self, const char *const *keys, size_t n)
{
    struct mariadb_delivery_log *l = self;

    l->cache_len = 0;
    if (n > PREFETCH_CACHE_MAX) {
        n = PREFETCH_CACHE_MAX;
    }
    for (size_t i = 0; i < n; i++) {
        crypto_hash_sha256(l->cache[i].hash, (const unsigned char *)keys[i], strlen(keys[i]));
        l->cache[i].state = DELIVERY_PENDING; /* no row: never recorded */
        l->cache[i].marked = false;
    }
    /* A mark still queued or being committed now is invisible to the SELECT below, and
     * leaves the in-memory list once committed, maybe before begin() asks: it must answer
     * from here. (Marks are added on this thread only, so none appears meanwhile.) */
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < n; i++) {
        if (mark_pending_locked(l, l->cache[i].hash)) {
            l->cache[i].state = DELIVERY_SENT;
            l->cache[i].marked = true;
        }
    }
    pthread_mutex_unlock(&l->mu);
    for (size_t first = 0; first < n; first += PREFETCH_PER_STMT) {
        size_t chunk = n - first < PREFETCH_PER_STMT ? n - first : PREFETCH_PER_STMT;
        struct step s = {DELIVERY_LOG_OK, 0};
        for (int attempt = 0; attempt < 2; attempt++) {
            int fresh = 0;
            if (conn_ready(&l->cfg, &l->caller, &fresh) != DELIVERY_LOG_OK) {
                return; /* begin() will ask (and fail) by itself */
            }
            s = op_states(&l->caller, &l->cache[first], chunk);
            if (!s.lost) {
                break;
            }
            conn_close(&l->caller);
            if (fresh) {
                break;
            }
        }
        if (s.err != DELIVERY_LOG_OK) {
            return;
        }
    }
    l->cache_len = n;
    l->cache_at_ms = mono_ms();
    direct_open_if_due(l);
}

static enum delivery_log_err log_begin(void *self, const char *key, const char *kind,
                                       const char *recipient, enum delivery_state *state)
{
    struct mariadb_delivery_log *l = self;
    struct args a;
    enum delivery_log_err e;
    bool pending;

    args_init(&a, key, kind, recipient);
    pthread_mutex_lock(&l->mu);
    pending = mark_pending_locked(l, a.hash);
    pthread_mutex_unlock(&l->mu);
    if (pending) {
        *state = DELIVERY_SENT; /* sent; its mark is on its way to the table */
        return DELIVERY_LOG_OK;
    }
    struct cached_state *cs = cache_find(l, a.hash);
    if (cs != NULL) {
        *state = cs->state;
        return DELIVERY_LOG_OK;
    }
    e = run(l, op_begin, &a);
    if (e == DELIVERY_LOG_OK) {
        *state = a.state;
        direct_open_if_due(l);
    }
    return e;
}

static enum delivery_log_err log_flush(void *self, int timeout_ms);

/* Copies s into dst (size cap + 1), cut at a UTF-8 boundary. */
static void copy_cut(char *dst, const char *s, size_t cap)
{
    unsigned long n = utf8_cut(s != NULL ? s : "", cap);
    memcpy(dst, s != NULL ? s : "", n);
    dst[n] = '\0';
}

/* A deadline for pthread_cond_timedwait on `progress`, whose clock is CLOCK_MONOTONIC: a
 * step of the wall clock (NTP, a VM resumed) does not stretch a send gate's wait. */
static void deadline_in(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The `sent` upsert, autocommit: one round trip. */
static struct step op_sent(struct conn *c, struct args *a)
{
    MYSQL_BIND p[4];
    unsigned long lens[3];

    bind_row(p, a->hash, &a->hash_len, a->key, a->kind, a->recipient, lens);
    return exec_stmt(c, ST_SENT, "mark_sent", p);
}

/* A zeroed mark: calloc's, or the spare when calloc fails (NULL when that is in use too). */
static struct mark *mark_new(struct mariadb_delivery_log *l)
{
    struct mark *m = calloc(1, sizeof *m);
    if (m == NULL) {
        pthread_mutex_lock(&l->mu);
        m = l->spare;
        l->spare = NULL;
        pthread_mutex_unlock(&l->mu);
        if (m != NULL) {
            memset(m, 0, sizeof *m);
            log_write(LOG_WARN, "delivery log: out of memory; a mark uses the spare", NULL);
        }
    }
    return m;
}

/* Wipes m (it held an address) and frees it, or puts it back when it is the spare. The
 * caller holds mu. */
static void mark_release_locked(struct mariadb_delivery_log *l, struct mark *m)
{
    explicit_bzero(m, sizeof *m);
    if (m == l->spare_block) {
        l->spare = m;
    } else {
        free(m);
    }
}

/* Appends m to the writer's queue and wakes it. Caller holds l->mu. */
static void enqueue_locked(struct mariadb_delivery_log *l, struct mark *m)
{
    m->next = NULL;
    *l->queued_tail = m;
    l->queued_tail = &m->next;
    pthread_cond_signal(&l->wake);
}

/* The direct path failed with a mark on it: the writer takes the mark (the upsert is
 * idempotent, so it does not matter whether the server ran it). */
static void direct_give_up(struct mariadb_delivery_log *l)
{
    direct_close(l);
    if (l->fast != NULL) {
        pthread_mutex_lock(&l->mu);
        enqueue_locked(l, l->fast);
        l->fast = NULL;
        pthread_mutex_unlock(&l->mu);
    }
}

/* Sends m's upsert on the direct connection without waiting for the reply (read by
 * direct_complete). -1 when it could not be sent: the caller queues m for the writer. */
static int direct_send(struct mariadb_delivery_log *l, struct mark *m)
{
    char sql[DIRECT_SQL_MAX];
    int rc = -1;

    if (l->direct.db == NULL) {
        return -1; /* opened by direct_open_if_due, off this path */
    }
    /* Escaped text at most doubles (plus quotes); the three values are cut to their
     * columns, so the statement fits in sql. */
    char hex[HASH_LEN * 2 + 1], key[KEY_MAX * 2 + 1], kind[KIND_MAX * 2 + 1],
        rcpt[RECIPIENT_MAX * 2 + 1];
    mysql_hex_string(hex, (const char *)m->hash, HASH_LEN);
    mysql_real_escape_string(l->direct.db, key, m->key, (unsigned long)strlen(m->key));
    mysql_real_escape_string(l->direct.db, kind, m->kind, (unsigned long)strlen(m->kind));
    mysql_real_escape_string(l->direct.db, rcpt, m->recipient, (unsigned long)strlen(m->recipient));
    int n = snprintf(sql, sizeof sql,
                     "INSERT INTO deliveries (key_hash, dedupe_key, kind, recipient, state, "
                     "sent_at) VALUES (X'%s', '%s', '%s', '%s', 'sent', CURRENT_TIMESTAMP(6)) "
                     "ON DUPLICATE KEY UPDATE state = 'sent', sent_at = CURRENT_TIMESTAMP(6), "
                     "last_error = NULL",
                     hex, key, kind, rcpt);
    if (n < 0 || (size_t)n >= sizeof sql) {
        goto out;
    }
    if (mysql_send_query(l->direct.db, sql, (unsigned long)n) != 0) {
        (void)conn_failure("mark_sent (direct) send", l->direct.db);
        direct_close(l);
        goto out;
    }
    l->fast = m;
    l->fast_sent_ms = mono_ms();
    rc = 0;
out:
    /* They held an address. */
    explicit_bzero(sql, sizeof sql);
    explicit_bzero(key, sizeof key);
    explicit_bzero(rcpt, sizeof rcpt);
    return rc;
}

/* Reads the reply to the direct upsert, waiting up to timeout_ms for it: 0 when there is
 * nothing left to read (committed, or handed to the writer after an error), -1 when the
 * reply has not come yet (the mark stays pending). */
static int direct_complete(struct mariadb_delivery_log *l, int timeout_ms)
{
    struct mark *m = l->fast;

    if (m == NULL) {
        return 0;
    }
    struct pollfd pfd = {.fd = (int)mysql_get_socket(l->direct.db), .events = POLLIN};
    int rc;
    do {
        rc = poll(&pfd, 1, timeout_ms);
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) {
        /* A server that neither answers nor drops the connection: after the I/O timeout
         * the writer (whose reads have that timeout) takes the mark over. */
        unsigned io_s = l->cfg.io_timeout_s > 0 ? l->cfg.io_timeout_s : 10;
        if (mono_ms() - l->fast_sent_ms > (int64_t)io_s * 1000) {
            log_write(LOG_ERROR, "delivery log: no reply to a mark; the writer takes it over",
                      NULL);
            direct_give_up(l);
            return 0;
        }
        return -1;
    }
    if (rc < 0 || mysql_read_query_result(l->direct.db) != 0) {
        (void)conn_failure("mark_sent (direct)", l->direct.db);
        direct_give_up(l);
        return 0;
    }
    pthread_mutex_lock(&l->mu);
    l->fast = NULL;
    if (m->ticket > l->durable) {
        l->durable = m->ticket;
    }
    pthread_cond_broadcast(&l->progress);
    mark_release_locked(l, m);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

static enum delivery_log_err log_mark_sent(void *self, const char *key, const char *kind,
                                           const char *recipient)
{
    struct mariadb_delivery_log *l = self;
    struct args a;

    args_init(&a, key, kind, recipient);
    struct mark *m = mark_new(l);
    if (m == NULL) {
        /* No memory for the queue, and the spare in use: write it here, after the marks
         * before it. The cache says SENT only once it is recorded (else a retry would skip
         * it unrecorded). */
        if (log_flush(l, FREE_FLUSH_MS) != DELIVERY_LOG_OK) {
            return DELIVERY_LOG_UNAVAILABLE;
        }
        enum delivery_log_err e = run(l, op_sent, &a);
        if (e == DELIVERY_LOG_OK) {
            cache_update(l, a.hash, DELIVERY_SENT);
        }
        return e;
    }
    cache_update(l, a.hash, DELIVERY_SENT);
    memcpy(m->hash, a.hash, HASH_LEN);
    copy_cut(m->key, key, KEY_MAX);
    copy_cut(m->kind, kind, KIND_MAX);
    copy_cut(m->recipient, recipient, RECIPIENT_MAX);
    /* The mark before, normally read at the gate already; else wait for it, or hand it to
     * the writer. */
    if (direct_complete(l, DIRECT_WAIT_MS) != 0) {
        direct_give_up(l);
    }
    pthread_mutex_lock(&l->mu);
    m->ticket = ++l->written;
    bool direct = l->queued == NULL && l->inflight == NULL && l->durable + 1 == m->ticket;
    if (!direct) {
        enqueue_locked(l, m);
    }
    pthread_mutex_unlock(&l->mu);
    if (direct && direct_send(l, m) != 0) {
        pthread_mutex_lock(&l->mu);
        enqueue_locked(l, m);
        pthread_mutex_unlock(&l->mu);
    }
    return DELIVERY_LOG_OK;
}

static enum delivery_log_err log_mark_failed(void *self, const char *key, const char *kind,
                                             const char *recipient, const char *error)
{
    struct args a;

    args_init(&a, key, kind, recipient);
    error_text(error, a.error);
    enum delivery_log_err e = run(self, op_failed, &a);
    if (e == DELIVERY_LOG_OK) {
        cache_update(self, a.hash, DELIVERY_FAILED);
    }
    return e;
}

static enum delivery_log_err log_record_attempt(void *self, const char *key, const char *kind,
                                                const char *recipient, const char *error)
{
    struct args a;

    args_init(&a, key, kind, recipient);
    error_text(error, a.error);
    return run(self, op_attempt, &a);
}

static enum delivery_log_err log_ping(void *self)
{
    struct args a;

    memset(&a, 0, sizeof a);
    return run(self, op_ping, &a);
}

static uint64_t log_written(void *self)
{
    struct mariadb_delivery_log *l = self;
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->written;
    pthread_mutex_unlock(&l->mu);
    return v;
}

static uint64_t log_durable(void *self)
{
    struct mariadb_delivery_log *l = self;
    (void)direct_complete(l, 0); /* its reply may be in */
    pthread_mutex_lock(&l->mu);
    uint64_t v = l->durable;
    pthread_mutex_unlock(&l->mu);
    return v;
}

static enum delivery_log_err log_flush(void *self, int timeout_ms)
{
    struct mariadb_delivery_log *l = self;
    struct timespec until;
    enum delivery_log_err e = DELIVERY_LOG_OK;

    /* One budget for both waits: the direct mark's reply, then the writer. */
    deadline_in(&until, timeout_ms > 0 ? timeout_ms : 0);
    if (direct_complete(l, timeout_ms > 0 ? timeout_ms : 0) != 0) {
        return DELIVERY_LOG_UNAVAILABLE; /* the direct mark's reply is late */
    }
    pthread_mutex_lock(&l->mu);
    uint64_t want = l->written;
    while (l->durable < want) {
        if (pthread_cond_timedwait(&l->progress, &l->mu, &until) == ETIMEDOUT) {
            e = l->durable < want ? DELIVERY_LOG_UNAVAILABLE : DELIVERY_LOG_OK;
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return e;
}

static const struct delivery_log_ops mariadb_delivery_log_ops = {
    .begin = log_begin,
    .mark_sent = log_mark_sent,
    .mark_failed = log_mark_failed,
    .record_attempt = log_record_attempt,
    .ping = log_ping,
    .written = log_written,
    .durable = log_durable,
    .flush = log_flush,
    .prefetch = log_prefetch,
};

/* ---------------------------------------------------------------- writer -- */

/* Commits marks (a list) on the writer's connection: one autocommit statement for one
 * mark, else one transaction. */
static struct step write_batch(struct mariadb_delivery_log *l, const struct mark *marks)
{
    struct step s = {DELIVERY_LOG_OK, 0};
    struct conn *c = &l->writer;
    int fresh = 0;
    bool txn = marks->next != NULL;

    s.err = conn_ready(&l->cfg, c, &fresh);
    if (s.err != DELIVERY_LOG_OK) {
        return s;
    }
    if (txn && mysql_query(c->db, "START TRANSACTION") != 0) {
        return conn_failure("writer begin", c->db);
    }
    /* Sixteen rows per statement while there are sixteen, then one by one. */
    const struct mark *m = marks;
    while (m != NULL) {
        MYSQL_BIND p[16 * 4];
        unsigned long lens[16][3];
        unsigned long hash_len = HASH_LEN;
        const struct mark *probe = m;
        size_t rows = 0;

        while (probe != NULL && rows < 16) {
            probe = probe->next;
            rows++;
        }
        if (rows < 16) {
            rows = 1;
        }
        for (size_t i = 0; i < rows; i++, m = m->next) {
            bind_row(&p[i * 4], m->hash, &hash_len, m->key, m->kind, m->recipient, lens[i]);
        }
        s = exec_stmt(c, rows == 16 ? ST_SENT16 : ST_SENT, "mark_sent", p);
        if (s.err != DELIVERY_LOG_OK) {
            if (txn && !s.lost) {
                (void)mysql_rollback(c->db);
            }
            return s;
        }
    }
    if (txn && mysql_commit(c->db) != 0) {
        return conn_failure("writer commit", c->db);
    }
    return s;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *writer_main(void *arg)
{
    struct mariadb_delivery_log *l = arg;
    unsigned backoff = 0;

    (void)mysql_thread_init();
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (l->inflight == NULL && l->queued == NULL && !l->stop) {
            pthread_cond_wait(&l->wake, &l->mu);
        }
        if (l->inflight == NULL && l->queued == NULL) {
            break; /* stop, and nothing left */
        }
        if (l->inflight == NULL) {
            /* Take up to WRITER_BATCH_MAX marks off the queue. */
            struct mark **cut = &l->queued;
            for (size_t n = 0; *cut != NULL && n < WRITER_BATCH_MAX; n++) {
                cut = &(*cut)->next;
            }
            l->inflight = l->queued;
            l->queued = *cut;
            *cut = NULL;
            if (l->queued == NULL) {
                l->queued_tail = &l->queued;
            }
        }
        struct mark *batch = l->inflight;
        pthread_mutex_unlock(&l->mu);

        struct step s = write_batch(l, batch);
        if (s.lost) {
            conn_close(&l->writer);
        }

        pthread_mutex_lock(&l->mu);
        if (s.err == DELIVERY_LOG_OK) {
            uint64_t last = 0;
            while (l->inflight != NULL) {
                struct mark *m = l->inflight;
                l->inflight = m->next;
                last = m->ticket;
                mark_release_locked(l, m);
            }
            l->durable = last;
            backoff = 0;
            pthread_cond_broadcast(&l->progress);
            continue;
        }
        /* Keep the batch and try again after a backoff, unless free() has given up
         * waiting (it sets stop only after its flush deadline). */
        if (l->stop) {
            break;
        }
        backoff = backoff == 0
                      ? WRITER_BACKOFF_MS
                      : (backoff * 2 > WRITER_BACKOFF_MAX_MS ? WRITER_BACKOFF_MAX_MS : backoff * 2);
        pthread_mutex_unlock(&l->mu);
        sleep_ms(backoff);
        pthread_mutex_lock(&l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    conn_close(&l->writer);
    mysql_thread_end();
    return NULL;
}

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
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->wake, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&l->progress, &monotonic);
    pthread_condattr_destroy(&monotonic);
    l->queued_tail = &l->queued;
    l->spare_block = l->spare = calloc(1, sizeof *l->spare);
    l->cfg = *cfg;
    l->host = dup_or_empty(cfg->host);
    l->user = dup_or_empty(cfg->user);
    l->password = dup_or_empty(cfg->password);
    l->database = dup_or_empty(cfg->database);
    if (l->host == NULL || l->user == NULL || l->password == NULL || l->database == NULL ||
        l->spare_block == NULL) {
        mariadb_delivery_log_free(l);
        return NULL;
    }
    l->cfg.host = l->host;
    l->cfg.user = l->user;
    l->cfg.password = l->password;
    l->cfg.database = l->database;
    if (pthread_create(&l->writer_thread, NULL, writer_main, l) != 0) {
        mariadb_delivery_log_free(l);
        return NULL;
    }
    l->writer_started = true;
    return l;
}

/* Lets the writer commit what is queued (for up to FREE_FLUSH_MS), stops it, closes the
 * connections and frees l (NULL is fine). */
void mariadb_delivery_log_free(struct mariadb_delivery_log *l)
{
    if (l == NULL) {
        return;
    }
    if (l->writer_started) {
        if (log_flush(l, FREE_FLUSH_MS) != DELIVERY_LOG_OK) {
            char n[24];
            pthread_mutex_lock(&l->mu);
            snprintf(n, sizeof n, "%llu", (unsigned long long)(l->written - l->durable));
            pthread_mutex_unlock(&l->mu);
            log_write(LOG_ERROR,
                      "delivery log: sent marks not committed at exit (their emails "
                      "may be sent again after a restart)",
                      "marks", n, NULL);
        }
        pthread_mutex_lock(&l->mu);
        l->stop = true; /* the writer gives up on a failing batch now */
        l->writer_started = false;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->writer_thread, NULL);
    }
    if (l->fast != NULL) {
        l->fast->next = NULL;
    }
    struct mark *left[3] = {l->inflight, l->queued, l->fast};
    for (size_t i = 0; i < 3; i++) {
        while (left[i] != NULL) {
            struct mark *m = left[i];
            left[i] = m->next;
            mark_release_locked(l, m); /* no other thread is left */
        }
    }
    free(l->spare_block);
    conn_close(&l->caller);
    conn_close(&l->writer);
    conn_close(&l->direct);
    pthread_cond_destroy(&l->progress);
    pthread_cond_destroy(&l->wake);
    pthread_mutex_destroy(&l->mu);
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
