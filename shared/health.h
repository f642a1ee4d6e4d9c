/* health: a tiny HTTP server for /healthz, /readyz and /metrics (for services whose main
 * transport is not HTTP, such as push-email). */
#ifndef SHARED_HEALTH_H
#define SHARED_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics;
struct health_server;

/* Returns true when the service is ready; may write a short reason into why. Called from
 * the server's thread. */
typedef bool (*health_ready_fn)(void *ctx, char *why, size_t whylen);

/* Connections the server holds at once: in all, and from one client address. A client that
 * opens many and sends nothing can then hold at most HEALTH_CONNECTIONS_PER_IP slots, each
 * for at most HEALTH_CONNECTION_TIMEOUT_S of silence, and a probe from another address
 * still gets in. */
#define HEALTH_CONNECTION_LIMIT     64
#define HEALTH_CONNECTIONS_PER_IP   8
#define HEALTH_CONNECTION_TIMEOUT_S 3

/* Starts listening on bind_addr:port (port 0 picks an ephemeral one). /healthz answers
 * 200 {"status":"ok"}; /readyz 200 or 503 {"status":"unavailable","reason":...} from
 * ready(); /metrics the registry's text. Other paths 404, other methods 405 with Allow.
 * metrics and ready may be NULL. NULL on failure with errstr filled.
 * bind_addr is a numeric IPv4 or IPv6 address (NULL = 127.0.0.1). metrics and ready_ctx
 * stay owned by the caller and must outlive the server. Free with health_server_stop. */
struct health_server *health_server_start(const char *bind_addr, uint16_t port,
                                          struct metrics *metrics, health_ready_fn ready,
                                          void *ready_ctx, char *errstr, size_t errlen);
uint16_t health_server_port(const struct health_server *h);
void health_server_stop(struct health_server *h);

#endif
