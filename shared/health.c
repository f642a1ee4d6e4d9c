/* health: libmicrohttpd daemon answering /healthz, /readyz and /metrics on its own port. */
#include "shared/health.h"

#include "shared/log.h"
#include "shared/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One thread per connection: a slow check (a database ping) then delays only that probe,
 * never another one. Probes are few; the limits in health.h keep it bounded. */
#define HEALTH_REASON_MAX 256

#define HEALTH_JSON "application/json"
#define HEALTH_PROM "text/plain; version=0.0.4; charset=utf-8"

struct health_server {
    struct MHD_Daemon *daemon;
    uint16_t port;
    struct metrics *metrics;     /* not owned */
    struct health_checks checks; /* ctx not owned */
};

static void health_err(char *errstr, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void health_err(char *errstr, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(errstr, errlen, fmt, ap);
    va_end(ap);
}

static void health_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* At most 10 of libmicrohttpd's lines a minute: a client can make it write one per
 * connection it opens past a limit. */
static struct log_rate health_log_rate = LOG_RATE_INIT(10, 60);

/* libmicrohttpd's own errors (accept failures, connections refused over a limit) go to the
 * JSON log, with how many lines the rate cap dropped before this one. */
static void health_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_write_limited(&health_log_rate, "health server error", fmt, ap);
}

/* Queues a response. body is either copied (MHD_RESPMEM_MUST_COPY) or, when owned, a
 * malloc'd buffer that MHD frees after sending. */
static enum MHD_Result health_reply(struct MHD_Connection *conn, unsigned int status,
                                    const char *content_type, char *body, bool owned,
                                    const char *allow)
{
    struct MHD_Response *resp;
    enum MHD_Result ret = MHD_NO;

    resp = MHD_create_response_from_buffer(strlen(body), body,
                                           owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    if (resp == NULL) {
        if (owned)
            free(body);
        goto out;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (allow != NULL && MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES))
        goto out;
    ret = MHD_queue_response(conn, status, resp);
out:
    if (resp != NULL)
        MHD_destroy_response(resp);
    return ret;
}

/* /healthz or /readyz: 200 when check is NULL or passes, else 503 with its reason. */
static enum MHD_Result health_check(const struct health_server *h, health_check_fn check,
                                    const char *fallback, struct MHD_Connection *conn)
{
    char why[HEALTH_REASON_MAX];
    char escaped[HEALTH_REASON_MAX * 6 + 1];
    char body[sizeof(escaped) + 64];

    memset(why, 0, sizeof(why));
    if (check == NULL || check(h->checks.ctx, why, sizeof(why)))
        return health_reply(conn, MHD_HTTP_OK, HEALTH_JSON, "{\"status\":\"ok\"}", false, NULL);
    why[sizeof(why) - 1] = '\0'; /* the check may have filled it without a NUL */
    if (why[0] == '\0')
        (void)snprintf(why, sizeof(why), "%s", fallback);
    (void)log_json_escape(why, escaped, sizeof(escaped));
    (void)snprintf(body, sizeof(body), "{\"status\":\"unavailable\",\"reason\":\"%s\"}", escaped);
    return health_reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, HEALTH_JSON, body, false, NULL);
}

static enum MHD_Result health_metrics(const struct health_server *h, struct MHD_Connection *conn)
{
    char *text;

    if (h->metrics == NULL)
        return health_reply(conn, MHD_HTTP_OK, HEALTH_PROM, "", false, NULL);
    text = metrics_render(h->metrics);
    if (text == NULL)
        return health_reply(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, HEALTH_JSON,
                            "{\"error\":\"out of memory\"}", false, NULL);
    return health_reply(conn, MHD_HTTP_OK, HEALTH_PROM, text, true, NULL);
}

/* The answer is decided from the request line alone, so it is queued on the first call;
 * MHD then skips (and does not wait for) any request body. */
static enum MHD_Result health_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version,
                                     const char *upload_data, size_t *upload_data_size,
                                     void **con_cls)
{
    const struct health_server *h = cls;
    bool get_or_head;

    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0 && strcmp(url, "/metrics") != 0)
        return health_reply(conn, MHD_HTTP_NOT_FOUND, HEALTH_JSON, "{\"error\":\"not found\"}",
                            false, NULL);
    get_or_head =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get_or_head)
        return health_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, HEALTH_JSON,
                            "{\"error\":\"method not allowed\"}", false, "GET, HEAD");
    if (strcmp(url, "/healthz") == 0)
        return health_check(h, h->checks.alive, "not alive", conn);
    if (strcmp(url, "/readyz") == 0)
        return health_check(h, h->checks.ready, "not ready", conn);
    return health_metrics(h, conn);
}

struct health_server *health_server_start(const char *bind_addr, uint16_t port,
                                          struct metrics *metrics,
                                          const struct health_checks *checks, char *errstr,
                                          size_t errlen)
{
    struct health_server *result = NULL;
    struct health_server *h = NULL;
    struct sockaddr_storage addr;
    unsigned int flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    const union MHD_DaemonInfo *info;

    if (bind_addr == NULL)
        bind_addr = "127.0.0.1";
    memset(&addr, 0, sizeof(addr));
    {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;

        if (inet_pton(AF_INET, bind_addr, &v4->sin_addr) == 1) {
            v4->sin_family = AF_INET;
            v4->sin_port = htons(port);
        } else if (inet_pton(AF_INET6, bind_addr, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons(port);
            flags |= MHD_USE_IPv6;
        } else {
            health_err(errstr, errlen,
                       "health: bind address \"%s\" is not a numeric IPv4 or IPv6 address",
                       bind_addr);
            goto out;
        }
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        health_err(errstr, errlen, "health: out of memory");
        goto out;
    }
    h->metrics = metrics;
    if (checks != NULL)
        h->checks = *checks;
    errno = 0;
    /* The logger goes first so that MHD reports option errors through it too. */
    h->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, health_handle, h, MHD_OPTION_EXTERNAL_LOGGER, health_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)HEALTH_CONNECTION_LIMIT, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)HEALTH_CONNECTIONS_PER_IP, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)HEALTH_CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    if (h->daemon == NULL) {
        health_err(errstr, errlen, "health: cannot listen on %s port %u: %s", bind_addr,
                   (unsigned int)port, errno != 0 ? strerror(errno) : "libmicrohttpd failed");
        goto out;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? info->port : port;
    if (h->port == 0) {
        health_err(errstr, errlen, "health: cannot learn the listening port");
        goto out;
    }
    result = h;
    h = NULL;
out:
    if (h != NULL) {
        if (h->daemon != NULL)
            MHD_stop_daemon(h->daemon);
        free(h);
    }
    return result;
}

uint16_t health_server_port(const struct health_server *h)
{
    return h != NULL ? h->port : 0;
}

void health_server_stop(struct health_server *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon);
    free(h);
}
