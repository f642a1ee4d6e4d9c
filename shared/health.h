/* health: a tiny HTTP server for /healthz, /readyz and /metrics (for services whose main
 * transport is not HTTP, such as push-email). */
#ifndef SHARED_HEALTH_H
#define SHARED_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics;
struct health_server;

/* Returns true when the check passes; else may write a short reason into why. Called from
 * the server's threads (one per connection), so it must be thread-safe. */
typedef bool (*health_check_fn)(void *ctx, char *why, size_t whylen);

/* What the probes ask. alive: /healthz (liveness: false means "restart me"); ready:
 * /readyz (readiness). Either may be NULL: that probe then always answers 200. ctx is
 * passed to both, stays owned by the caller and must outlive the server. */
struct health_checks {
    health_check_fn alive;
    health_check_fn ready;
    void *ctx;
};

/* Connections the server holds at once: in all, and from one client address. A client that
 * opens many and sends nothing can then hold at most HEALTH_CONNECTIONS_PER_IP slots, each
 * for at most HEALTH_CONNECTION_TIMEOUT_S of silence, and a probe from another address
 * still gets in. */
#define HEALTH_CONNECTION_LIMIT     64
#define HEALTH_CONNECTIONS_PER_IP   8
#define HEALTH_CONNECTION_TIMEOUT_S 3

/* Starts listening on bind_addr:port (port 0 picks an ephemeral one). /healthz and
 * /readyz answer 200 {"status":"ok"} or 503 {"status":"unavailable","reason":...} from
 * checks->alive and checks->ready; /metrics the registry's text. Other paths 404, other
 * methods 405 with Allow. metrics and checks may be NULL (checks is copied). NULL on
 * failure with errstr filled. bind_addr is a numeric IPv4 or IPv6 address (NULL =
 * 127.0.0.1). metrics stays owned by the caller and must outlive the server. Free with
 * health_server_stop. */
struct health_server *health_server_start(const char *bind_addr, uint16_t port,
                                          struct metrics *metrics,
                                          const struct health_checks *checks, char *errstr,
                                          size_t errlen);
uint16_t health_server_port(const struct health_server *h);
void health_server_stop(struct health_server *h);

#endif
