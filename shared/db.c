/* db: MariaDB/MySQL connections and versioned SQL migrations for the database adapters of
 * both services (MariaDB Connector/C).
 *
 * Connections (db_connect): the caller's connect/read/write timeouts, utf8mb4, session
 * time_zone '+00:00', strict sql_mode, innodb_lock_wait_timeout just under the read timeout
 * (a row lock wait surfaces as ER_LOCK_WAIT_TIMEOUT on a healthy connection, not as a lost
 * one), English error messages whatever the server's lc_messages (adapters read key names
 * out of them), CLIENT_FOUND_ROWS (an UPDATE reports matched rows, so "0 rows" means "no
 * such row", never "same values"), and no automatic reconnect (a silent reconnect would
 * drop the caller's prepared statements: adapters reconnect themselves).
 *
 * Migrations (db_migrations_apply): the versioned SQL files of a directory (V001__name.sql,
 * ...) are applied once each, in version order, recording version, file name, SHA-256 and
 * time in schema_migrations.
 *
 * File format (kept simple on purpose): a statement ends with ';' as the last non-blank
 * character of a line; lines whose first non-blank characters are "--" are comments and
 * are dropped. So no DELIMITER blocks, and a string literal must not end a line with ';'.
 * Text at the end of a file without a closing ';' is an error.
 *
 * The statements run through mysql_real_query: fixed text from our own files, never user
 * input. (The services' only other non-prepared SQL is push-email's direct `sent` mark,
 * whose values are escaped: see mariadb_delivery_log.c.) MariaDB and MySQL commit DDL
 * implicitly, so a file that fails halfway is not rolled back: write DDL that can run
 * again (IF NOT EXISTS) and keep one change per file.
 *
 * Concurrency: a named lock (GET_LOCK, 30 s) per database serialises concurrent starters,
 * which then see each other's records and apply each file once. */

#include "shared/db.h"

#include <dirent.h>
#include <errmsg.h>
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/config.h"
#include "shared/log.h"
#include "shared/signals.h"

/* ---------------------------------------------------------------- connections -- */

/* mysql_library_init is not thread-safe: it runs once, before the first mysql_init. */
static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_rc;

static void library_init(void)
{
    library_rc = mysql_library_init(0, NULL, NULL);
}

bool db_is_connection_error(unsigned mysql_errno_value)
{
    switch (mysql_errno_value) {
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
        return true;
    default:
        return false;
    }
}

bool db_is_transient_error(unsigned mysql_errno_value)
{
    switch (mysql_errno_value) {
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_LOCK_DEADLOCK:
    case ER_OPTION_PREVENTS_STATEMENT: /* --read-only during a failover */
    case ER_QUERY_INTERRUPTED:
    case ER_STATEMENT_TIMEOUT:
    case ER_CON_COUNT_ERROR:
    case ER_TOO_MANY_USER_CONNECTIONS:
        return true;
    default:
        return false;
    }
}

/* Runs fixed session setup text on a new connection (never user input). */
static int session_setup(MYSQL *db, unsigned io_timeout_s)
{
    char sql[256];
    unsigned lock_wait = io_timeout_s > 1 ? io_timeout_s - 1 : 1;
    /* The server gives up on a row lock before our read timeout fires, so a lock wait
     * surfaces as ER_LOCK_WAIT_TIMEOUT on a healthy connection instead of a lost one.
     * autocommit = 1: every write of both services is one statement that must be durable
     * when its OK comes back; a server configured with autocommit=0 (or an init_connect
     * that sets it) would otherwise leave them in transactions a reconnect rolls back.
     * lc_messages = 'en_US': adapters read the name of a duplicated key out of the error
     * text, which follows the server's language (a server set to de_DE would turn every
     * duplicate into a 500), and log lines are read by people who search for them. */
    int n = snprintf(sql, sizeof sql,
                     "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,"
                     "NO_ZERO_IN_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', "
                     "innodb_lock_wait_timeout = %u, autocommit = 1, lc_messages = 'en_US'",
                     lock_wait);
    if (n < 0 || (size_t)n >= sizeof sql) {
        return -1;
    }
    return mysql_real_query(db, sql, (unsigned long)n) == 0 ? 0 : -1;
}

/* Caller closes the result with mysql_close. NULL with errstr filled when the server
 * cannot be reached or refuses us. */
struct st_mysql *db_connect(const struct db_config *cfg, bool with_database, char *errstr,
                            size_t errlen)
{
    MYSQL *db = NULL;
    unsigned connect_timeout = cfg->connect_timeout_s > 0 ? cfg->connect_timeout_s : 5;
    unsigned io_timeout = cfg->io_timeout_s > 0 ? cfg->io_timeout_s : 10;
    my_bool no = 0;

    pthread_once(&library_once, library_init);
    if (library_rc != 0) {
        snprintf(errstr, errlen, "mysql_library_init failed");
        goto out;
    }
    db = mysql_init(NULL);
    if (db == NULL) {
        snprintf(errstr, errlen, "mysql_init: out of memory");
        goto out;
    }
    mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_options(db, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    mysql_options(db, MYSQL_OPT_RECONNECT, &no); /* a silent reconnect drops our statements */
    /* CLIENT_FOUND_ROWS: UPDATE reports matched rows, so "0 rows" means "no such id at
     * that version", never "same values". */
    if (mysql_real_connect(db, cfg->host, cfg->user, cfg->password,
                           with_database ? cfg->database : NULL, cfg->port, NULL,
                           CLIENT_FOUND_ROWS) == NULL) {
        snprintf(errstr, errlen, "connect to %s:%u: %s (%u)", cfg->host, (unsigned)cfg->port,
                 mysql_error(db), mysql_errno(db));
        mysql_close(db);
        db = NULL;
        goto out;
    }
    if (session_setup(db, io_timeout) != 0) {
        snprintf(errstr, errlen, "session setup: %s (%u)", mysql_error(db), mysql_errno(db));
        mysql_close(db);
        db = NULL;
        goto out;
    }
out:
    return db;
}

/* ---------------------------------------------------------------- migrations -- */

#define MIGRATION_FILE_MAX (1024 * 1024)
#define LOCK_TIMEOUT_S     30
#define CHECKSUM_HEX_LEN   (crypto_hash_sha256_BYTES * 2)

struct migration_file {
    unsigned version;
    char *name; /* file name; owned */
};

struct applied_row {
    unsigned version;
    char checksum[CHECKSUM_HEX_LEN + 1];
};

static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INT UNSIGNED NOT NULL PRIMARY KEY,"
    " name VARCHAR(255) NOT NULL,"
    " checksum CHAR(64) CHARACTER SET ascii NOT NULL,"
    " applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
    ") ENGINE = InnoDB DEFAULT CHARSET = utf8mb4";

bool db_name_valid(const char *s)
{
    size_t n = 0;
    if (s == NULL) {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++, n++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '$')) {
            return false;
        }
    }
    return n > 0 && n <= 64;
}

/* "V<digits>__<name>.sql" -> version. -1 when name is not of that shape. */
static int parse_file_name(const char *name, unsigned *version)
{
    size_t len = strlen(name);
    const char *p = name + 1;
    unsigned long v = 0;
    int digits = 0;

    if (name[0] != 'V' || len < 4 || strcmp(name + len - 4, ".sql") != 0) {
        return -1;
    }
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        v = v * 10 + (unsigned long)(*p - '0');
        if (digits >= 9) {
            return -1;
        }
    }
    if (digits == 0 || v == 0 || strncmp(p, "__", 2) != 0 || p + 2 >= name + len - 4) {
        return -1;
    }
    *version = (unsigned)v;
    return 0;
}

static int file_cmp(const void *a, const void *b)
{
    const struct migration_file *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static void files_free(struct migration_file *files, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        free(files[i].name);
    }
    free(files);
}

/* The migration files of dir sorted by version into *out (caller frees with files_free).
 * Files not ending in ".sql" are ignored; a ".sql" file with a bad name or a version used
 * twice is an error. */
static int list_files(const char *dir, struct migration_file **out, size_t *nout, char *errstr,
                      size_t errlen)
{
    DIR *d = NULL;
    struct migration_file *files = NULL;
    size_t n = 0, cap = 0;
    int rc = -1;
    struct dirent *e;

    d = opendir(dir);
    if (d == NULL) {
        snprintf(errstr, errlen, "migrations dir %s: %s", dir, strerror(errno));
        goto out;
    }
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        unsigned version;
        if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0) {
            continue;
        }
        if (parse_file_name(e->d_name, &version) != 0) {
            snprintf(errstr, errlen, "migration file %s: name is not V<number>__<name>.sql",
                     e->d_name);
            goto out;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct migration_file *nf = realloc(files, ncap * sizeof *nf);
            if (nf == NULL) {
                snprintf(errstr, errlen, "out of memory");
                goto out;
            }
            files = nf;
            cap = ncap;
        }
        files[n].version = version;
        files[n].name = strdup(e->d_name);
        if (files[n].name == NULL) {
            snprintf(errstr, errlen, "out of memory");
            goto out;
        }
        n++;
    }
    if (n > 0) {
        qsort(files, n, sizeof *files, file_cmp);
    }
    for (size_t i = 1; i < n; i++) {
        if (files[i].version == files[i - 1].version) {
            snprintf(errstr, errlen, "migration files %s and %s have the same version",
                     files[i - 1].name, files[i].name);
            goto out;
        }
    }
    *out = files;
    *nout = n;
    files = NULL;
    n = 0;
    rc = 0;
out:
    files_free(files, n);
    if (d != NULL) {
        closedir(d);
    }
    return rc;
}

/* Reads dir/name into a NUL-terminated buffer (caller frees). */
static char *read_file(const char *dir, const char *name, size_t *len, char *errstr, size_t errlen)
{
    char path[4096];
    char *buf = NULL;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) {
        snprintf(errstr, errlen, "migration path too long: %s", name);
        return NULL;
    }
    if (config_read_file(path, MIGRATION_FILE_MAX, &buf, len, errstr, errlen) != 0) {
        return NULL;
    }
    return buf;
}

static void checksum_hex(const char *data, size_t len, char out[CHECKSUM_HEX_LEN + 1])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, (const unsigned char *)data, len);
    sodium_bin2hex(out, CHECKSUM_HEX_LEN + 1, h, sizeof h);
}

/* Runs fixed SQL text and discards any result. */
static int run_sql(MYSQL *db, const char *sql, size_t len, const char *what, char *errstr,
                   size_t errlen)
{
    MYSQL_RES *res;

    if (mysql_real_query(db, sql, (unsigned long)len) != 0) {
        snprintf(errstr, errlen, "%s: %s (%u)", what, mysql_error(db), mysql_errno(db));
        return -1;
    }
    res = mysql_store_result(db);
    if (res != NULL) {
        mysql_free_result(res);
    } else if (mysql_field_count(db) != 0) {
        snprintf(errstr, errlen, "%s: %s (%u)", what, mysql_error(db), mysql_errno(db));
        return -1;
    }
    return 0;
}

/* Executes the statements of one file's text (format in the header comment). */
static int apply_text(MYSQL *db, const char *name, char *text, char *errstr, size_t errlen)
{
    char *stmt = NULL;
    size_t slen = 0;
    int rc = -1;
    char *line = text;
    char what[512];

    stmt = malloc(strlen(text) + 1);
    if (stmt == NULL) {
        snprintf(errstr, errlen, "out of memory");
        goto out;
    }
    while (*line != '\0') {
        char *nl = strchr(line, '\n');
        char *end = nl != NULL ? nl : line + strlen(line);
        char *next = nl != NULL ? nl + 1 : end;
        const char *start = line;

        while (start < end && (*start == ' ' || *start == '\t')) {
            start++;
        }
        while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) {
            end--;
        }
        if (end == start || (end - start >= 2 && start[0] == '-' && start[1] == '-')) {
            line = next;
            continue;
        }
        int last = end[-1] == ';';
        size_t n = (size_t)(end - line) - (size_t)last;
        memcpy(stmt + slen, line, n);
        slen += n;
        stmt[slen++] = '\n';
        if (last) {
            snprintf(what, sizeof what, "migration %s", name);
            if (run_sql(db, stmt, slen, what, errstr, errlen) != 0) {
                goto out;
            }
            slen = 0;
        }
        line = next;
    }
    if (slen > 0) {
        snprintf(errstr, errlen, "migration %s: last statement does not end with ';'", name);
        goto out;
    }
    rc = 0;
out:
    free(stmt);
    return rc;
}

/* SELECT <fn>(?, ...) with the lock name; *value = the integer answer, -1 for NULL. */
static int lock_call(MYSQL *db, const char *sql, const char *lock_name, long long *value,
                     char *errstr, size_t errlen)
{
    MYSQL_STMT *st = NULL;
    MYSQL_BIND param, result;
    unsigned long name_len = (unsigned long)strlen(lock_name);
    long long v = 0;
    my_bool is_null = 0;
    int rc = -1;

    st = mysql_stmt_init(db);
    if (st == NULL) {
        snprintf(errstr, errlen, "out of memory");
        goto out;
    }
    memset(&param, 0, sizeof param);
    param.buffer_type = MYSQL_TYPE_STRING;
    param.buffer = (void *)(uintptr_t)lock_name;
    param.buffer_length = name_len;
    param.length = &name_len;
    memset(&result, 0, sizeof result);
    result.buffer_type = MYSQL_TYPE_LONGLONG;
    result.buffer = &v;
    result.is_null = &is_null;
    if (mysql_stmt_prepare(st, sql, (unsigned long)strlen(sql)) != 0 ||
        mysql_stmt_bind_param(st, &param) != 0 || mysql_stmt_execute(st) != 0 ||
        mysql_stmt_bind_result(st, &result) != 0 || mysql_stmt_store_result(st) != 0 ||
        mysql_stmt_fetch(st) != 0) {
        snprintf(errstr, errlen, "%s: %s (%u)", sql, mysql_stmt_error(st), mysql_stmt_errno(st));
        goto out;
    }
    *value = is_null ? -1 : v;
    rc = 0;
out:
    if (st != NULL) {
        mysql_stmt_close(st);
    }
    return rc;
}

/* The applied versions and checksums (caller frees *out). */
static int read_applied(MYSQL *db, struct applied_row **out, size_t *nout, char *errstr,
                        size_t errlen)
{
    static const char sql[] = "SELECT version, checksum FROM schema_migrations ORDER BY version";
    MYSQL_RES *res = NULL;
    struct applied_row *rows = NULL;
    size_t n = 0;
    int rc = -1;
    MYSQL_ROW row;

    if (mysql_real_query(db, sql, sizeof sql - 1) != 0 || (res = mysql_store_result(db)) == NULL) {
        snprintf(errstr, errlen, "reading schema_migrations: %s (%u)", mysql_error(db),
                 mysql_errno(db));
        goto out;
    }
    rows = calloc((size_t)mysql_num_rows(res) + 1, sizeof *rows);
    if (rows == NULL) {
        snprintf(errstr, errlen, "out of memory");
        goto out;
    }
    while ((row = mysql_fetch_row(res)) != NULL) {
        if (row[0] == NULL || row[1] == NULL) {
            continue;
        }
        rows[n].version = (unsigned)strtoul(row[0], NULL, 10);
        snprintf(rows[n].checksum, sizeof rows[n].checksum, "%s", row[1]);
        n++;
    }
    *out = rows;
    *nout = n;
    rows = NULL;
    rc = 0;
out:
    free(rows);
    if (res != NULL) {
        mysql_free_result(res);
    }
    return rc;
}

static int record_applied(MYSQL *db, const struct migration_file *f, const char *checksum,
                          char *errstr, size_t errlen)
{
    static const char sql[] =
        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)";
    MYSQL_STMT *st = NULL;
    MYSQL_BIND b[3];
    unsigned version = f->version;
    unsigned long name_len = (unsigned long)strlen(f->name);
    unsigned long sum_len = (unsigned long)strlen(checksum);
    int rc = -1;

    memset(b, 0, sizeof b);
    b[0].buffer_type = MYSQL_TYPE_LONG;
    b[0].buffer = &version;
    b[0].is_unsigned = 1;
    b[1].buffer_type = MYSQL_TYPE_STRING;
    b[1].buffer = f->name;
    b[1].buffer_length = name_len;
    b[1].length = &name_len;
    b[2].buffer_type = MYSQL_TYPE_STRING;
    b[2].buffer = (void *)(uintptr_t)checksum;
    b[2].buffer_length = sum_len;
    b[2].length = &sum_len;
    st = mysql_stmt_init(db);
    if (st == NULL) {
        snprintf(errstr, errlen, "out of memory");
        goto out;
    }
    if (mysql_stmt_prepare(st, sql, sizeof sql - 1) != 0 || mysql_stmt_bind_param(st, b) != 0 ||
        mysql_stmt_execute(st) != 0) {
        snprintf(errstr, errlen, "recording migration %s: %s (%u)", f->name, mysql_stmt_error(st),
                 mysql_stmt_errno(st));
        goto out;
    }
    rc = 0;
out:
    if (st != NULL) {
        mysql_stmt_close(st);
    }
    return rc;
}

static const struct applied_row *find_applied(const struct applied_row *rows, size_t n,
                                              unsigned version)
{
    for (size_t i = 0; i < n; i++) {
        if (rows[i].version == version) {
            return &rows[i];
        }
    }
    return NULL;
}

int db_migrations_apply(const struct db_config *cfg, const char *dir, unsigned *applied,
                        char *errstr, size_t errlen)
{
    MYSQL *db = NULL;
    struct migration_file *files = NULL;
    size_t nfiles = 0;
    struct applied_row *done = NULL;
    size_t ndone = 0;
    char *text = NULL;
    int locked = 0;
    int rc = -1;
    unsigned count = 0;
    char sql[256];
    char lock_name[65];
    long long v;
    /* What a failure returns: -1 while the server may still come up or free itself, -2 for
     * what no retry can mend (our files, the name, a statement the server rejects). */
    int fail = DB_MIGRATIONS_PERMANENT;

    if (applied != NULL) {
        *applied = 0;
    }
    if (cfg->database == NULL || !db_name_valid(cfg->database)) {
        snprintf(errstr, errlen, "database name must be " DB_NAME_RULE);
        goto out;
    }
    if (sodium_init() < 0) {
        snprintf(errstr, errlen, "sodium_init failed");
        goto out;
    }
    if (list_files(dir, &files, &nfiles, errstr, errlen) != 0) {
        goto out;
    }
    fail = -1; /* from here on the server is involved */
    db = db_connect(cfg, false, errstr, errlen);
    if (db == NULL) {
        goto out;
    }
    /* The name was checked above, so it is safe between backticks. */
    snprintf(sql, sizeof sql,
             "CREATE DATABASE IF NOT EXISTS `%s` CHARACTER SET utf8mb4 COLLATE "
             "utf8mb4_unicode_ci",
             cfg->database);
    if (run_sql(db, sql, strlen(sql), "create database", errstr, errlen) != 0) {
        goto out;
    }
    if (mysql_select_db(db, cfg->database) != 0) {
        snprintf(errstr, errlen, "use %s: %s (%u)", cfg->database, mysql_error(db),
                 mysql_errno(db));
        goto out;
    }
    /* One lock per database (names are at most 64 characters; a clash of two long names
     * only serialises their migrations). */
    snprintf(lock_name, sizeof lock_name, "schema_migrations.%s", cfg->database);
    if (lock_call(db, "SELECT GET_LOCK(?, " /* seconds */ "30)", lock_name, &v, errstr, errlen) !=
        0) {
        goto out;
    }
    if (v != 1) {
        snprintf(errstr, errlen, "could not take lock %s within %d s", lock_name, LOCK_TIMEOUT_S);
        goto out;
    }
    locked = 1;
    if (run_sql(db, create_table_sql, sizeof create_table_sql - 1, "create schema_migrations",
                errstr, errlen) != 0 ||
        read_applied(db, &done, &ndone, errstr, errlen) != 0) {
        goto out;
    }
    for (size_t i = 0; i < nfiles; i++) {
        const struct migration_file *f = &files[i];
        const struct applied_row *a = find_applied(done, ndone, f->version);
        char sum[CHECKSUM_HEX_LEN + 1];
        size_t len = 0;

        text = read_file(dir, f->name, &len, errstr, errlen);
        if (text == NULL) {
            fail = DB_MIGRATIONS_PERMANENT;
            goto out;
        }
        checksum_hex(text, len, sum);
        if (a != NULL) {
            if (strcmp(a->checksum, sum) != 0) {
                snprintf(errstr, errlen,
                         "migration %s changed after it was applied (checksum %s, recorded %s)",
                         f->name, sum, a->checksum);
                fail = DB_MIGRATIONS_PERMANENT;
                goto out;
            }
        } else {
            if (apply_text(db, f->name, text, errstr, errlen) != 0) {
                /* Our own parse errors leave errno 0; a lost connection, a lock wait or
                 * a privilege not granted yet (operators that grant step by step) may
                 * pass, a statement the server refuses will not. */
                unsigned e = mysql_errno(db);
                bool privilege =
                    e == ER_DBACCESS_DENIED_ERROR || e == ER_TABLEACCESS_DENIED_ERROR ||
                    e == ER_COLUMNACCESS_DENIED_ERROR || e == ER_SPECIFIC_ACCESS_DENIED_ERROR;

                if (!db_is_connection_error(e) && !db_is_transient_error(e) && !privilege)
                    fail = DB_MIGRATIONS_PERMANENT;
                goto out;
            }
            if (record_applied(db, f, sum, errstr, errlen) != 0) {
                goto out;
            }
            count++;
            log_write(LOG_INFO, "migration applied", "file", f->name, "database", cfg->database,
                      NULL);
        }
        free(text);
        text = NULL;
    }
    for (size_t i = 0; i < ndone; i++) {
        int known = 0;
        for (size_t j = 0; j < nfiles && !known; j++) {
            known = files[j].version == done[i].version;
        }
        if (!known) {
            char num[16];
            snprintf(num, sizeof num, "%u", done[i].version);
            log_write(LOG_WARN, "applied migration has no file (newer schema?)", "version", num,
                      NULL);
        }
    }
    if (applied != NULL) {
        *applied = count;
    }
    rc = 0;
out:
    if (rc != 0) {
        rc = fail;
    }
    free(text);
    if (locked) {
        char ignored[256];
        lock_call(db, "SELECT RELEASE_LOCK(?)", lock_name, &v, ignored, sizeof ignored);
    }
    if (db != NULL) {
        mysql_close(db);
    }
    free(done);
    files_free(files, nfiles);
    return rc;
}

int db_migrations_apply_waiting(const struct db_config *cfg, const char *dir, unsigned wait_s,
                                bool (*stop)(void), char *errstr, size_t errlen)
{
    unsigned applied = 0;
    time_t deadline = time(NULL) + (time_t)wait_s;

    for (;;) {
        int rc = db_migrations_apply(cfg, dir, &applied, errstr, errlen);

        if (rc == 0) {
            char n[16];
            snprintf(n, sizeof n, "%u", applied);
            log_write(LOG_INFO, "migrations applied", "applied", n, "dir", dir, "database",
                      cfg->database, NULL);
            return 0;
        }
        if (rc == DB_MIGRATIONS_PERMANENT) {
            log_write(LOG_ERROR, "migrations failed; waiting cannot help", "error", errstr, NULL);
            return rc;
        }
        if (stop != NULL && stop()) {
            log_write(LOG_INFO, "stop requested while waiting for the database", NULL);
            return DB_MIGRATIONS_STOPPED;
        }
        if (time(NULL) >= deadline) {
            log_write(LOG_ERROR, "migrations failed", "error", errstr, NULL);
            return -1;
        }
        log_write(LOG_WARN, "database not ready for migrations; retrying", "error", errstr, NULL);
        signals_wait(1000);
    }
}
