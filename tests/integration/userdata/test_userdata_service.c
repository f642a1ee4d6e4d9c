/* Service-level integration tests: the REAL `userdata` binary (spawned with fork/exec)
 * against the REAL private test MariaDB (scripts/lib/test-mariadb.sh), driven over HTTP
 * with libcurl. The path of the binary is argv[1]; TEST_DB_HOST/PORT/USER/PASSWORD/CTL
 * come from `eval "$(scripts/lib/test-mariadb.sh env)"` and are required.
 *
 * Group "service": one database userdata_svc_<pid>, one `userdata serve` for every test,
 * stopped by SIGTERM in the last test (exit 0 within 10 s) and the database dropped.
 * Group "config": invalid configurations must exit 2 with a one-line message. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <mysql.h>

extern char **environ;

#define TEST_SECRET    "svc-test-secret-0123456789abcdefghijklmn" /* 40 characters */
#define READY_WAIT_S   30
#define STOP_WAIT_S    10
#define N_PAGE_USERS   1000
#define PAGE_LIMIT     97
#define N_RACERS       100
#define N_WORKERS      4
#define MAX_REQUEST_S  10.0
#define RECOVERY_MAX_S 30.0

/* ------------------------------------------------------------------------------------ */
/* Global state                                                                          */

struct db_env {
    const char *host, *port, *user, *password, *ctl;
};

struct service {
    pid_t pid;
    uint16_t port;
    char base[64];
    char db_name[64];
    char log_path[512];
    char token_rw[4096];
    char token_ro[4096];
    int lock_fd;
};

static const char *g_bin;
static struct db_env g_db;
static struct service g_svc;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ------------------------------------------------------------------------------------ */
/* Environment for the child processes                                                   */

struct envb {
    char **v; /* NULL-terminated, each entry malloc'd */
    size_t n;
};

static char *join3(const char *a, const char *b, const char *c)
{
    size_t len = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(len);
    assert_non_null(s);
    snprintf(s, len, "%s%s%s", a, b, c);
    return s;
}

/* The test's own environment without any USERDATA_* variable. */
static void env_init(struct envb *e)
{
    size_t total = 0;
    while (environ[total] != NULL)
        total++;
    e->v = calloc(total + 64, sizeof *e->v);
    assert_non_null(e->v);
    e->n = 0;
    for (size_t i = 0; i < total; i++) {
        if (strncmp(environ[i], "USERDATA_", 9) == 0)
            continue;
        e->v[e->n] = strdup(environ[i]);
        assert_non_null(e->v[e->n]);
        e->n++;
    }
}

/* Sets name=value (value NULL: removes name). */
static void env_set(struct envb *e, const char *name, const char *value)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], name, nl) == 0 && e->v[i][nl] == '=') {
            free(e->v[i]);
            if (value == NULL) {
                e->v[i] = e->v[e->n - 1];
                e->v[e->n - 1] = NULL;
                e->n--;
            } else {
                e->v[i] = join3(name, "=", value);
            }
            return;
        }
    }
    if (value != NULL) {
        e->v[e->n++] = join3(name, "=", value);
        e->v[e->n] = NULL;
    }
}

static void env_free(struct envb *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
    e->v = NULL;
    e->n = 0;
}

/* Everything `userdata serve` needs for this test run. */
static void env_service(struct envb *e, uint16_t port, const char *db_name)
{
    char p[16];
    env_init(e);
    snprintf(p, sizeof p, "%u", port);
    env_set(e, "USERDATA_PORT", p);
    env_set(e, "USERDATA_LISTEN_ADDR", "127.0.0.1");
    env_set(e, "USERDATA_DB_HOST", g_db.host);
    env_set(e, "USERDATA_DB_PORT", g_db.port);
    env_set(e, "USERDATA_DB_USER", g_db.user);
    env_set(e, "USERDATA_DB_PASSWORD", g_db.password);
    env_set(e, "USERDATA_DB_NAME", db_name);
    env_set(e, "USERDATA_JWT_SECRET", TEST_SECRET);
    env_set(e, "USERDATA_THREADS", "8");
    env_set(e, "USERDATA_DB_CONNECT_TIMEOUT_S", "1");
    env_set(e, "USERDATA_DB_IO_TIMEOUT_S", "2");
    env_set(e, "USERDATA_DB_WAIT_S", "10");
    env_set(e, "USERDATA_PWHASH_MEMLIMIT_KIB", "8192");
    env_set(e, "USERDATA_PWHASH_OPSLIMIT", "1");
    env_set(e, "USERDATA_LOG_LEVEL", "warn");
}

/* ------------------------------------------------------------------------------------ */
/* Processes                                                                             */

/* fork/exec argv with envp; stdout and stderr to the given fds, stdin from /dev/null. */
static pid_t spawn(char *const argv[], char *const envp[], int out_fd, int err_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a killed (timed out) test */
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        execve(argv[0], argv, envp);
        _exit(127);
    }
    return pid;
}

/* Waits up to timeout_s for pid; true and *status when it exited. */
static bool wait_exit(pid_t pid, double timeout_s, int *status)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
        if (now_s() >= deadline)
            return false;
        sleep_ms(20);
    }
}

static size_t read_all(FILE *f, char *out, size_t outlen)
{
    size_t n;
    rewind(f);
    n = fread(out, 1, outlen - 1, f);
    out[n] = '\0';
    return n;
}

/* Runs argv to completion (killed after timeout_s), capturing stdout and stderr.
 * Returns the wait status, or -1 when it did not finish in time. */
static int run_capture(char *const argv[], char *const envp[], double timeout_s, char *out,
                       size_t outlen, char *err, size_t errlen)
{
    FILE *fo = tmpfile();
    FILE *fe = tmpfile();
    int status = -1;

    assert_non_null(fo);
    assert_non_null(fe);
    pid_t pid = spawn(argv, envp, fileno(fo), fileno(fe));
    assert_true(pid > 0);
    if (!wait_exit(pid, timeout_s, &status)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        status = -1;
    }
    read_all(fo, out, outlen);
    read_all(fe, err, errlen);
    fclose(fo);
    fclose(fe);
    return status;
}

/* TEST_DB_CTL stop|start; fails the test when it fails. */
static void db_ctl(const char *what)
{
    char out[4096], err[4096];
    char *argv[] = {(char *)g_db.ctl, (char *)what, NULL};
    int st = run_capture(argv, environ, 120, out, sizeof out, err, sizeof err);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        print_error("%s %s failed (status %d)\nstdout: %s\nstderr: %s\n", g_db.ctl, what, st, out,
                    err);
        fail();
    }
}

static uint16_t free_port(void)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* The last lines of the service's log, for failure messages. */
static void print_log_tail(void)
{
    char buf[8192];
    FILE *f = fopen(g_svc.log_path, "r");
    if (f == NULL) {
        print_error("(no log at %s)\n", g_svc.log_path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    print_error("--- tail of %s ---\n%s\n---\n", g_svc.log_path, buf);
}

/* The whole log file (malloc'd). */
static char *read_log(void)
{
    FILE *f = fopen(g_svc.log_path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    assert_true(size >= 0);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    size_t n = fread(buf, 1, (size_t)size, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------------------------ */
/* HTTP client                                                                           */

struct reply {
    CURLcode rc;
    long status;
    char *body;
    size_t len;
    char etag[64];
    char location[256];
    char retry_after[32];
    char content_type[128];
    char www_authenticate[64];
    char accept_patch[64];
    double secs;
    cJSON *json;
};

struct req {
    const char *method;
    const char *path; /* from the base URL on */
    const char *token;
    const char *ctype;
    const char *if_match;
    const char *body;
    size_t len;
    bool chunked;
};

/* A request handle with its own state, reusable in a thread or a multi handle. */
struct call {
    CURL *c;
    struct curl_slist *h;
    struct reply r;
    const char *src; /* chunked upload source */
    size_t src_len, src_off;
    char url[512];
    char auth[4200];
    char ifm[128];
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t len = size * n;
    char *b = realloc(r->body, r->len + len + 1);
    if (b == NULL)
        return 0;
    memcpy(b + r->len, p, len);
    r->len += len;
    b[r->len] = '\0';
    r->body = b;
    return len;
}

static void header_copy(char *dst, size_t dstlen, const char *v, size_t vlen)
{
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (vlen >= dstlen)
        vlen = dstlen - 1;
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t len = size * n;
    static const struct {
        const char *name;
        size_t off, cap;
    } wanted[] = {
        {"ETag", offsetof(struct reply, etag), sizeof((struct reply *)0)->etag},
        {"Location", offsetof(struct reply, location), sizeof((struct reply *)0)->location},
        {"Retry-After", offsetof(struct reply, retry_after),
         sizeof((struct reply *)0)->retry_after},
        {"Content-Type", offsetof(struct reply, content_type),
         sizeof((struct reply *)0)->content_type},
        {"WWW-Authenticate", offsetof(struct reply, www_authenticate),
         sizeof((struct reply *)0)->www_authenticate},
        {"Accept-Patch", offsetof(struct reply, accept_patch),
         sizeof((struct reply *)0)->accept_patch},
    };
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
        size_t nl = strlen(wanted[i].name);
        if (len > nl && strncasecmp(p, wanted[i].name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            size_t vlen = len - nl - 1;
            while (vlen > 0 && *v == ' ') {
                v++;
                vlen--;
            }
            header_copy((char *)r + wanted[i].off, wanted[i].cap, v, vlen);
        }
    }
    return len;
}

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct call *k = ud;
    size_t room = size * n;
    size_t left = k->src_len - k->src_off;
    size_t take = left < room ? left : room;
    memcpy(buf, k->src + k->src_off, take);
    k->src_off += take;
    return take;
}

static void reply_free(struct reply *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

static void call_reset(struct call *k)
{
    reply_free(&k->r);
    curl_slist_free_all(k->h);
    k->h = NULL;
}

/* Sets up k->c (created when NULL) for q. Does not perform. */
static void call_setup(struct call *k, const struct req *q)
{
    if (k->c == NULL)
        k->c = curl_easy_init();
    else
        curl_easy_reset(k->c);
    call_reset(k);
    CURL *c = k->c;
    snprintf(k->url, sizeof k->url, "%s%s", g_svc.base, q->path);
    curl_easy_setopt(c, CURLOPT_URL, k->url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &k->r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &k->r);
    k->h = curl_slist_append(k->h, "Expect:");
    if (q->token != NULL) {
        snprintf(k->auth, sizeof k->auth, "Authorization: Bearer %s", q->token);
        k->h = curl_slist_append(k->h, k->auth);
    }
    if (q->if_match != NULL) {
        snprintf(k->ifm, sizeof k->ifm, "If-Match: %s", q->if_match);
        k->h = curl_slist_append(k->h, k->ifm);
    }
    if (q->ctype != NULL) {
        char ct[160];
        snprintf(ct, sizeof ct, "Content-Type: %s", q->ctype);
        k->h = curl_slist_append(k->h, ct);
    }
    if (q->body != NULL && q->chunked) {
        k->src = q->body;
        k->src_len = q->len;
        k->src_off = 0;
        k->h = curl_slist_append(k->h, "Transfer-Encoding: chunked");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, k);
    } else if (q->body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, q->body);
    }
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, q->method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, k->h);
}

/* After a transfer: status, timing and the JSON body (when it is JSON). */
static void call_finish(struct call *k, CURLcode rc)
{
    double t = 0;
    k->r.rc = rc;
    curl_easy_getinfo(k->c, CURLINFO_RESPONSE_CODE, &k->r.status);
    curl_easy_getinfo(k->c, CURLINFO_TOTAL_TIME, &t);
    k->r.secs = t;
    if (k->r.body != NULL && (strncmp(k->r.content_type, "application/json", 16) == 0 ||
                              strncmp(k->r.content_type, "application/problem+json", 24) == 0))
        k->r.json = cJSON_ParseWithLength(k->r.body, k->r.len);
}

static void call_free(struct call *k)
{
    call_reset(k);
    if (k->c != NULL)
        curl_easy_cleanup(k->c);
    k->c = NULL;
}

/* One request on a fresh handle; the reply is moved to *r (reply_free it). */
static void http(const struct req *q, struct reply *r)
{
    struct call k;
    memset(&k, 0, sizeof k);
    call_setup(&k, q);
    assert_non_null(k.c);
    call_finish(&k, curl_easy_perform(k.c));
    *r = k.r;
    memset(&k.r, 0, sizeof k.r);
    call_free(&k);
}

/* Shorthands. */
static void http_get(const char *path, const char *token, struct reply *r)
{
    struct req q = {.method = "GET", .path = path, .token = token};
    http(&q, r);
}

static void http_json(const char *method, const char *path, const char *token, const char *ctype,
                      const char *if_match, const char *body, struct reply *r)
{
    struct req q = {.method = method,
                    .path = path,
                    .token = token,
                    .ctype = ctype,
                    .if_match = if_match,
                    .body = body,
                    .len = body ? strlen(body) : 0};
    http(&q, r);
}

/* Fails with the reply's details unless its status is `expected`. */
static void expect_status(const struct reply *r, long expected, const char *what)
{
    if (r->rc != CURLE_OK || r->status != expected) {
        print_error("%s: expected HTTP %ld, got %ld (curl: %s)\nbody: %.*s\n", what, expected,
                    r->status, curl_easy_strerror(r->rc), (int)(r->len > 2000 ? 2000 : r->len),
                    r->body ? r->body : "");
        fail();
    }
}

static void expect_problem(const struct reply *r, long status, const char *what)
{
    expect_status(r, status, what);
    assert_string_equal(r->content_type, "application/problem+json");
    assert_non_null(r->json);
    cJSON *s = cJSON_GetObjectItemCaseSensitive(r->json, "status");
    assert_true(cJSON_IsNumber(s));
    assert_int_equal((long)s->valuedouble, status);
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Asserts o.key is exactly the string `want` (byte for byte), or JSON null when want is NULL. */
static void expect_field(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (want == NULL) {
        if (!cJSON_IsNull(v)) {
            print_error("field %s: expected null, got %s\n", key,
                        cJSON_IsString(v) ? v->valuestring : "(not a string/absent)");
            fail();
        }
        return;
    }
    if (!cJSON_IsString(v) || strlen(v->valuestring) != strlen(want) ||
        memcmp(v->valuestring, want, strlen(want)) != 0) {
        print_error("field %s: expected \"%s\", got \"%s\"\n", key, want,
                    cJSON_IsString(v) ? v->valuestring : "(not a string/absent)");
        fail();
    }
}

static long jversion(const cJSON *o)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "version");
    assert_true(cJSON_IsNumber(v));
    return (long)v->valuedouble;
}

/* A user body built with cJSON (so every value is escaped correctly); NULL values are
 * left out; the string "\x01null" stands for JSON null. Returns malloc'd text. */
static char *user_body(const char *const kv[])
{
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    for (size_t i = 0; kv[i] != NULL; i += 2) {
        if (kv[i + 1] == NULL)
            continue;
        if (strcmp(kv[i + 1], "\x01null") == 0)
            cJSON_AddNullToObject(o, kv[i]);
        else
            cJSON_AddStringToObject(o, kv[i], kv[i + 1]);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_non_null(s);
    return s;
}

/* POSTs a minimal user; returns 201's id in id_out (37 bytes). */
static void create_user(const char *username, const char *email, const char *full_name,
                        char id_out[37])
{
    const char *kv[] = {"username",      username,    "email",   email, "password",
                        "pass-word-123", "full_name", full_name, NULL};
    char *body = user_body(kv);
    struct reply r;
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL, body, &r);
    free(body);
    expect_status(&r, 201, "create user");
    const char *id = jstr(r.json, "id");
    assert_non_null(id);
    assert_int_equal(strlen(id), 36);
    snprintf(id_out, 37, "%s", id);
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* Direct database access (Connector/C) for counts and literal checks                   */

static MYSQL *db_open(const char *db_name)
{
    MYSQL *m = mysql_init(NULL);
    unsigned timeout = 5;
    assert_non_null(m);
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(m, g_db.host, g_db.user, g_db.password, db_name,
                           (unsigned)atoi(g_db.port), NULL, 0) == NULL) {
        print_error("cannot connect to %s:%s as %s: %s\n", g_db.host, g_db.port, g_db.user,
                    mysql_error(m));
        mysql_close(m);
        fail();
    }
    return m;
}

/* Runs sql on database db_name (NULL: none) and returns its whole result; *m is the open
 * connection (close it after mysql_free_result). Fails the test on any error. */
static MYSQL_RES *db_result(const char *db_name, const char *sql, MYSQL **m)
{
    *m = db_open(db_name);
    if (mysql_query(*m, sql) != 0) {
        print_error("%s: %s\n", sql, mysql_error(*m));
        mysql_close(*m);
        fail();
    }
    MYSQL_RES *res = mysql_store_result(*m);
    assert_non_null(res);
    return res;
}

/* Runs a query returning one row; copies up to `ncols` columns into cols (NULL -> ""). */
static bool db_row(const char *sql, size_t ncols, char cols[][1024])
{
    MYSQL *m;
    bool found = false;
    MYSQL_RES *res = db_result(g_svc.db_name, sql, &m);
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row != NULL) {
        unsigned long *lens = mysql_fetch_lengths(res);
        assert_true(mysql_num_fields(res) >= ncols);
        for (size_t i = 0; i < ncols; i++) {
            size_t n = row[i] ? (size_t)lens[i] : 0;
            assert_true(n < 1024);
            if (n > 0)
                memcpy(cols[i], row[i], n);
            cols[i][n] = '\0';
        }
        found = true;
    }
    mysql_free_result(res);
    mysql_close(m);
    return found;
}

static long db_count_users(void)
{
    char col[1][1024];
    assert_true(db_row("SELECT COUNT(*) FROM users", 1, col));
    return atol(col[0]);
}

static void db_drop(const char *db_name)
{
    char sql[160];
    MYSQL *m = mysql_init(NULL);
    unsigned timeout = 5;
    if (m == NULL)
        return;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (mysql_real_connect(m, g_db.host, g_db.user, g_db.password, NULL, (unsigned)atoi(g_db.port),
                           NULL, 0) == NULL) {
        fprintf(stderr, "drop %s: cannot connect: %s\n", db_name, mysql_error(m));
    } else {
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS `%s`", db_name);
        if (mysql_query(m, sql) != 0)
            fprintf(stderr, "%s: %s\n", sql, mysql_error(m));
    }
    mysql_close(m);
}

/* ------------------------------------------------------------------------------------ */
/* The service: start, token, stop                                                       */

static bool mint_token(const char *scope, char *out, size_t outlen)
{
    struct envb e;
    char err[1024];
    char *argv[] = {(char *)g_bin, "token", "--scope", (char *)scope, "--ttl", "3600", NULL};
    env_service(&e, g_svc.port, g_svc.db_name);
    int st = run_capture(argv, e.v, 10, out, outlen, err, sizeof err);
    env_free(&e);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "userdata token --scope '%s' failed (%d): %s\n", scope, st, err);
        return false;
    }
    out[strcspn(out, "\r\n")] = '\0';
    return strlen(out) > 20;
}

/* This group stops and starts the shared test database. RUN_SERIAL only orders tests of
 * one ctest run, so concurrent runs (another build dir, another engineer) also take an
 * exclusive lock next to the database's state: <TEST_DB_DIR or repo/.cache/test-mariadb>/
 * service-tests.lock. Returns the fd, or -1 after waiting too long. */
static int db_lock(double wait_s)
{
    char path[PATH_MAX + 64];
    const char *dir = getenv("TEST_DB_DIR");
    char real[PATH_MAX];
    int fd = -1;

    if (dir != NULL && dir[0] != '\0') {
        snprintf(path, sizeof path, "%s/service-tests.lock", dir);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    } else if (realpath(g_db.ctl, real) != NULL) {
        /* <repo>/scripts/lib/test-mariadb.sh -> <repo>/.cache/test-mariadb */
        for (int up = 0; up < 3; up++) {
            char *slash = strrchr(real, '/');
            if (slash != NULL)
                *slash = '\0';
        }
        snprintf(path, sizeof path, "%s/.cache/test-mariadb/service-tests.lock", real);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        snprintf(path, sizeof path, "/tmp/test-mariadb-%s.service-tests.lock", g_db.port);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        fprintf(stderr, "cannot open a lock file (%s): %s\n", path, strerror(errno));
        return -1;
    }
    double deadline = now_s() + wait_s;
    bool told = false;
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (now_s() > deadline) {
            fprintf(stderr, "another run holds %s for more than %.0f s\n", path, wait_s);
            close(fd);
            return -1;
        }
        if (!told)
            printf("waiting for %s (another service test run uses the database)\n", path);
        told = true;
        sleep_ms(200);
    }
    return fd;
}

static int service_setup_inner(void **state)
{
    struct envb e;
    (void)state;

    memset(&g_svc, 0, sizeof g_svc);
    g_svc.lock_fd = db_lock(300);
    if (g_svc.lock_fd < 0)
        return -1;
    snprintf(g_svc.db_name, sizeof g_svc.db_name, "userdata_svc_%ld", (long)getpid());
    g_svc.port = free_port();
    snprintf(g_svc.base, sizeof g_svc.base, "http://127.0.0.1:%u", g_svc.port);
    char cwd[400];
    if (getcwd(cwd, sizeof cwd) == NULL)
        snprintf(cwd, sizeof cwd, ".");
    snprintf(g_svc.log_path, sizeof g_svc.log_path, "%s/%s.log", cwd, g_svc.db_name);
    db_drop(g_svc.db_name); /* leftovers of a crashed run with the same pid */

    int log_fd = open(g_svc.log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log_fd < 0) {
        fprintf(stderr, "cannot open %s: %s\n", g_svc.log_path, strerror(errno));
        return -1;
    }
    char *argv[] = {(char *)g_bin, "serve", NULL};
    env_service(&e, g_svc.port, g_svc.db_name);
    g_svc.pid = spawn(argv, e.v, log_fd, log_fd);
    env_free(&e);
    close(log_fd);
    if (g_svc.pid <= 0) {
        fprintf(stderr, "fork failed: %s\n", strerror(errno));
        return -1;
    }

    /* Ready: /readyz 200 within READY_WAIT_S. */
    double deadline = now_s() + READY_WAIT_S;
    long last = 0;
    for (;;) {
        int st;
        if (waitpid(g_svc.pid, &st, WNOHANG) == g_svc.pid) {
            fprintf(stderr, "userdata serve exited during start (status %d)\n", st);
            g_svc.pid = 0;
            print_log_tail();
            return -1;
        }
        struct reply r;
        http_get("/readyz", NULL, &r);
        last = r.status;
        reply_free(&r);
        if (last == 200)
            break;
        if (now_s() > deadline) {
            fprintf(stderr, "userdata not ready within %d s (last /readyz: %ld)\n", READY_WAIT_S,
                    last);
            print_log_tail();
            return -1;
        }
        sleep_ms(100);
    }
    if (!mint_token("users:read users:write", g_svc.token_rw, sizeof g_svc.token_rw) ||
        !mint_token("users:read", g_svc.token_ro, sizeof g_svc.token_ro))
        return -1;
    printf("userdata pid %ld on %s, database %s, log %s\n", (long)g_svc.pid, g_svc.base,
           g_svc.db_name, g_svc.log_path);
    return 0;
}

static int service_teardown(void **state)
{
    (void)state;
    if (g_svc.pid > 0) {
        kill(g_svc.pid, SIGKILL);
        waitpid(g_svc.pid, NULL, 0);
        g_svc.pid = 0;
    }
    db_drop(g_svc.db_name);
    if (g_svc.lock_fd >= 0)
        close(g_svc.lock_fd); /* releases the lock */
    g_svc.lock_fd = -1;
    return 0;
}

static int service_setup(void **state)
{
    if (service_setup_inner(state) == 0)
        return 0;
    service_teardown(state); /* cmocka runs no group teardown after a failed setup */
    return -1;
}

static void expect_service_alive(void)
{
    int st;
    assert_true(g_svc.pid > 0);
    if (waitpid(g_svc.pid, &st, WNOHANG) == g_svc.pid) {
        print_error("userdata (pid %ld) died: status %d\n", (long)g_svc.pid, st);
        g_svc.pid = 0;
        print_log_tail();
        fail();
    }
}

/* The password hash and the passwords the tests used never reach the log. */
static void expect_log_clean(void)
{
    char *log = read_log();
    static const char *const secrets[] = {"argon2", "pass-word-123", "correct horse",
                                          "another secret", TEST_SECRET};
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        if (strstr(log, secrets[i]) != NULL) {
            print_error("the service log %s contains \"%s\"\n", g_svc.log_path, secrets[i]);
            free(log);
            fail();
        }
    }
    free(log);
}

/* ------------------------------------------------------------------------------------ */
/* 1. CRUD round trip                                                                    */

static void expect_no_secret(const struct reply *r)
{
    assert_non_null(r->body);
    assert_null(strstr(r->body, "argon2"));
    assert_null(strstr(r->body, "password_hash"));
    assert_null(strstr(r->body, "\"password\""));
    assert_null(strstr(r->body, "correct horse"));
    assert_null(strstr(r->body, "another secret"));
}

static void test_crud_round_trip(void **state)
{
    (void)state;
    static const char full[] = "Zo\xc3\xab \xc3\x85ngstr\xc3\xb6m \xf0\x9f\x98\x80 "
                               "\xe6\x9d\x8e\xe5\xb0\x8f\xe9\xbe\x8d \xe2\x80\x94 \xc3\x91"
                               "and\xc3\xba";
    static const char addr[] = "\xe6\x9d\xb1\xe4\xba\xac\xe9\x83\xbd 1-1, S\xc3\xa3o Paulo, "
                               "Stra\xc3\x9f"
                               "e 5 \xf0\x9f\x8f\xa0 \xed\x95\x9c\xea\xb8\x80";
    static const char full2[] = "Ren\xc3\xa9"
                                "e \xf0\x9f\x8e\x89";
    static const char addr2[] = "Rua A\xc3\xa7"
                                "a\xc3\xad 42 \xe2\x80\x94 3\xc2\xba andar";
    char path[64], id[37], pc1[64];
    struct reply r, g;

    expect_service_alive();
    const char *kv[] = {"username",
                        "crud.user",
                        "email",
                        "crud.user@example.org",
                        "password",
                        "correct horse battery staple",
                        "full_name",
                        full,
                        "address",
                        addr,
                        "date_of_birth",
                        "1990-02-28",
                        "locale",
                        "pt-BR",
                        NULL};
    char *body = user_body(kv);
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL, body, &r);
    free(body);
    expect_status(&r, 201, "POST");
    assert_string_equal(r.content_type, "application/json");
    assert_string_equal(r.etag, "\"1\"");
    assert_non_null(r.json);
    snprintf(id, sizeof id, "%s", jstr(r.json, "id") ? jstr(r.json, "id") : "");
    assert_int_equal(strlen(id), 36);
    snprintf(path, sizeof path, "/api/v1/users/%s", id);
    assert_string_equal(r.location, path);
    expect_field(r.json, "username", "crud.user");
    expect_field(r.json, "email", "crud.user@example.org");
    expect_field(r.json, "full_name", full);
    expect_field(r.json, "address", addr);
    expect_field(r.json, "date_of_birth", "1990-02-28");
    expect_field(r.json, "locale", "pt-BR");
    expect_field(r.json, "status", "UNCONFIRMED");
    assert_int_equal(jversion(r.json), 1);
    assert_non_null(jstr(r.json, "password_changed_at"));
    snprintf(pc1, sizeof pc1, "%s", jstr(r.json, "password_changed_at"));
    /* The raw bytes, not only cJSON's view of them. */
    assert_non_null(strstr(r.body, full));
    assert_non_null(strstr(r.body, addr));
    expect_no_secret(&r);

    /* GET: the same representation, byte for byte. */
    http_get(path, g_svc.token_ro, &g);
    expect_status(&g, 200, "GET after POST");
    assert_string_equal(g.etag, "\"1\"");
    assert_int_equal(g.len, r.len);
    assert_memory_equal(g.body, r.body, r.len);
    reply_free(&g);
    reply_free(&r);

    /* PUT: full replace; absent optional fields are cleared, the password is kept. */
    const char *kv2[] = {"username",  "crud.user2", "email",  "crud.user2@example.org",
                         "full_name", full2,        "locale", "es",
                         "status",    "CONFIRMED",  NULL};
    body = user_body(kv2);
    http_json("PUT", path, g_svc.token_rw, "application/json", "\"1\"", body, &r);
    expect_status(&r, 200, "PUT");
    assert_string_equal(r.etag, "\"2\"");
    expect_field(r.json, "id", id);
    expect_field(r.json, "username", "crud.user2");
    expect_field(r.json, "email", "crud.user2@example.org");
    expect_field(r.json, "full_name", full2);
    expect_field(r.json, "address", NULL);
    expect_field(r.json, "date_of_birth", NULL);
    expect_field(r.json, "locale", "es");
    expect_field(r.json, "status", "CONFIRMED");
    expect_field(r.json, "password_changed_at", pc1);
    assert_int_equal(jversion(r.json), 2);
    expect_no_secret(&r);
    reply_free(&r);
    /* The same PUT pinned to the old version: 412, nothing changes. */
    http_json("PUT", path, g_svc.token_rw, "application/json", "\"1\"", body, &r);
    free(body);
    expect_problem(&r, 412, "stale PUT");
    reply_free(&r);

    /* PATCH (RFC 7396): null clears, absent keeps. */
    const char *kv3[] = {"full_name", "\x01null", "address", addr2, NULL};
    body = user_body(kv3);
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", "\"2\"", body, &r);
    free(body);
    expect_status(&r, 200, "PATCH");
    assert_string_equal(r.etag, "\"3\"");
    expect_field(r.json, "full_name", NULL);
    expect_field(r.json, "address", addr2);
    expect_field(r.json, "username", "crud.user2");
    expect_field(r.json, "email", "crud.user2@example.org");
    expect_field(r.json, "locale", "es");
    expect_field(r.json, "status", "CONFIRMED");
    expect_field(r.json, "password_changed_at", pc1);
    assert_int_equal(jversion(r.json), 3);
    reply_free(&r);

    /* PATCH the password: write-only, password_changed_at moves forward. */
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL,
              "{\"password\":\"another secret pass\"}", &r);
    expect_status(&r, 200, "PATCH password");
    assert_string_equal(r.etag, "\"4\"");
    expect_no_secret(&r);
    const char *pc2 = jstr(r.json, "password_changed_at");
    assert_non_null(pc2);
    assert_true(strcmp(pc2, pc1) > 0);
    http_get(path, g_svc.token_ro, &g);
    expect_status(&g, 200, "GET after PATCH");
    assert_string_equal(g.etag, "\"4\"");
    assert_int_equal(g.len, r.len);
    assert_memory_equal(g.body, r.body, r.len);
    reply_free(&g);
    reply_free(&r);

    /* The stored hash is an argon2id string, and it is never served. */
    char sql[160], col[1][1024];
    snprintf(sql, sizeof sql, "SELECT password_hash FROM users WHERE id = '%s'", id);
    assert_true(db_row(sql, 1, col));
    assert_memory_equal(col[0], "$argon2id$", 10);

    /* DELETE, then it is gone. */
    http_json("DELETE", path, g_svc.token_rw, NULL, NULL, NULL, &r);
    expect_status(&r, 204, "DELETE");
    assert_int_equal(r.len, 0);
    reply_free(&r);
    http_get(path, g_svc.token_ro, &r);
    expect_problem(&r, 404, "GET after DELETE");
    reply_free(&r);
    http_json("DELETE", path, g_svc.token_rw, NULL, NULL, NULL, &r);
    expect_problem(&r, 404, "second DELETE");
    reply_free(&r);
    assert_false(db_row(sql, 1, col));

    expect_log_clean();
}

/* ------------------------------------------------------------------------------------ */
/* 2. Unique violations                                                                  */

static void expect_conflict(const char *username, const char *email, const char *field)
{
    const char *kv[] = {"username", username, "email", email, "password", "pass-word-123", NULL};
    char *body = user_body(kv);
    struct reply r;
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL, body, &r);
    free(body);
    expect_problem(&r, 409, username);
    cJSON *errs = cJSON_GetObjectItemCaseSensitive(r.json, "errors");
    assert_true(cJSON_IsArray(errs));
    assert_true(cJSON_GetArraySize(errs) >= 1);
    expect_field(cJSON_GetArrayItem(errs, 0), "field", field);
    reply_free(&r);
}

static void test_unique_violations(void **state)
{
    (void)state;
    char id[37], path[64];
    struct reply r;

    expect_service_alive();
    long before = db_count_users();
    create_user("Dup_User", "Dup.User@Example.org", NULL, id);
    /* The same username. */
    expect_conflict("Dup_User", "other1@example.org", "username");
    /* V001 declares utf8mb4_unicode_ci: usernames and emails are unique case-insensitively. */
    expect_conflict("dup_user", "other2@example.org", "username");
    expect_conflict("DUP_USER", "other3@example.org", "username");
    /* The same email, also differing only in case. */
    expect_conflict("someone_else", "Dup.User@Example.org", "email");
    expect_conflict("someone_else2", "dup.user@example.org", "email");
    assert_int_equal(db_count_users(), before + 1);

    /* The case a person typed is kept. */
    snprintf(path, sizeof path, "/api/v1/users/%s", id);
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET Dup_User");
    expect_field(r.json, "username", "Dup_User");
    expect_field(r.json, "email", "Dup.User@Example.org");
    reply_free(&r);

    /* A PATCH onto another user's username is a conflict as well. */
    char id2[37];
    create_user("dup_other", "dup_other@example.org", NULL, id2);
    snprintf(path, sizeof path, "/api/v1/users/%s", id2);
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL,
              "{\"username\":\"dUP_uSER\"}", &r);
    expect_problem(&r, 409, "PATCH to a taken username");
    expect_field(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "errors"), 0), "field",
                 "username");
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* 3. Pagination over 1,000 users                                                        */

static int cmp_id(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Starts (or restarts) slot k's POST creating user page<i>. */
static void create_start(CURLM *multi, struct call *k, char *body, size_t bodylen, size_t i)
{
    snprintf(body, bodylen,
             "{\"username\":\"page%04zu\",\"email\":\"page%04zu@example.org\","
             "\"password\":\"pass-word-123\"}",
             i, i);
    struct req q = {.method = "POST",
                    .path = "/api/v1/users",
                    .token = g_svc.token_rw,
                    .ctype = "application/json",
                    .body = body,
                    .len = strlen(body)};
    call_setup(k, &q);
    curl_easy_setopt(k->c, CURLOPT_PRIVATE, (void *)k);
    curl_multi_add_handle(multi, k->c);
}

/* Creates n users page0000.. through a curl multi handle with `par` transfers in flight.
 * Like any good client it honours 503 + Retry-After (when more writes with a password wait
 * than USERDATA_PWHASH_QUEUE) and sends the same create again after that delay; any other
 * failure, or more than 30 such answers for one user, fails the test. Returns how many
 * 503s it got. */
static size_t create_many(size_t n, size_t par, char (*ids)[37])
{
    CURLM *multi = curl_multi_init();
    struct call *calls = calloc(par, sizeof *calls);
    char(*bodies)[256] = calloc(par, sizeof *bodies);
    size_t next = 0, done = 0, failures = 0, busy = 0;
    size_t *which = calloc(par, sizeof *which);
    unsigned *tries = calloc(n, sizeof *tries);
    double *retry_at = calloc(par, sizeof *retry_at); /* 0: slot not waiting */

    assert_non_null(multi);
    assert_non_null(calls);
    assert_non_null(bodies);
    assert_non_null(which);
    assert_non_null(tries);
    assert_non_null(retry_at);
    for (size_t s = 0; s < par && next < n; s++, next++) {
        which[s] = next;
        create_start(multi, &calls[s], bodies[s], sizeof bodies[s], next);
    }
    while (done < n) {
        int running = 0, left = 0;
        curl_multi_perform(multi, &running);
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct call *k = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&k);
            size_t s = (size_t)(k - calls);
            CURLcode rc = msg->data.result;
            curl_multi_remove_handle(multi, k->c);
            call_finish(k, rc);
            if (rc == CURLE_OK && k->r.status == 503 && k->r.retry_after[0] != '\0' &&
                ++tries[which[s]] <= 30) {
                busy++;
                retry_at[s] = now_s() + atof(k->r.retry_after);
                continue; /* the same user again once Retry-After has passed */
            }
            const char *id = k->r.status == 201 ? jstr(k->r.json, "id") : NULL;
            if (id == NULL) {
                if (failures++ < 5)
                    fprintf(stderr, "create page%04zu: HTTP %ld (%s) %s\n", which[s], k->r.status,
                            curl_easy_strerror(rc), k->r.body ? k->r.body : "");
                ids[which[s]][0] = '\0';
            } else {
                snprintf(ids[which[s]], 37, "%s", id);
            }
            done++;
            if (next < n) {
                which[s] = next++;
                create_start(multi, k, bodies[s], sizeof bodies[s], which[s]);
            }
        }
        for (size_t s = 0; s < par; s++) {
            if (retry_at[s] > 0 && now_s() >= retry_at[s]) {
                retry_at[s] = 0;
                create_start(multi, &calls[s], bodies[s], sizeof bodies[s], which[s]);
            }
        }
        if (done < n)
            curl_multi_poll(multi, NULL, 0, 100, NULL);
    }
    if (busy > 0)
        printf("create_many: %zu x 503 + Retry-After, each sent again after the delay\n", busy);
    for (size_t s = 0; s < par; s++)
        call_free(&calls[s]);
    curl_multi_cleanup(multi);
    free(calls);
    free(bodies);
    free(which);
    free(tries);
    free(retry_at);
    assert_int_equal(failures, 0);
    return busy;
}

static void test_pagination_1000(void **state)
{
    (void)state;
    char(*ids)[37] = calloc(N_PAGE_USERS, sizeof *ids);
    assert_non_null(ids);
    struct reply r;

    expect_service_alive();
    double t0 = now_s();
    /* 32 sign-ups in flight all along: they wait for the 2 hashing threads in the queue (64)
     * without holding the 8 HTTP workers, and none is refused. */
    size_t busy = create_many(N_PAGE_USERS, 32, ids);
    printf("created %d users in %.2f s\n", N_PAGE_USERS, now_s() - t0);
    assert_int_equal(busy, 0);

    long total = db_count_users();
    assert_true(total >= N_PAGE_USERS);
    char **seen = calloc((size_t)total + 1, sizeof *seen);
    assert_non_null(seen);
    size_t nseen = 0, pages = 0;
    char prev[37] = "", after[37] = "";
    bool last = false;
    while (!last) {
        char path[128];
        if (after[0])
            snprintf(path, sizeof path, "/api/v1/users?limit=%d&after=%s", PAGE_LIMIT, after);
        else
            snprintf(path, sizeof path, "/api/v1/users?limit=%d", PAGE_LIMIT);
        http_get(path, g_svc.token_ro, &r);
        expect_status(&r, 200, path);
        pages++;
        assert_true(pages <= (size_t)total / PAGE_LIMIT + 2);
        cJSON *items = cJSON_GetObjectItemCaseSensitive(r.json, "items");
        cJSON *nx = cJSON_GetObjectItemCaseSensitive(r.json, "next");
        assert_true(cJSON_IsArray(items));
        int n = cJSON_GetArraySize(items);
        assert_true(n <= PAGE_LIMIT);
        for (int i = 0; i < n; i++) {
            const char *id = jstr(cJSON_GetArrayItem(items, i), "id");
            assert_non_null(id);
            /* Strictly ascending across pages: every id at most once. */
            if (prev[0] && strcmp(id, prev) <= 0) {
                print_error("page %zu: id %s after %s\n", pages, id, prev);
                fail();
            }
            snprintf(prev, sizeof prev, "%s", id);
            assert_true(nseen < (size_t)total);
            seen[nseen] = strdup(id);
            assert_non_null(seen[nseen]);
            nseen++;
            assert_null(
                cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(items, i), "password_hash"));
        }
        if (cJSON_IsNull(nx)) {
            last = true;
        } else {
            assert_true(cJSON_IsString(nx));
            assert_int_equal(n, PAGE_LIMIT); /* only a full page may have a next */
            assert_string_equal(nx->valuestring, prev);
            snprintf(after, sizeof after, "%s", nx->valuestring);
        }
        reply_free(&r);
    }
    printf("paged %zu users in %zu pages of %d\n", nseen, pages, PAGE_LIMIT);
    assert_int_equal(nseen, (size_t)total);
    assert_int_equal(pages, ((size_t)total + PAGE_LIMIT - 1) / PAGE_LIMIT +
                                ((size_t)total % PAGE_LIMIT == 0 ? 1 : 0));
    /* Every created user was seen (exactly once, by the ascending order above). */
    qsort(seen, nseen, sizeof *seen, cmp_id);
    for (size_t i = 0; i < N_PAGE_USERS; i++) {
        char *key = ids[i];
        if (bsearch(&key, seen, nseen, sizeof *seen, cmp_id) == NULL) {
            print_error("user page%04zu (%s) not listed\n", i, ids[i]);
            fail();
        }
    }
    for (size_t i = 0; i < nseen; i++)
        free(seen[i]);
    free(seen);
    free(ids);

    /* Bad paging parameters. */
    static const char *const bad[] = {"/api/v1/users?limit=0", "/api/v1/users?limit=201",
                                      "/api/v1/users?limit=-1", "/api/v1/users?limit=ten",
                                      "/api/v1/users?after=not-an-id"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_get(bad[i], g_svc.token_ro, &r);
        expect_problem(&r, 400, bad[i]);
        reply_free(&r);
    }
}

/* ------------------------------------------------------------------------------------ */
/* 4. SQL injection strings are data                                                     */

static void test_sql_injection_literal(void **state)
{
    (void)state;
    static const char full[] = "'); DROP TABLE users; --";
    static const char addr[] = "\\' OR 1=1 -- \"quoted\" \\\\ backslash";
    char id[37], path[64], sql[160], cols[2][1024];
    struct reply r;

    expect_service_alive();
    long before = db_count_users();
    const char *kv[] = {"username",  "inj.user",
                        "email",     "inj@example.org",
                        "password",  "pass-word-123",
                        "full_name", full,
                        "address",   addr,
                        NULL};
    char *body = user_body(kv);
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL, body, &r);
    free(body);
    expect_status(&r, 201, "POST injection strings");
    expect_field(r.json, "full_name", full);
    expect_field(r.json, "address", addr);
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    reply_free(&r);

    snprintf(path, sizeof path, "/api/v1/users/%s", id);
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET injection strings");
    expect_field(r.json, "full_name", full);
    expect_field(r.json, "address", addr);
    reply_free(&r);

    /* Stored literally, not escaped twice. */
    snprintf(sql, sizeof sql, "SELECT full_name, address FROM users WHERE id = '%s'", id);
    assert_true(db_row(sql, 2, cols));
    assert_string_equal(cols[0], full);
    assert_string_equal(cols[1], addr);

    /* Quotes in the query string and in the path. */
    static const char *const bad_after[] = {
        "/api/v1/users?after=%27%20OR%20%271%27%3D%271",
        "/api/v1/users?after=00000000-0000-0000-0000-000000000000%27%29%3B%20DROP%20TABLE%"
        "20users%3B%20--",
        "/api/v1/users?after=%22%20OR%20%22%22%3D%22", "/api/v1/users?limit=5%27%20OR%201%3D1"};
    for (size_t i = 0; i < sizeof bad_after / sizeof bad_after[0]; i++) {
        http_get(bad_after[i], g_svc.token_ro, &r);
        expect_problem(&r, 400, bad_after[i]);
        reply_free(&r);
    }
    http_get("/api/v1/users/x%27%20OR%20%271%27%3D%271", g_svc.token_ro, &r);
    expect_problem(&r, 404, "id with quotes");
    reply_free(&r);
    http_json("DELETE", "/api/v1/users/%27%20OR%201%3D1%20--%20", g_svc.token_rw, NULL, NULL, NULL,
              &r);
    expect_problem(&r, 404, "DELETE id with quotes");
    reply_free(&r);

    /* The table is still there and holds exactly one more row. */
    assert_true(db_row("SHOW TABLES LIKE 'users'", 1, cols));
    assert_string_equal(cols[0], "users");
    assert_int_equal(db_count_users(), before + 1);
    http_get("/api/v1/users?limit=1", g_svc.token_ro, &r);
    expect_status(&r, 200, "list after injection");
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* 5. Concurrent PATCHes                                                                  */

struct racer {
    pthread_barrier_t *bar;
    const char *path;
    const char *if_match;
    char body[96];
    struct call k;
    long status;
    CURLcode rc;
    long version;
    char etag[64];
    char full_name[64];
    char detail[160];
};

static void *racer_main(void *arg)
{
    struct racer *x = arg;
    struct req q = {.method = "PATCH",
                    .path = x->path,
                    .token = g_svc.token_rw,
                    .ctype = "application/merge-patch+json",
                    .if_match = x->if_match,
                    .body = x->body,
                    .len = strlen(x->body)};
    call_setup(&x->k, &q); /* no cmocka asserts in threads */
    pthread_barrier_wait(x->bar);
    CURLcode rc = x->k.c ? curl_easy_perform(x->k.c) : CURLE_FAILED_INIT;
    if (x->k.c != NULL)
        call_finish(&x->k, rc);
    x->rc = rc;
    x->status = x->k.r.status;
    snprintf(x->etag, sizeof x->etag, "%s", x->k.r.etag);
    snprintf(x->detail, sizeof x->detail, "%s", x->k.r.body ? x->k.r.body : "");
    x->version = -1;
    if (x->k.r.json != NULL) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(x->k.r.json, "version");
        if (cJSON_IsNumber(v))
            x->version = (long)v->valuedouble;
        const char *fn = jstr(x->k.r.json, "full_name");
        snprintf(x->full_name, sizeof x->full_name, "%s", fn ? fn : "");
    }
    call_free(&x->k);
    return NULL;
}

/* Runs N_RACERS PATCHes started together; results in xs. */
static void race(struct racer *xs, const char *path, const char *if_match)
{
    pthread_t th[N_RACERS];
    pthread_barrier_t bar;
    assert_int_equal(pthread_barrier_init(&bar, NULL, N_RACERS), 0);
    for (int i = 0; i < N_RACERS; i++) {
        memset(&xs[i], 0, sizeof xs[i]);
        xs[i].bar = &bar;
        xs[i].path = path;
        xs[i].if_match = if_match;
        snprintf(xs[i].body, sizeof xs[i].body, "{\"full_name\":\"racer %d %s\"}", i,
                 if_match ? "pinned" : "free");
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &xs[i]), 0);
    }
    for (int i = 0; i < N_RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&bar);
}

static void test_concurrent_patches(void **state)
{
    (void)state;
    static struct racer xs[N_RACERS];
    char id[37], path[64];
    struct reply r;
    int n200 = 0, n412 = 0, other = 0;
    long winner = -1;

    expect_service_alive();
    create_user("racer", "racer@example.org", "start", id);
    snprintf(path, sizeof path, "/api/v1/users/%s", id);

    /* All pinned to version 1: exactly one wins. */
    race(xs, path, "\"1\"");
    for (int i = 0; i < N_RACERS; i++) {
        if (xs[i].rc == CURLE_OK && xs[i].status == 200) {
            n200++;
            winner = i;
        } else if (xs[i].rc == CURLE_OK && xs[i].status == 412) {
            n412++;
        } else {
            if (other++ < 5)
                print_error("racer %d: HTTP %ld (%s) %s\n", i, xs[i].status,
                            curl_easy_strerror(xs[i].rc), xs[i].detail);
        }
    }
    printf("If-Match \"1\" x%d: %d x 200, %d x 412, %d other\n", N_RACERS, n200, n412, other);
    assert_int_equal(n200, 1);
    assert_int_equal(n412, N_RACERS - 1);
    assert_int_equal(other, 0);
    assert_string_equal(xs[winner].etag, "\"2\"");
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET after pinned race");
    assert_int_equal(jversion(r.json), 2);
    assert_string_equal(r.etag, "\"2\"");
    expect_field(r.json, "full_name", xs[winner].full_name);
    reply_free(&r);

    /* Unpinned, each a different full_name: all succeed, no update is lost. */
    race(xs, path, NULL);
    bool seen[N_RACERS + 3] = {false};
    int dup = 0;
    n200 = other = 0;
    winner = -1;
    for (int i = 0; i < N_RACERS; i++) {
        if (xs[i].rc != CURLE_OK || xs[i].status != 200) {
            if (other++ < 5)
                print_error("free racer %d: HTTP %ld (%s) %s\n", i, xs[i].status,
                            curl_easy_strerror(xs[i].rc), xs[i].detail);
            continue;
        }
        n200++;
        char want[32];
        snprintf(want, sizeof want, "\"%ld\"", xs[i].version);
        assert_string_equal(xs[i].etag, want);
        if (xs[i].version < 3 || xs[i].version > N_RACERS + 2) {
            print_error("free racer %d: version %ld out of 3..%d\n", i, xs[i].version,
                        N_RACERS + 2);
            fail();
        }
        if (seen[xs[i].version])
            dup++;
        seen[xs[i].version] = true;
        if (xs[i].version == N_RACERS + 2)
            winner = i;
        /* Each response shows its own write. */
        char fn[64];
        snprintf(fn, sizeof fn, "racer %d free", i);
        assert_string_equal(xs[i].full_name, fn);
    }
    printf("no If-Match x%d: %d x 200, %d other, %d duplicate ETags\n", N_RACERS, n200, other, dup);
    assert_int_equal(other, 0);
    assert_int_equal(n200, N_RACERS);
    assert_int_equal(dup, 0);
    assert_true(winner >= 0);
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET after free race");
    assert_int_equal(jversion(r.json), N_RACERS + 2);
    expect_field(r.json, "full_name", xs[winner].full_name);
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* 6. Database restart during traffic                                                    */

struct sample {
    double t0, t1;
    long status;
    CURLcode rc;
    bool retry_after;
    bool patch;
};

struct worker {
    int idx;
    const char *path;
    atomic_bool *stop;
    double epoch;
    struct sample *s;
    size_t n, cap;
};

static size_t on_discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* GET url with a whole-request timeout; the status, or -1 when no answer came in time. */
static long get_within(const char *url, const char *token, long timeout_ms)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char auth[4200];
    long status = -1;

    assert_non_null(c);
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_discard);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

static long db_scalar(const char *db_name, const char *sql);

struct held_get {
    char url[256];
    long status;
};

static void *held_get_main(void *arg)
{
    struct held_get *g = arg;
    g->status = get_within(g->url, g_svc.token_ro, 60000);
    return NULL;
}

/* USERDATA_HEALTH_PORT: the probes answer on a port of their own while every HTTP worker
 * (here the only one) waits for a database that does not answer (the users table locked by
 * another session). On the API port, /healthz waits behind that request: a liveness probe
 * there would get a healthy process restarted during a database outage. */
static void test_health_port_answers_while_the_workers_wait(void **state)
{
    (void)state;
    struct envb e;
    char api[16], health[16], url[256];
    uint16_t api_port = free_port(), health_port = free_port();
    char log_path[sizeof g_svc.log_path + 16];

    snprintf(api, sizeof api, "%u", api_port);
    snprintf(health, sizeof health, "%u", health_port);
    snprintf(log_path, sizeof log_path, "%s.health.log", g_svc.log_path);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(log_fd >= 0);
    char *argv[] = {(char *)g_bin, "serve", NULL};
    env_service(&e, api_port, g_svc.db_name);
    env_set(&e, "USERDATA_THREADS", "1");
    env_set(&e, "USERDATA_HEALTH_PORT", health);
    env_set(&e, "USERDATA_MIGRATE_ON_START", "false");
    env_set(&e, "USERDATA_DB_IO_TIMEOUT_S", "5");
    pid_t pid = spawn(argv, e.v, log_fd, log_fd);
    env_free(&e);
    close(log_fd);
    assert_true(pid > 0);

    snprintf(url, sizeof url, "http://127.0.0.1:%s/readyz", health);
    double deadline = now_s() + READY_WAIT_S;
    while (get_within(url, NULL, 2000) != 200) {
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("the health port's /readyz did not answer 200 within %d s", READY_WAIT_S);
        }
        sleep_ms(100);
    }

    MYSQL *locker = db_open(g_svc.db_name);
    assert_int_equal(mysql_query(locker, "LOCK TABLES users WRITE"), 0);
    struct held_get g = {.status = 0};
    snprintf(g.url, sizeof g.url, "http://127.0.0.1:%s/api/v1/users?limit=1", api);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, held_get_main, &g), 0);
    /* Until the worker's SELECT waits for the table (seen from the server's side). */
    char waiting_sql[512];
    snprintf(waiting_sql, sizeof waiting_sql,
             "SELECT COUNT(*) FROM information_schema.processlist WHERE db = '%s' AND "
             "info LIKE 'SELECT%%users%%' AND id <> CONNECTION_ID()",
             g_svc.db_name);
    long waiting = 0;
    for (int i = 0; i < 100 && waiting < 1; i++) {
        waiting = db_scalar(g_svc.db_name, waiting_sql);
        if (waiting < 1)
            sleep_ms(50);
    }
    assert_true(waiting >= 1);

    snprintf(url, sizeof url, "http://127.0.0.1:%s/healthz", api);
    long api_healthz = get_within(url, NULL, 1500);
    snprintf(url, sizeof url, "http://127.0.0.1:%s/healthz", health);
    double t0 = now_s();
    long healthz = get_within(url, NULL, 2000);
    snprintf(url, sizeof url, "http://127.0.0.1:%s/readyz", health);
    long readyz = get_within(url, NULL, 2000);
    double took = now_s() - t0;

    assert_int_equal(mysql_query(locker, "UNLOCK TABLES"), 0);
    mysql_close(locker);
    pthread_join(t, NULL);
    kill(pid, SIGTERM);
    int st = 0;
    bool exited = wait_exit(pid, 10, &st);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    printf("worker held by a locked table: API /healthz %ld (-1: no answer in 1.5 s), health "
           "port /healthz %ld and /readyz %ld in %.2f s; the held GET got %ld\n",
           api_healthz, healthz, readyz, took, g.status);
    /* The control: without a port of its own the probe waits behind the held request. */
    assert_int_equal(api_healthz, -1);
    assert_int_equal(healthz, 200);
    assert_int_equal(readyz, 200);
    assert_true(g.status == 200 || g.status == 503);
    assert_true(exited && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    unlink(log_path);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct call k;
    memset(&k, 0, sizeof k);
    for (unsigned long i = 0; !atomic_load(w->stop); i++) {
        char body[96];
        bool patch = i % 2 == 1;
        snprintf(body, sizeof body, "{\"full_name\":\"worker %d write %lu\"}", w->idx, i);
        struct req q = {.method = patch ? "PATCH" : "GET",
                        .path = w->path,
                        .token = g_svc.token_rw,
                        .ctype = patch ? "application/merge-patch+json" : NULL,
                        .body = patch ? body : NULL,
                        .len = patch ? strlen(body) : 0};
        call_setup(&k, &q);
        if (k.c == NULL)
            break;
        double t0 = now_s() - w->epoch;
        CURLcode rc = curl_easy_perform(k.c);
        double t1 = now_s() - w->epoch;
        call_finish(&k, rc);
        if (w->n == w->cap) {
            size_t cap = w->cap ? w->cap * 2 : 1024;
            struct sample *s = realloc(w->s, cap * sizeof *s);
            if (s == NULL)
                break;
            w->s = s;
            w->cap = cap;
        }
        w->s[w->n++] = (struct sample){t0, t1, k.r.status, rc, k.r.retry_after[0] != '\0', patch};
        sleep_ms(10);
    }
    call_free(&k);
    return NULL;
}

/* Worker state is static (not on the test's stack) so that the teardown can stop and join
 * the threads safely when an assertion leaves the test early. */
static struct worker g_ws[N_WORKERS];
static pthread_t g_th[N_WORKERS];
static int g_nworkers;
static atomic_bool g_stop;
static char g_worker_path[64];

static void workers_stop(void)
{
    atomic_store(&g_stop, true);
    for (int i = 0; i < g_nworkers; i++)
        pthread_join(g_th[i], NULL);
    g_nworkers = 0;
}

static void workers_free(void)
{
    for (int i = 0; i < N_WORKERS; i++) {
        free(g_ws[i].s);
        g_ws[i].s = NULL;
        g_ws[i].n = g_ws[i].cap = 0;
    }
}

/* True when the test database accepts connections. */
static bool db_reachable(void)
{
    MYSQL *m = mysql_init(NULL);
    unsigned timeout = 2;
    bool ok;
    if (m == NULL)
        return false;
    mysql_options(m, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    ok = mysql_real_connect(m, g_db.host, g_db.user, g_db.password, NULL, (unsigned)atoi(g_db.port),
                            NULL, 0) != NULL;
    mysql_close(m);
    return ok;
}

/* A 200 from /readyz after `stop`: say whether someone else restarted the database. */
static void explain_ready_while_down(void)
{
    if (db_reachable())
        print_error("the test database answers again although this test stopped it and has not "
                    "started it: another process restarted it (a concurrent test run using "
                    "the same TEST_DB_*?)\n");
    else
        print_error("the test database is down (checked directly), yet userdata says ready\n");
}

static void expect_unavailable(const struct reply *r, const char *what)
{
    expect_problem(r, 503, what);
    assert_string_equal(r->retry_after, "5");
}

static void ensure_db_up(void **state)
{
    (void)state;
    char out[4096], err[4096];
    char *argv[] = {(char *)g_db.ctl, "start", NULL};
    (void)run_capture(argv, environ, 120, out, sizeof out, err, sizeof err);
}

static int teardown_db_up(void **state)
{
    workers_stop();
    workers_free();
    ensure_db_up(state);
    return 0;
}

static void test_db_restart_during_traffic(void **state)
{
    (void)state;
    char id[37];
    const char *path = g_worker_path;
    struct worker *ws = g_ws;
    struct reply r;

    expect_service_alive();
    pid_t pid_before = g_svc.pid;
    create_user("restart.user", "restart@example.org", "before restart", id);
    snprintf(g_worker_path, sizeof g_worker_path, "/api/v1/users/%s", id);

    double epoch = now_s();
    atomic_store(&g_stop, false);
    for (int i = 0; i < N_WORKERS; i++) {
        memset(&ws[i], 0, sizeof ws[i]);
        ws[i].idx = i;
        ws[i].path = path;
        ws[i].stop = &g_stop;
        ws[i].epoch = epoch;
        assert_int_equal(pthread_create(&g_th[i], NULL, worker_main, &ws[i]), 0);
        g_nworkers = i + 1;
    }
    sleep_ms(1500);

    double t_stop0 = now_s() - epoch;
    db_ctl("stop");
    double t_stop1 = now_s() - epoch;
    printf("database stopped in %.2f s\n", t_stop1 - t_stop0);
    if (db_reachable()) {
        print_error("`%s stop` returned 0 but the database still accepts connections (a server "
                    "this script does not track, e.g. its pid file was lost)\n",
                    g_db.ctl);
        fail();
    }

    /* While down: the API answers 503 + Retry-After quickly, readyz 503, healthz 200. */
    int down_checks = 0;
    double down_until = now_s() + 5.0;
    while (now_s() < down_until) {
        http_get("/readyz", NULL, &r);
        if (r.status == 200)
            explain_ready_while_down();
        expect_unavailable(&r, "/readyz while the database is down");
        assert_true(r.secs < MAX_REQUEST_S);
        reply_free(&r);
        http_get("/healthz", NULL, &r);
        expect_status(&r, 200, "/healthz while the database is down");
        reply_free(&r);
        http_get(path, g_svc.token_ro, &r);
        expect_unavailable(&r, "GET while the database is down");
        assert_true(r.secs < MAX_REQUEST_S);
        reply_free(&r);
        http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL,
                  "{\"locale\":\"fr\"}", &r);
        expect_unavailable(&r, "PATCH while the database is down");
        reply_free(&r);
        http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL,
                  "{\"username\":\"while.down\",\"email\":\"down@example.org\","
                  "\"password\":\"pass-word-123\"}",
                  &r);
        expect_unavailable(&r, "POST while the database is down");
        reply_free(&r);
        down_checks++;
        sleep_ms(250);
    }

    double t_start0 = now_s() - epoch;
    db_ctl("start");
    double t_start1 = now_s() - epoch;
    printf("database started in %.2f s\n", t_start1 - t_start0);

    /* Back without restarting userdata. */
    double t_ok = -1;
    while (now_s() - epoch < t_start1 + RECOVERY_MAX_S) {
        http_get(path, g_svc.token_ro, &r);
        long st = r.status;
        reply_free(&r);
        if (st == 200) {
            t_ok = now_s() - epoch;
            break;
        }
        sleep_ms(100);
    }
    sleep_ms(2000);
    workers_stop();

    /* Analysis over every worker request. */
    size_t total = 0, n200 = 0, n503 = 0, n503_no_ra = 0, errors = 0, others = 0, slow = 0;
    size_t down_non503 = 0, late_non200 = 0, n200_after = 0;
    double max_secs = 0;
    for (int i = 0; i < N_WORKERS; i++) {
        for (size_t j = 0; j < ws[i].n; j++) {
            const struct sample *s = &ws[i].s[j];
            double d = s->t1 - s->t0;
            total++;
            if (d > max_secs)
                max_secs = d;
            if (d > MAX_REQUEST_S)
                slow++;
            if (s->rc != CURLE_OK) {
                if (errors++ < 5)
                    print_error("worker %d: %s at t=%.2f\n", i, curl_easy_strerror(s->rc), s->t0);
                continue;
            }
            if (s->status == 200) {
                n200++;
                if (t_ok >= 0 && s->t0 >= t_ok)
                    n200_after++;
            } else if (s->status == 503) {
                n503++;
                if (!s->retry_after)
                    n503_no_ra++;
            } else {
                if (others++ < 5)
                    print_error("worker %d: HTTP %ld at t=%.2f (%s)\n", i, s->status, s->t0,
                                s->patch ? "PATCH" : "GET");
            }
            /* Entirely inside the outage: must be 503. */
            if (s->t0 >= t_stop1 && s->t1 <= t_start0 && s->status != 503)
                down_non503++;
            /* A second after the first success: the pool has healed, all 200. */
            if (t_ok >= 0 && s->t0 >= t_ok + 1.0 && s->status != 200) {
                if (late_non200++ < 5)
                    print_error("worker %d: HTTP %ld at t=%.2f, after recovery at %.2f\n", i,
                                s->status, s->t0, t_ok);
            }
        }
    }
    workers_free();
    printf("DB restart: %zu requests: %zu x 200, %zu x 503 (%zu without Retry-After), "
           "%zu other, %zu transport errors; slowest %.3f s; %d direct down checks\n",
           total, n200, n503, n503_no_ra, others, errors, max_secs, down_checks);
    if (t_ok >= 0)
        printf("DB restart: first 200 %.2f s after `start` returned (%.2f s after it began); "
               "%zu x 200 after recovery\n",
               t_ok - t_start1, t_ok - t_start0, n200_after);
    if (t_ok < 0) {
        print_error("no 200 within %.0f s of the database being back\n", RECOVERY_MAX_S);
        print_log_tail();
        fail();
    }
    assert_int_equal(errors, 0);
    assert_int_equal(others, 0);
    assert_int_equal(slow, 0);
    assert_int_equal(n503_no_ra, 0);
    assert_int_equal(down_non503, 0);
    assert_true(n503 > 0);
    assert_true(n200_after > 0);
    assert_int_equal(late_non200, 0);
    assert_true(down_checks > 0);

    /* Same process, ready again. */
    expect_service_alive();
    assert_int_equal(g_svc.pid, pid_before);
    assert_int_equal(kill(g_svc.pid, 0), 0);
    http_get("/readyz", NULL, &r);
    expect_status(&r, 200, "/readyz after the restart");
    reply_free(&r);
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL,
              "{\"full_name\":\"after restart\"}", &r);
    expect_status(&r, 200, "PATCH after the restart");
    expect_field(r.json, "full_name", "after restart");
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* 7. Body and header limits                                                             */

static void test_limits(void **state)
{
    (void)state;
    struct reply r;
    char id[37], path[64];

    expect_service_alive();
    create_user("limits.user", "limits@example.org", "limits", id);
    snprintf(path, sizeof path, "/api/v1/users/%s", id);
    long before = db_count_users();

    /* A 1 MiB field: 413, declared (Content-Length) and chunked. */
    size_t big = 1024 * 1024;
    char *field = malloc(big + 1);
    assert_non_null(field);
    memset(field, 'a', big);
    field[big] = '\0';
    const char *kv[] = {"username",        "big.user", "email",
                        "big@example.org", "password", "pass-word-123",
                        "full_name",       field,      NULL};
    char *body = user_body(kv);
    free(field);
    struct req q = {.method = "POST",
                    .path = "/api/v1/users",
                    .token = g_svc.token_rw,
                    .ctype = "application/json",
                    .body = body,
                    .len = strlen(body)};
    http(&q, &r);
    expect_problem(&r, 413, "1 MiB field");
    reply_free(&r);
    q.chunked = true;
    http(&q, &r);
    expect_problem(&r, 413, "1 MiB field, chunked");
    reply_free(&r);
    q.method = "PATCH";
    q.path = path;
    q.ctype = "application/merge-patch+json";
    q.chunked = false;
    http(&q, &r);
    expect_problem(&r, 413, "1 MiB PATCH");
    reply_free(&r);
    free(body);

    static const char good[] =
        "{\"username\":\"ct.user\",\"email\":\"ct@example.org\",\"password\":\"pass-word-123\"}";
    /* Not JSON: 415. */
    http_json("POST", "/api/v1/users", g_svc.token_rw, "text/plain", NULL, good, &r);
    expect_problem(&r, 415, "POST text/plain");
    reply_free(&r);
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/x-www-form-urlencoded", NULL,
              "username=ct.user&email=ct%40example.org", &r);
    expect_problem(&r, 415, "POST form");
    reply_free(&r);
    http_json("PATCH", path, g_svc.token_rw, "text/plain", NULL, "{\"full_name\":\"x\"}", &r);
    expect_problem(&r, 415, "PATCH text/plain");
    assert_string_equal(r.accept_patch, "application/merge-patch+json");
    reply_free(&r);

    /* Invalid UTF-8: 400. */
    static const char bad_utf8[] =
        "{\"username\":\"utf.user\",\"email\":\"utf@example.org\",\"password\":\"pass-word-123\","
        "\"full_name\":\"bad \xc3\x28 \xff\"}";
    http_json("POST", "/api/v1/users", g_svc.token_rw, "application/json", NULL, bad_utf8, &r);
    expect_problem(&r, 400, "invalid UTF-8");
    assert_non_null(strstr(jstr(r.json, "detail") ? jstr(r.json, "detail") : "", "UTF-8"));
    reply_free(&r);
    static const char overlong[] = "{\"full_name\":\"\xc0\xaf\"}"; /* overlong '/' */
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL, overlong, &r);
    expect_problem(&r, 400, "overlong UTF-8");
    reply_free(&r);
    static const char surrogate[] = "{\"full_name\":\"\xed\xa0\x80\"}"; /* UTF-16 surrogate */
    http_json("PATCH", path, g_svc.token_rw, "application/merge-patch+json", NULL, surrogate, &r);
    expect_problem(&r, 400, "encoded surrogate");
    reply_free(&r);

    /* No token: 401 with a Bearer challenge, on reads and writes. */
    http_json("POST", "/api/v1/users", NULL, "application/json", NULL, good, &r);
    expect_problem(&r, 401, "POST without a token");
    assert_string_equal(r.www_authenticate, "Bearer");
    reply_free(&r);
    http_get(path, NULL, &r);
    expect_problem(&r, 401, "GET without a token");
    reply_free(&r);
    http_get(path, "not.a.jwt", &r);
    expect_problem(&r, 401, "GET with a garbage token");
    reply_free(&r);

    /* Read-only token: reads 200, writes 403. */
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET with users:read");
    reply_free(&r);
    http_json("POST", "/api/v1/users", g_svc.token_ro, "application/json", NULL, good, &r);
    expect_problem(&r, 403, "POST with users:read");
    reply_free(&r);
    http_json("PATCH", path, g_svc.token_ro, "application/merge-patch+json", NULL,
              "{\"full_name\":\"nope\"}", &r);
    expect_problem(&r, 403, "PATCH with users:read");
    reply_free(&r);
    http_json("DELETE", path, g_svc.token_ro, NULL, NULL, NULL, &r);
    expect_problem(&r, 403, "DELETE with users:read");
    reply_free(&r);

    /* Nothing of the above wrote anything. */
    assert_int_equal(db_count_users(), before);
    http_get(path, g_svc.token_ro, &r);
    expect_status(&r, 200, "GET after the refused writes");
    expect_field(r.json, "full_name", "limits");
    assert_int_equal(jversion(r.json), 1);
    reply_free(&r);
}

/* ------------------------------------------------------------------------------------ */
/* Last in the group: SIGTERM -> exit 0 within STOP_WAIT_S                                */

static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    int st = 0;
    expect_service_alive();
    double t0 = now_s();
    assert_int_equal(kill(g_svc.pid, SIGTERM), 0);
    if (!wait_exit(g_svc.pid, STOP_WAIT_S, &st)) {
        print_error("userdata did not exit within %d s of SIGTERM\n", STOP_WAIT_S);
        print_log_tail();
        fail();
    }
    printf("userdata exited %.2f s after SIGTERM\n", now_s() - t0);
    g_svc.pid = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        print_error("userdata exit status: %s %d\n", WIFEXITED(st) ? "exit" : "signal",
                    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        print_log_tail();
        fail();
    }
    expect_log_clean();
}

/* ------------------------------------------------------------------------------------ */
/* 8. Configuration errors                                                               */

/* Runs `userdata serve` with the service env changed by (name, value) pairs (value NULL:
 * unset); asserts exit 2 and a single stderr line containing every string in must. */
static void expect_config_error(const char *const changes[], const char *const must[])
{
    struct envb e;
    char out[4096], err[4096];
    char *argv[] = {(char *)g_bin, "serve", NULL};

    env_service(&e, free_port(), "userdata_svc_config");
    for (size_t i = 0; changes[i] != NULL; i += 2)
        env_set(&e, changes[i], changes[i + 1]);
    int st = run_capture(argv, e.v, 15, out, sizeof out, err, sizeof err);
    env_free(&e);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 2) {
        print_error("%s=%s: expected exit 2, got status %d\nstderr: %s\n", changes[0],
                    changes[1] ? changes[1] : "(unset)", st, err);
        fail();
    }
    size_t len = strlen(err);
    assert_true(len > 1);
    assert_int_equal(err[len - 1], '\n');
    assert_ptr_equal(strchr(err, '\n'), err + len - 1); /* exactly one line */
    for (size_t i = 0; must[i] != NULL; i++) {
        if (strstr(err, must[i]) == NULL) {
            print_error("stderr does not name %s: %s", must[i], err);
            fail();
        }
    }
    printf("config error -> exit 2: %s", err);
}

/* 1 when database db_name exists on the test server, 0 when not. */
static int db_exists(const char *db_name)
{
    char sql[200];
    MYSQL *m;
    int found;

    snprintf(sql, sizeof sql, "SHOW DATABASES LIKE '%s'", db_name); /* our own literal names */
    MYSQL_RES *res = db_result(NULL, sql, &m);
    found = mysql_num_rows(res) > 0;
    mysql_free_result(res);
    mysql_close(m);
    return found;
}

static void test_config_errors(void **state)
{
    (void)state;
    db_drop("userdata_svc_config"); /* so that "not created" below means this run */
    const char *const port[] = {"USERDATA_PORT", "notaport", NULL};
    const char *const port_must[] = {"USERDATA_PORT", NULL};
    expect_config_error(port, port_must);

    const char *const port2[] = {"USERDATA_PORT", "70000", NULL};
    expect_config_error(port2, port_must);

    const char *const health[] = {"USERDATA_HEALTH_PORT", "70000", NULL};
    const char *const health_must[] = {"USERDATA_HEALTH_PORT", NULL};
    expect_config_error(health, health_must);

    const char *const nosecret[] = {"USERDATA_JWT_SECRET", NULL, NULL};
    const char *const secret_must[] = {"USERDATA_JWT_SECRET", NULL};
    expect_config_error(nosecret, secret_must);

    char file[] = "/tmp/userdata-svc-secret-XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, TEST_SECRET, strlen(TEST_SECRET)), (ssize_t)strlen(TEST_SECRET));
    close(fd);
    const char *const both[] = {"USERDATA_JWT_SECRET_FILE", file, NULL};
    const char *const both_must[] = {"USERDATA_JWT_SECRET", "USERDATA_JWT_SECRET_FILE", NULL};
    expect_config_error(both, both_must);
    unlink(file);

    /* Checked before any wait for the database, not found after the migrations ran. */
    const char *const host[] = {"USERDATA_LISTEN_ADDR", "localhost", NULL};
    const char *const host_must[] = {"USERDATA_LISTEN_ADDR", "numeric IPv4", NULL};
    expect_config_error(host, host_must);

    const char *const dbname[] = {"USERDATA_DB_NAME", "user-data", NULL};
    const char *const dbname_must[] = {"USERDATA_DB_NAME", "letters, digits", NULL};
    expect_config_error(dbname, dbname_must);

    const char *const nodir[] = {"USERDATA_MIGRATIONS_DIR", "/nonexistent/migrations", NULL};
    const char *const nodir_must[] = {"USERDATA_MIGRATIONS_DIR", "/nonexistent/migrations",
                                      "No such file", NULL};
    expect_config_error(nodir, nodir_must);

    const char *const nokey[] = {"USERDATA_JWT_ALG", "RS256", "USERDATA_JWT_PUBLIC_KEY_FILE",
                                 "/nonexistent/key.pem", NULL};
    const char *const nokey_must[] = {"USERDATA_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem", NULL};
    expect_config_error(nokey, nokey_must);
    assert_int_equal(db_exists("userdata_svc_config"), 0);
}

/* SIGTERM while `userdata serve` waits for a database that is not there: a clean exit 0
 * within seconds, as for any other stop. */
static void test_sigterm_while_waiting_for_database(void **state)
{
    struct envb e;
    char *argv[] = {(char *)g_bin, "serve", NULL};
    FILE *fe = tmpfile();
    int st = -1;
    char err[4096];
    (void)state;

    assert_non_null(fe);
    env_service(&e, free_port(), "userdata_svc_wait");
    env_set(&e, "USERDATA_DB_PORT", "9"); /* discard: nothing listens */
    env_set(&e, "USERDATA_DB_WAIT_S", "60");
    env_set(&e, "USERDATA_LOG_LEVEL", "info");
    pid_t pid = spawn(argv, e.v, fileno(fe), fileno(fe));
    env_free(&e);
    assert_true(pid > 0);
    sleep_ms(1500);
    assert_int_equal(kill(pid, SIGTERM), 0);
    double t0 = now_s();
    if (!wait_exit(pid, STOP_WAIT_S, &st)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("userdata did not exit within %d s of SIGTERM", STOP_WAIT_S);
    }
    read_all(fe, err, sizeof err);
    fclose(fe);
    printf("exit %.2f s after SIGTERM while waiting for the database\n", now_s() - t0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        print_error("want exit 0, got status %d; output:\n%s\n", st, err);
        fail();
    }
    assert_non_null(strstr(err, "stop requested while waiting for the database"));
}

/* ------------------------------------------------------------------------------------ */
/* 9. `userdata migrate`                                                                 */

/* Counts the rows of a query's one-column result on database db_name ("" on error). */
static long db_scalar(const char *db_name, const char *sql)
{
    MYSQL *m;
    long v = -1;
    MYSQL_RES *res = db_result(db_name, sql, &m);
    MYSQL_ROW row = mysql_fetch_row(res);
    if (row != NULL && row[0] != NULL)
        v = atol(row[0]);
    mysql_free_result(res);
    mysql_close(m);
    return v;
}

/* `userdata migrate` on an empty server creates the database, applies every file in
 * services/userdata/migrations once, exits 0 and serves nothing; a second run applies
 * nothing new; against an unreachable server it gives up after USERDATA_DB_WAIT_S with
 * exit 1 instead of hanging. */
static void test_migrate_command(void **state)
{
    (void)state;
    static const char db_name[] = "userdata_svc_migrate";
    struct envb e;
    char out[8192], err[8192];
    char *argv[] = {(char *)g_bin, "migrate", NULL};
    long files = 0;

    DIR *d = opendir(USERDATA_MIGRATIONS_DIR);
    assert_non_null(d);
    for (struct dirent *de = readdir(d); de != NULL; de = readdir(d)) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == 'V' && n > 4 && strcmp(de->d_name + n - 4, ".sql") == 0)
            files++;
    }
    closedir(d);
    assert_true(files >= 1);

    db_drop(db_name);
    for (int run = 1; run <= 2; run++) {
        env_service(&e, free_port(), db_name);
        env_set(&e, "USERDATA_MIGRATIONS_DIR", USERDATA_MIGRATIONS_DIR);
        env_set(&e, "USERDATA_LOG_LEVEL", "info");
        int st = run_capture(argv, e.v, 60, out, sizeof out, err, sizeof err);
        env_free(&e);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            print_error("userdata migrate (run %d): status %d\nstdout: %s\nstderr: %s\n", run, st,
                        out, err);
            fail();
        }
        char want[64];
        snprintf(want, sizeof want, "\"applied\":\"%ld\"", run == 1 ? files : 0L);
        if (strstr(out, "migrations applied") == NULL || strstr(out, want) == NULL) {
            print_error("run %d: expected a log line with %s, got:\n%s\n", run, want, out);
            fail();
        }
        assert_int_equal(db_scalar(db_name, "SELECT COUNT(*) FROM schema_migrations"), files);
        assert_int_equal(db_scalar(db_name, "SELECT COUNT(*) FROM information_schema.columns "
                                            "WHERE table_schema = DATABASE() AND "
                                            "table_name = 'users' AND column_name IN ('id', "
                                            "'password_hash', 'version')"),
                         3);
    }
    db_drop(db_name);

    /* Nothing listens on a fresh ephemeral port: retries, then exit 1 within the wait. */
    char port[16];
    snprintf(port, sizeof port, "%u", free_port());
    env_service(&e, free_port(), db_name);
    env_set(&e, "USERDATA_DB_PORT", port);
    env_set(&e, "USERDATA_DB_WAIT_S", "2");
    double t0 = now_s();
    int st = run_capture(argv, e.v, 30, out, sizeof out, err, sizeof err);
    env_free(&e);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 1) {
        print_error("userdata migrate without a server: expected exit 1, got %d\n%s%s\n", st, out,
                    err);
        fail();
    }
    assert_true(now_s() - t0 < 20);
    printf("userdata migrate: %ld file(s) applied once; no server -> exit 1 after %.1f s\n", files,
           now_s() - t0);
}

/* ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    static const char *const need[] = {"TEST_DB_HOST", "TEST_DB_PORT", "TEST_DB_USER",
                                       "TEST_DB_PASSWORD", "TEST_DB_CTL"};
    bool missing = false;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 || access(argv[1], X_OK) != 0) {
        fprintf(stderr, "usage: %s /path/to/userdata (the binary under test; got %s)\n", argv[0],
                argc < 2 ? "nothing" : argv[1]);
        return 1;
    }
    g_bin = argv[1];
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        if (getenv(need[i]) == NULL || getenv(need[i])[0] == '\0') {
            fprintf(stderr,
                    "FAIL: %s is not set. Start the test database and export its "
                    "settings first:\n  scripts/lib/test-mariadb.sh start && eval "
                    "\"$(scripts/lib/test-mariadb.sh env)\"\n",
                    need[i]);
            missing = true;
        }
    }
    if (missing)
        return 1;
    g_db.host = getenv("TEST_DB_HOST");
    g_db.port = getenv("TEST_DB_PORT");
    g_db.user = getenv("TEST_DB_USER");
    g_db.password = getenv("TEST_DB_PASSWORD");
    g_db.ctl = getenv("TEST_DB_CTL");
    /* For debugging one test: USERDATA_SVC_TEST_FILTER=test_concurrent_patches */
    if (getenv("USERDATA_SVC_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("USERDATA_SVC_TEST_FILTER"));
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    const struct CMUnitTest service[] = {
        cmocka_unit_test(test_crud_round_trip),
        cmocka_unit_test(test_unique_violations),
        cmocka_unit_test(test_sql_injection_literal),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_pagination_1000),
        cmocka_unit_test(test_concurrent_patches),
        cmocka_unit_test(test_health_port_answers_while_the_workers_wait),
        cmocka_unit_test_teardown(test_db_restart_during_traffic, teardown_db_up),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    const struct CMUnitTest config[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_sigterm_while_waiting_for_database),
        cmocka_unit_test(test_migrate_command),
    };
    int failed =
        cmocka_run_group_tests_name("userdata service", service, service_setup, service_teardown);
    failed += cmocka_run_group_tests_name("userdata config", config, NULL, NULL);
    curl_global_cleanup();
    return failed == 0 ? 0 : 1;
}
