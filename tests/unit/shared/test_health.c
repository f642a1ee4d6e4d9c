/* Unit tests of shared/health: a real libcurl client against the daemon on an ephemeral port. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shared/health.h"
#include "shared/metrics.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct check_state {
    bool ready;
    const char *reason;
    int calls;
};

/* The checks' ctx: /healthz asks alive, /readyz asks ready. */
struct probes {
    struct check_state alive;
    struct check_state ready;
};

struct fixture {
    struct metrics *metrics;
    struct metric_counter *counter;
    struct health_server *server;
    struct probes probes;
};

struct reply {
    long status;
    char body[8192];
    size_t body_len;
    char headers[8192];
    size_t headers_len;
};

static bool fake_check(struct check_state *r, char *why, size_t whylen)
{
    r->calls++;
    if (!r->ready && r->reason != NULL)
        snprintf(why, whylen, "%s", r->reason);
    return r->ready;
}

static bool fake_alive(void *ctx, char *why, size_t whylen)
{
    return fake_check(&((struct probes *)ctx)->alive, why, whylen);
}

static bool fake_ready(void *ctx, char *why, size_t whylen)
{
    return fake_check(&((struct probes *)ctx)->ready, why, whylen);
}

static size_t append(char *dst, size_t cap, size_t *len, const char *src, size_t n)
{
    if (n > cap - 1 - *len)
        return 0; /* makes curl fail the transfer: the test then fails loudly */
    memcpy(dst + *len, src, n);
    *len += n;
    dst[*len] = '\0';
    return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct reply *r = userdata;

    return append(r->body, sizeof(r->body), &r->body_len, ptr, size * nmemb);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct reply *r = userdata;

    return append(r->headers, sizeof(r->headers), &r->headers_len, ptr, size * nmemb);
}

/* The value of header `name` (case-insensitive) copied into out, or "" when absent. */
static const char *header(const struct reply *r, const char *name, char *out, size_t outlen)
{
    const char *line = r->headers;
    size_t nlen = strlen(name);

    out[0] = '\0';
    while (*line != '\0') {
        const char *end = strstr(line, "\r\n");

        if (end == NULL)
            break;
        if ((size_t)(end - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;

            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(end - v), v);
            return out;
        }
        line = end + 2;
    }
    return out;
}

static void http(const char *method, uint16_t port, const char *path, struct reply *r)
{
    CURL *c = curl_easy_init();
    char url[256];
    CURLcode rc;

    assert_non_null(c);
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", (unsigned int)port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "a=1");
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(c);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256] = "";

    if (f == NULL)
        return -1;
    f->metrics = metrics_new();
    f->counter = metrics_counter(f->metrics, "probe_total", "Probes.", "kind=\"x\"");
    f->probes.alive.ready = true;
    f->probes.ready.ready = true;
    const struct health_checks checks = {fake_alive, fake_ready, &f->probes};
    f->server = health_server_start("127.0.0.1", 0, f->metrics, &checks, err, sizeof(err));
    if (f->server == NULL) {
        fprintf(stderr, "health_server_start: %s\n", err);
        metrics_free(f->metrics);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    health_server_stop(f->server);
    metrics_free(f->metrics);
    free(f);
    return 0;
}

static void ephemeral_port_reported(void **state)
{
    struct fixture *f = *state;

    assert_true(health_server_port(f->server) != 0);
    assert_int_equal(health_server_port(NULL), 0);
}

static void healthz_ok(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    char v[128];

    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_string_equal(header(&r, "Content-Type", v, sizeof(v)), "application/json");
    http("GET", health_server_port(f->server), "/healthz?verbose=1", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f->probes.alive.calls, 2);
    assert_int_equal(f->probes.ready.calls, 0);
}

static void readyz_follows_ready_fn(void **state)
{
    struct fixture *f = *state;
    struct reply r;

    f->probes.ready.calls = 0;
    f->probes.ready.ready = true;
    http("GET", health_server_port(f->server), "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    assert_int_equal(f->probes.ready.calls, 1);

    f->probes.ready.ready = false;
    f->probes.ready.reason = "database \"users\" down\n";
    http("GET", health_server_port(f->server), "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"unavailable\",\"reason\":\"database \\\"users\\\" "
                                "down\\u000a\"}");

    f->probes.ready.reason = NULL;
    http("GET", health_server_port(f->server), "/readyz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"unavailable\",\"reason\":\"not ready\"}");
    assert_int_equal(f->probes.ready.calls, 3);
    /* Not ready is not dead: /healthz asks only the liveness check. */
    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(f->probes.ready.calls, 3);
    f->probes.ready.ready = true;
}

static void healthz_follows_alive_fn(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    char v[128];

    f->probes.alive.ready = false;
    f->probes.alive.reason = "the consumer loop has not polled for 151 s";
    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"unavailable\",\"reason\":\"the consumer loop has "
                                "not polled for 151 s\"}");
    assert_string_equal(header(&r, "Content-Type", v, sizeof(v)), "application/json");
    assert_string_equal(header(&r, "Cache-Control", v, sizeof(v)), "no-store");
    f->probes.alive.reason = NULL;
    http("HEAD", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 503);
    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_string_equal(r.body, "{\"status\":\"unavailable\",\"reason\":\"not alive\"}");
    /* Readiness is its own check: still 200. */
    http("GET", health_server_port(f->server), "/readyz", &r);
    assert_int_equal(r.status, 200);
    f->probes.alive.ready = true;
    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
}

static void metrics_served_as_prometheus_text(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    char v[128];

    metric_counter_add(f->counter, 41);
    http("GET", health_server_port(f->server), "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof(v)),
                        "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(r.body, "# HELP probe_total Probes.\n"
                                "# TYPE probe_total counter\n"
                                "probe_total{kind=\"x\"} 41\n");
    metric_counter_add(f->counter, 1);
    http("GET", health_server_port(f->server), "/metrics", &r);
    assert_non_null(strstr(r.body, "probe_total{kind=\"x\"} 42\n"));
}

static void unknown_path_is_404_json(void **state)
{
    static const char *const paths[] = {"/", "/nope", "/healthz/", "/healthzz", "/metrics/x"};
    struct fixture *f = *state;
    struct reply r;
    char v[128];
    size_t i;

    for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        http("GET", health_server_port(f->server), paths[i], &r);
        assert_int_equal(r.status, 404);
        assert_string_equal(r.body, "{\"error\":\"not found\"}");
        assert_string_equal(header(&r, "Content-Type", v, sizeof(v)), "application/json");
    }
    http("POST", health_server_port(f->server), "/nope", &r);
    assert_int_equal(r.status, 404);
}

static void other_methods_are_405_with_allow(void **state)
{
    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    struct fixture *f = *state;
    struct reply r;
    char v[128];
    size_t i;

    for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        http(methods[i], health_server_port(f->server), "/healthz", &r);
        assert_int_equal(r.status, 405);
        assert_string_equal(header(&r, "Allow", v, sizeof(v)), "GET, HEAD");
        assert_string_equal(r.body, "{\"error\":\"method not allowed\"}");
    }
    http("DELETE", health_server_port(f->server), "/metrics", &r);
    assert_int_equal(r.status, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof(v)), "GET, HEAD");
}

static void head_answers_without_body(void **state)
{
    struct fixture *f = *state;
    struct reply r;
    char v[128];

    http("HEAD", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(header(&r, "Content-Length", v, sizeof(v)), "15");
    http("HEAD", health_server_port(f->server), "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof(v)),
                        "text/plain; version=0.0.4; charset=utf-8");
}

static void null_metrics_and_ready_fn(void **state)
{
    struct health_server *h;
    struct reply r;
    char err[256] = "";

    (void)state;
    h = health_server_start("127.0.0.1", 0, NULL, NULL, err, sizeof(err));
    assert_non_null(h);
    http("GET", health_server_port(h), "/healthz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    http("GET", health_server_port(h), "/readyz", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    http("GET", health_server_port(h), "/metrics", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "");
    health_server_stop(h);
    health_server_stop(NULL);
}

static void bad_bind_address_rejected(void **state)
{
    char err[256] = "";

    (void)state;
    assert_null(health_server_start("localhost:80", 0, NULL, NULL, err, sizeof(err)));
    assert_string_equal(err, "health: bind address \"localhost:80\" is not a numeric IPv4 or IPv6 "
                             "address");
}

static void port_in_use_reported(void **state)
{
    struct fixture *f = *state;
    char err[256] = "";
    char want[128];

    snprintf(want, sizeof(want), "health: cannot listen on 127.0.0.1 port %u: ",
             (unsigned int)health_server_port(f->server));
    assert_null(health_server_start("127.0.0.1", health_server_port(f->server), NULL, NULL, err,
                                    sizeof(err)));
    assert_int_equal(strncmp(err, want, strlen(want)), 0);
}

static void ipv6_loopback_when_available(void **state)
{
    struct health_server *h;
    char err[256] = "";
    CURL *c;
    char url[64];
    long status = 0;

    (void)state;
    h = health_server_start("::1", 0, NULL, NULL, err, sizeof(err));
    if (h == NULL) {
        /* The machine's, not something scripts/test can provide: a skip even in CI. */
        print_message("SKIP: no IPv6 loopback here: %s\n", err);
        skip();
    }
    c = curl_easy_init();
    snprintf(url, sizeof(url), "http://[::1]:%u/healthz", (unsigned int)health_server_port(h));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    assert_int_equal(curl_easy_perform(c), CURLE_OK);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    assert_int_equal(status, 200);
    curl_easy_cleanup(c);
    health_server_stop(h);
}

/* A socket from 127.0.0.2 to the server that sends half a request and then nothing. */
static int slow_client(uint16_t port)
{
    static const char part[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
    struct sockaddr_in from = {.sin_family = AF_INET};
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.2", &from.sin_addr), 1);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &to.sin_addr), 1);
    if (bind(fd, (struct sockaddr *)&from, sizeof(from)) != 0)
        fail_msg("bind 127.0.0.2: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&to, sizeof(to)) != 0)
        fail_msg("connect: %s", strerror(errno));
    assert_int_equal(send(fd, part, sizeof(part) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(part) - 1));
    return fd;
}

/* True while the server keeps fd open: nothing to read yet (no answer, no EOF, no reset). */
static bool held_open(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};

    return poll(&p, 1, 0) == 0;
}

/* One address opening more connections than the server holds in all, each sending half a
 * request, gets HEALTH_CONNECTIONS_PER_IP of them; the rest are closed at once, and a
 * probe from another address is still answered. */
static void slow_clients_from_one_address_cannot_block_probes(void **state)
{
    struct fixture *f = *state;
    enum { N = HEALTH_CONNECTION_LIMIT + 8 };
    int fds[N];
    int open_count = 0;
    struct reply r;
    struct timespec pause = {.tv_sec = 0, .tv_nsec = 300 * 1000 * 1000};
    struct timespec t0, t1;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++)
        fds[i] = slow_client(health_server_port(f->server));
    (void)nanosleep(&pause, NULL); /* the server accepts and refuses; well under the timeout */
    http("GET", health_server_port(f->server), "/healthz", &r);
    assert_int_equal(r.status, 200);
    for (int i = 0; i < N; i++)
        open_count += held_open(fds[i]) ? 1 : 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(open_count <= HEALTH_CONNECTIONS_PER_IP);
    /* The held ones are silent: past the idle timeout the server closes them too, so the
     * exact count holds only while well inside it (a very slow machine skips it). */
    if (t1.tv_sec - t0.tv_sec < HEALTH_CONNECTION_TIMEOUT_S - 1)
        assert_int_equal(open_count, HEALTH_CONNECTIONS_PER_IP);
    else
        print_message("slow run (%ld s): only checked that at most %d were held\n",
                      (long)(t1.tv_sec - t0.tv_sec), HEALTH_CONNECTIONS_PER_IP);
    for (int i = 0; i < N; i++)
        close(fds[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(ephemeral_port_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(healthz_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(readyz_follows_ready_fn, setup, teardown),
        cmocka_unit_test_setup_teardown(healthz_follows_alive_fn, setup, teardown),
        cmocka_unit_test_setup_teardown(metrics_served_as_prometheus_text, setup, teardown),
        cmocka_unit_test_setup_teardown(unknown_path_is_404_json, setup, teardown),
        cmocka_unit_test_setup_teardown(other_methods_are_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(head_answers_without_body, setup, teardown),
        cmocka_unit_test(null_metrics_and_ready_fn),
        cmocka_unit_test(bad_bind_address_rejected),
        cmocka_unit_test_setup_teardown(port_in_use_reported, setup, teardown),
        cmocka_unit_test(ipv6_loopback_when_available),
        cmocka_unit_test_setup_teardown(slow_clients_from_one_address_cannot_block_probes, setup,
                                        teardown),
    };
    int failed;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
