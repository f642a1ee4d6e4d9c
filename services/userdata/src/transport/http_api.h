/* http_api: the REST API of userdata on libmicrohttpd (routing, auth, problem+json). */
#ifndef USERDATA_TRANSPORT_HTTP_API_H
#define USERDATA_TRANSPORT_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "interactors/users.h"
#include "transport/auth.h"

struct metrics;

struct http_api_config {
    const char *bind_addr; /* "127.0.0.1" */
    uint16_t port;         /* 0: ephemeral */
    unsigned threads;      /* worker threads (each may block on the database) */
    size_t max_body;       /* bytes; larger bodies get 413 */
    unsigned conns_per_ip; /* open connections one client address may hold; 0: no limit */
    const char *openapi;   /* the spec served at /openapi.yaml (NULL: 404) */
    size_t openapi_len;
    /* Writes that carry a password (argon2id: tens of ms each) run on threads of their own,
     * "password lanes", while their connection is suspended: a burst of them waits in a
     * queue instead of holding the HTTP workers, which go on serving everything else.
     * pw_lanes 0: such writes run on the worker like any other (tests). */
    unsigned pw_lanes;   /* threads; as many as may hash at once */
    unsigned pw_queue;   /* writes that may wait for a lane; any more get 503 at once */
    unsigned pw_wait_ms; /* one that waited longer gets 503 (Retry-After) without running */
};

struct http_api;

/* Starts serving. users, auth and metrics must outlive the server; metrics may be NULL.
 * NULL with errstr filled on failure. */
struct http_api *http_api_start(const struct http_api_config *cfg, struct users *users,
                                const struct auth *auth, struct metrics *metrics, char *errstr,
                                size_t errlen);
uint16_t http_api_port(const struct http_api *api);
/* Finishes the writes queued for the password lanes (each gets its answer; meanwhile other
 * requests are still served, and a new write with a password gets 503 "the server is
 * stopping" + Retry-After), then stops accepting, finishes requests in flight, frees. */
void http_api_stop(struct http_api *api);

#endif
