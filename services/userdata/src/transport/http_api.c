/* http_api: the REST API of userdata on libmicrohttpd (routing, auth, problem+json). */
#include "transport/http_api.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "shared/log.h"
#include "shared/metrics.h"
#include "transport/http_headers.h"
#include "transport/user_json.h"

#define API_USERS        "/api/v1/users"
#define API_USERS_PREFIX "/api/v1/users/"
#define MAX_CONNECTIONS  1000u
/* A body over the limit is read on and dropped up to this much more, so that a client that
 * sends a little too much (and does not wait for 100 Continue) reads its 413 instead of a
 * reset; past it the connection is closed. */
#define DRAIN_MAX     (8u * 1024 * 1024)
#define LIST_DEFAULT  50
#define RETRY_AFTER_S "5"

/* 0: no answer was sent (the client went away first), counted as code="none" */
static const unsigned tracked_codes[] = {200, 201, 204, 400, 401, 403, 404, 405,
                                         409, 412, 413, 415, 422, 500, 503, 0};
#define N_TRACKED (sizeof tracked_codes / sizeof tracked_codes[0])

/* A write with a password, run by a password lane while its connection is suspended. */
struct write_job {
    struct write_job *next;
    struct MHD_Connection *conn;
    cJSON *tree; /* the body: f's strings point into it */
    struct user_fields f;
    struct users_if_match pre;
    char *id; /* NULL: create */
    bool is_patch;
    struct timespec queued_at;
    /* the lane's answer, read by the worker once the connection is resumed */
    bool done;
    enum users_result result;
    struct user user;
    struct field_errors errs;
};

struct http_api {
    struct MHD_Daemon *daemon;
    /* the password lanes: a queue of write_jobs and the threads that run them */
    pthread_mutex_t lane_mu;
    pthread_cond_t lane_cv;
    struct write_job *lane_head, *lane_tail;
    unsigned lane_queued;  /* waiting for a lane, guarded by lane_mu */
    unsigned lane_pending; /* queued, running or answered but not yet completed: lane_mu */
    unsigned lane_cap, lane_wait_ms;
    bool lane_stopping;
    pthread_t *lanes;
    unsigned n_lanes;       /* asked for; read-only once started */
    unsigned lanes_running; /* started and not joined yet */
    struct users *users;
    const struct auth *auth;
    size_t max_body;
    const char *openapi;
    size_t openapi_len;
    uint16_t port;
    struct metric_counter *requests[N_TRACKED + 1]; /* last: any other code */
    struct metric_histogram *duration;
    struct metric_gauge *lane_queued_gauge; /* = lane_queued */
    struct metric_gauge *body_bytes;        /* request body buffers held now, in bytes */
    struct metrics *metrics;
};

/* Per-request state, from the first callback to the completion notice. */
struct request {
    char *body;
    size_t len;
    size_t cap;
    bool too_large;
    bool framing_conflict; /* Transfer-Encoding and Content-Length both given: 400 + close */
    bool refused_early;    /* a users route's headers already earned a 401/403/405 */
    bool drop_body;        /* the body is never read: dropped as it comes, not held */
    bool admitted;         /* admit() passed */
    struct write_job *job; /* a write queued for a password lane, freed at completion */
    struct timespec start;
    unsigned status;
    char method[8];
    char path[128]; /* for the access log; cut when longer */
};

/* Frees the request body, zeroed first: it may hold a plain password. */
static void request_body_free(struct http_api *api, struct request *req)
{
    if (req->body != NULL) {
        explicit_bzero(req->body, req->cap);
        if (api->body_bytes != NULL)
            metric_gauge_add(api->body_bytes, -(int64_t)req->cap);
    }
    free(req->body);
    req->body = NULL;
    req->cap = 0;
}

/* Frees a parsed body (NULL is fine), its strings zeroed first: the plain password. */
static void body_tree_free(cJSON *tree)
{
    user_json_wipe(tree);
    cJSON_Delete(tree);
}

static const char *status_title(unsigned status)
{
    switch (status) {
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* A header to add to a response; name NULL ends a list. */
struct header {
    const char *name;
    const char *value;
};

/* Queues body (malloc'd, ownership taken; may be NULL for no body). */
static enum MHD_Result send_body(struct MHD_Connection *conn, struct request *req, unsigned status,
                                 const char *content_type, char *body, size_t len,
                                 const struct header *headers)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    if (body == NULL) {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (resp == NULL)
            free(body);
    }
    if (resp == NULL)
        return MHD_NO;
    if (content_type != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (const struct header *h = headers; h != NULL && h->name != NULL; h++)
        MHD_add_response_header(resp, h->name, h->value);
    req->status = status;
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Sends json (ownership taken). */
static enum MHD_Result send_json(struct MHD_Connection *conn, struct request *req, unsigned status,
                                 cJSON *json, const char *content_type,
                                 const struct header *headers)
{
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;

    cJSON_Delete(json);
    if (text == NULL) {
        req->status = 500;
        return send_body(conn, req, 500, NULL, NULL, 0, NULL);
    }
    return send_body(conn, req, status, content_type, text, strlen(text), headers);
}

/* RFC 9457 problem details; errs may be NULL. */
static enum MHD_Result send_problem(struct MHD_Connection *conn, struct request *req,
                                    unsigned status, const char *detail,
                                    const struct field_errors *errs, const struct header *headers)
{
    cJSON *p = cJSON_CreateObject();

    if (p == NULL)
        return send_body(conn, req, 500, NULL, NULL, 0, NULL);
    cJSON_AddStringToObject(p, "type", "about:blank");
    cJSON_AddStringToObject(p, "title", status_title(status));
    cJSON_AddNumberToObject(p, "status", status);
    if (detail != NULL)
        cJSON_AddStringToObject(p, "detail", detail);
    if (errs != NULL && errs->n > 0) {
        cJSON *list = cJSON_AddArrayToObject(p, "errors");
        for (size_t i = 0; list != NULL && i < errs->n; i++) {
            cJSON *e = cJSON_CreateObject();
            if (e == NULL)
                break;
            cJSON_AddStringToObject(e, "field", errs->e[i].field);
            cJSON_AddStringToObject(e, "message", errs->e[i].message);
            cJSON_AddItemToArray(list, e);
        }
    }
    return send_json(conn, req, status, p, "application/problem+json", headers);
}

static enum MHD_Result send_unavailable(struct MHD_Connection *conn, struct request *req)
{
    const struct header h[] = {{"Retry-After", RETRY_AFTER_S}, {NULL, NULL}};
    return send_problem(conn, req, 503, "the database is unavailable; retry later", NULL, h);
}

static enum MHD_Result send_user(struct MHD_Connection *conn, struct request *req, unsigned status,
                                 const struct user *u)
{
    char etag[32];
    char location[sizeof API_USERS_PREFIX + USER_ID_LEN];
    const struct header h[] = {{MHD_HTTP_HEADER_ETAG, etag},
                               {MHD_HTTP_HEADER_CACHE_CONTROL, "no-store"},
                               {status == 201 ? MHD_HTTP_HEADER_LOCATION : NULL, location},
                               {NULL, NULL}};

    snprintf(etag, sizeof etag, "\"%llu\"", (unsigned long long)u->version);
    snprintf(location, sizeof location, "%s%s", API_USERS_PREFIX, u->id);
    return send_json(conn, req, status, user_json_from_user(u), "application/json", h);
}

/* RFC 9112 6.3: a request with both Transfer-Encoding and Content-Length (two framings a
 * proxy and this server could read differently: request smuggling) ought to be handled as
 * an error; 6.1: the connection must be closed after the answer. */
static enum MHD_Result send_framing_conflict(struct MHD_Connection *conn, struct request *req)
{
    const struct header h[] = {{MHD_HTTP_HEADER_CONNECTION, "close"}, {NULL, NULL}};
    return send_problem(conn, req, 400,
                        "Transfer-Encoding and Content-Length must not be sent together", NULL, h);
}

static enum MHD_Result send_busy(struct MHD_Connection *conn, struct request *req)
{
    const struct header h[] = {{"Retry-After", "1"}, {NULL, NULL}};
    return send_problem(conn, req, 503, "too many password changes at once; retry shortly", NULL,
                        h);
}

/* Maps an interactor result that is not OK to its response. */
static enum MHD_Result send_failure(struct MHD_Connection *conn, struct request *req,
                                    enum users_result r, const struct field_errors *errs)
{
    switch (r) {
    case USERS_INVALID:
        return send_problem(conn, req, 422, "some fields are invalid", errs, NULL);
    case USERS_NOT_FOUND:
        return send_problem(conn, req, 404, "no user with this id", NULL, NULL);
    case USERS_DUPLICATE:
        return send_problem(conn, req, 409, "a user with this username or email exists", errs,
                            NULL);
    case USERS_PRECONDITION_FAILED:
        return send_problem(conn, req, 412, "the user's current version does not match If-Match",
                            NULL, NULL);
    case USERS_UNAVAILABLE:
        return send_unavailable(conn, req);
    case USERS_BUSY:
        return send_busy(conn, req);
    case USERS_OK:
    case USERS_INTERNAL:
        break;
    }
    return send_problem(conn, req, 500, "unexpected error", NULL, NULL);
}

static const char *header_value(struct MHD_Connection *conn, const char *name)
{
    return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* 401/403 when the request's token does not grant scope; MHD_YES and *ok otherwise. */
static enum MHD_Result authorize(struct http_api *api, struct MHD_Connection *conn,
                                 struct request *req, const char *scope, bool *ok)
{
    char why[128] = "";
    enum auth_result r = auth_check(api->auth, header_value(conn, MHD_HTTP_HEADER_AUTHORIZATION),
                                    scope, why, sizeof why);
    const struct header bearer[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer"}, {NULL, NULL}};

    *ok = r == AUTH_OK;
    switch (r) {
    case AUTH_OK:
        return MHD_YES;
    case AUTH_FORBIDDEN:
        return send_problem(conn, req, 403, why[0] ? why : "insufficient scope", NULL, NULL);
    case AUTH_MISSING:
        return send_problem(conn, req, 401, "a Bearer token is required", NULL, bearer);
    case AUTH_INVALID:
        break;
    }
    return send_problem(conn, req, 401, why[0] ? why : "the token is not valid", NULL, bearer);
}

static enum MHD_Result method_not_allowed(struct MHD_Connection *conn, struct request *req,
                                          const char *allow)
{
    const struct header h[] = {{MHD_HTTP_HEADER_ALLOW, allow}, {NULL, NULL}};
    return send_problem(conn, req, 405, "this method is not allowed here", NULL, h);
}

/* Parses the body as user fields; on failure sends the response and sets *tree NULL. */
static enum MHD_Result parse_body(struct MHD_Connection *conn, struct request *req, cJSON **tree,
                                  struct user_fields *f, struct field_errors *errs, bool *ok)
{
    char detail[128];
    enum user_json_result r =
        user_json_parse(req->body ? req->body : "", req->len, tree, f, errs, detail, sizeof detail);

    *ok = r == USER_JSON_OK;
    if (r == USER_JSON_MALFORMED)
        return send_problem(conn, req, 400, detail, NULL, NULL);
    if (r == USER_JSON_INVALID)
        return send_problem(conn, req, 422, "some fields are invalid", errs, NULL);
    return MHD_YES;
}

static enum MHD_Result list_users(struct http_api *api, struct MHD_Connection *conn,
                                  struct request *req)
{
    const char *limit_s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "after");
    size_t limit = LIST_DEFAULT;
    size_t n = 0;
    bool more = false;
    struct user *page = NULL;
    cJSON *body = NULL;
    enum MHD_Result ret;

    if (limit_s != NULL) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(limit_s, &end, 10);
        if (limit_s[0] < '0' || limit_s[0] > '9' || *end != '\0' || errno != 0 || v < 1 ||
            v > USERS_LIST_MAX)
            return send_problem(conn, req, 400, "limit must be an integer from 1 to 200", NULL,
                                NULL);
        limit = v;
    }
    if (after != NULL && !user_id_valid(after))
        return send_problem(conn, req, 400, "after must be a user id from a previous page", NULL,
                            NULL);

    page = calloc(limit, sizeof *page);
    if (page == NULL)
        return send_problem(conn, req, 500, "out of memory", NULL, NULL);
    enum users_result r = users_list(api->users, after, limit, page, &n, &more);
    if (r != USERS_OK) {
        ret = send_failure(conn, req, r, NULL);
        goto out;
    }
    body = cJSON_CreateObject();
    cJSON *items = body ? cJSON_AddArrayToObject(body, "items") : NULL;
    bool ok = items != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *u = user_json_from_user(&page[i]);
        ok = u != NULL && cJSON_AddItemToArray(items, u);
    }
    if (ok)
        ok = (more ? cJSON_AddStringToObject(body, "next", page[n - 1].id)
                   : cJSON_AddNullToObject(body, "next")) != NULL;
    if (!ok) {
        cJSON_Delete(body);
        ret = send_problem(conn, req, 500, "out of memory", NULL, NULL);
        goto out;
    }
    const struct header h[] = {{MHD_HTTP_HEADER_CACHE_CONTROL, "no-store"}, {NULL, NULL}};
    ret = send_json(conn, req, 200, body, "application/json", h);
out:
    free(page);
    return ret;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static enum users_result run_write(struct users *users, const char *id, bool is_patch,
                                   const struct user_fields *f, const struct users_if_match *pre,
                                   struct user *u, struct field_errors *errs)
{
    if (id == NULL)
        return users_create(users, f, u, errs);
    if (is_patch)
        return users_patch(users, id, f, pre, u, errs);
    return users_replace(users, id, f, pre, u, errs);
}

static void write_job_free(struct write_job *job)
{
    if (job == NULL)
        return;
    /* The plain password (in the body's tree) and the new hash go as the interactor's own
     * copies do: wiped. */
    explicit_bzero(&job->user, sizeof job->user);
    body_tree_free(job->tree);
    free(job->id);
    free(job);
}

/* Queues the write for a password lane and suspends the connection; the worker that is
 * handed the connection back answers it (on_request). Takes tree. 503 at once when the
 * queue is full or the server is stopping. */
static enum MHD_Result queue_write(struct http_api *api, struct MHD_Connection *conn,
                                   struct request *req, cJSON *tree, const struct user_fields *f,
                                   const struct users_if_match *pre, const char *id, bool is_patch)
{
    struct write_job *job = calloc(1, sizeof *job);
    if (job == NULL || (id != NULL && (job->id = strdup(id)) == NULL)) {
        free(job);
        body_tree_free(tree);
        return send_problem(conn, req, 500, "out of memory", NULL, NULL);
    }
    job->conn = conn;
    job->tree = tree;
    job->f = *f;
    job->pre = *pre;
    job->is_patch = is_patch;
    clock_gettime(CLOCK_MONOTONIC, &job->queued_at);

    pthread_mutex_lock(&api->lane_mu);
    bool stopping = api->lane_stopping;
    if (stopping || api->lane_queued >= api->lane_cap) {
        pthread_mutex_unlock(&api->lane_mu);
        write_job_free(job);
        if (!stopping)
            return send_busy(conn, req);
        const struct header h[] = {{"Retry-After", "1"}, {NULL, NULL}};
        return send_problem(conn, req, 503, "the server is stopping; retry shortly", NULL, h);
    }
    /* Suspended before a lane can see the job: a lane resumes only what is suspended. */
    MHD_suspend_connection(conn);
    req->job = job;
    if (api->lane_tail != NULL)
        api->lane_tail->next = job;
    else
        api->lane_head = job;
    api->lane_tail = job;
    api->lane_queued++;
    api->lane_pending++;
    if (api->lane_queued_gauge != NULL)
        metric_gauge_set(api->lane_queued_gauge, api->lane_queued);
    pthread_cond_signal(&api->lane_cv);
    pthread_mutex_unlock(&api->lane_mu);
    return MHD_YES;
}

/* A password lane: runs queued writes until the server stops and the queue is empty. */
static void *lane_main(void *arg)
{
    struct http_api *api = arg;

    pthread_mutex_lock(&api->lane_mu);
    for (;;) {
        while (api->lane_head == NULL && !api->lane_stopping)
            pthread_cond_wait(&api->lane_cv, &api->lane_mu);
        struct write_job *job = api->lane_head;
        if (job == NULL)
            break; /* stopping, and nothing left */
        api->lane_head = job->next;
        if (api->lane_head == NULL)
            api->lane_tail = NULL;
        api->lane_queued--;
        if (api->lane_queued_gauge != NULL)
            metric_gauge_set(api->lane_queued_gauge, api->lane_queued);
        pthread_mutex_unlock(&api->lane_mu);

        if (seconds_since(&job->queued_at) * 1000.0 > (double)api->lane_wait_ms)
            job->result = USERS_BUSY; /* its client has waited long enough: 503 + Retry-After */
        else
            job->result = run_write(api->users, job->id, job->is_patch, &job->f, &job->pre,
                                    &job->user, &job->errs);
        job->done = true;
        /* The worker handed the connection answers it and frees the job: not ours now. */
        MHD_resume_connection(job->conn);
        pthread_mutex_lock(&api->lane_mu);
    }
    pthread_mutex_unlock(&api->lane_mu);
    return NULL;
}

/* The answer to a write a password lane ran (the connection was resumed). */
static enum MHD_Result answer_queued_write(struct MHD_Connection *conn, struct request *req)
{
    const struct write_job *job = req->job;
    if (job->result == USERS_OK)
        return send_user(conn, req, job->id == NULL ? 201 : 200, &job->user);
    return send_failure(conn, req, job->result, &job->errs);
}

/* POST, PUT and PATCH: content type, If-Match, body, interactor, response. */
static enum MHD_Result write_user(struct http_api *api, struct MHD_Connection *conn,
                                  struct request *req, const char *method, const char *id)
{
    const char *ctype = header_value(conn, MHD_HTTP_HEADER_CONTENT_TYPE);
    bool is_patch = strcmp(method, "PATCH") == 0;
    struct users_if_match pre;
    struct field_errors errs = {0};
    struct user_fields f;
    struct user u;
    cJSON *tree = NULL;
    bool ok = false;
    enum MHD_Result ret;

    if (is_patch ? !(http_headers_content_type_is(ctype, "application/merge-patch+json") ||
                     http_headers_content_type_is(ctype, "application/json"))
                 : !http_headers_content_type_is(ctype, "application/json")) {
        const struct header h[] = {{"Accept-Patch", "application/merge-patch+json"}, {NULL, NULL}};
        return send_problem(conn, req, 415,
                            is_patch ? "send application/merge-patch+json"
                                     : "send application/json",
                            NULL, is_patch ? h : NULL);
    }
    /* POST checks the header's syntax too (openapi.yaml), then ignores it: a new user has
     * nothing for If-Match to match. */
    if (!http_headers_parse_if_match(header_value(conn, MHD_HTTP_HEADER_IF_MATCH), &pre))
        return send_problem(conn, req, 400, "If-Match must be * or a list of ETags", NULL, NULL);

    ret = parse_body(conn, req, &tree, &f, &errs, &ok);
    if (!ok)
        goto out;

    if (api->n_lanes > 0 && (f.present & USER_F_PASSWORD) != 0 && f.password != NULL)
        return queue_write(api, conn, req, tree, &f, &pre, id, is_patch);
    enum users_result r = run_write(api->users, id, is_patch, &f, &pre, &u, &errs);
    ret = r == USERS_OK ? send_user(conn, req, id == NULL ? 201 : 200, &u)
                        : send_failure(conn, req, r, &errs);
    explicit_bzero(&u, sizeof u); /* the password hash */
out:
    body_tree_free(tree);
    return ret;
}

/* The users route url names: *id NULL for the collection, the id for one user. */
static bool users_route(const char *url, const char **id)
{
    *id = NULL;
    if (strcmp(url, API_USERS) == 0)
        return true;
    if (strncmp(url, API_USERS_PREFIX, sizeof API_USERS_PREFIX - 1) != 0)
        return false;
    *id = url + sizeof API_USERS_PREFIX - 1;
    return **id != '\0' && strchr(*id, '/') == NULL;
}

/* NULL when method is allowed on the users route (id NULL: the collection), else the
 * Allow header's value; *is_get for GET and HEAD. */
static const char *users_allow(const char *id, const char *method, bool *is_get)
{
    *is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool is_write =
        strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0 || strcmp(method, "DELETE") == 0;
    if (id == NULL && !*is_get && strcmp(method, "POST") != 0)
        return "GET, HEAD, POST";
    if (id != NULL && !*is_get && !is_write)
        return "GET, HEAD, PUT, PATCH, DELETE";
    return NULL;
}

/* The checks that need no body: method, token and (for the users routes, the only ones
 * that take a body) size. *ok when the request may go on; otherwise the refusal is queued.
 * on_request runs it when the headers are in if the client waits for 100 Continue (then
 * a refused body is never sent) or declares a body too large to drain; else once the
 * body is in, because answering early makes MHD close the connection while the client may
 * still be sending, and the client would read a reset instead of the answer. */
static enum MHD_Result admit(struct http_api *api, struct MHD_Connection *conn, struct request *req,
                             const char *url, const char *method, bool *ok)
{
    const char *id;

    *ok = false;
    if (users_route(url, &id)) {
        bool is_get;
        const char *allow = users_allow(id, method, &is_get);
        if (allow != NULL)
            return method_not_allowed(conn, req, allow);
        bool authorized = false;
        enum MHD_Result ret =
            authorize(api, conn, req, is_get ? "users:read" : "users:write", &authorized);
        if (!authorized)
            return ret;
        if (req->too_large)
            return send_problem(conn, req, 413, "the request body is too large", NULL, NULL);
    }
    *ok = true;
    req->admitted = true;
    return MHD_YES;
}

/* Method, token and size were checked by admit(). */
static enum MHD_Result serve_users(struct http_api *api, struct MHD_Connection *conn,
                                   struct request *req, const char *method, const char *id)
{
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;

    if (id == NULL)
        return is_get ? list_users(api, conn, req) : write_user(api, conn, req, method, NULL);
    if (is_get) {
        struct user u;
        enum users_result r = users_get(api->users, id, &u);
        return r == USERS_OK ? send_user(conn, req, 200, &u) : send_failure(conn, req, r, NULL);
    }
    if (strcmp(method, "DELETE") == 0) {
        struct users_if_match pre;
        if (!http_headers_parse_if_match(header_value(conn, MHD_HTTP_HEADER_IF_MATCH), &pre))
            return send_problem(conn, req, 400, "If-Match must be * or a list of ETags", NULL,
                                NULL);
        enum users_result r = users_delete(api->users, id, &pre);
        return r == USERS_OK ? send_body(conn, req, 204, NULL, NULL, 0, NULL)
                             : send_failure(conn, req, r, NULL);
    }
    return write_user(api, conn, req, method, id);
}

static enum MHD_Result serve_text(struct MHD_Connection *conn, struct request *req,
                                  const char *method, const char *content_type, char *text,
                                  size_t len, unsigned status)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        free(text);
        return method_not_allowed(conn, req, "GET, HEAD");
    }
    if (text == NULL)
        return send_problem(conn, req, 500, "out of memory", NULL, NULL);
    return send_body(conn, req, status, content_type, text, len, NULL);
}

static char *dup_text(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static enum MHD_Result route(struct http_api *api, struct MHD_Connection *conn, struct request *req,
                             const char *url, const char *method)
{
    if (strcmp(url, "/healthz") == 0) {
        static const char ok[] = "{\"status\":\"ok\"}";
        return serve_text(conn, req, method, "application/json", dup_text(ok, sizeof ok - 1),
                          sizeof ok - 1, 200);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
            return method_not_allowed(conn, req, "GET, HEAD");
        if (users_ready(api->users) != USERS_OK)
            return send_unavailable(conn, req);
        static const char ready[] = "{\"status\":\"ready\"}";
        return serve_text(conn, req, method, "application/json", dup_text(ready, sizeof ready - 1),
                          sizeof ready - 1, 200);
    }
    if (strcmp(url, "/metrics") == 0 && api->metrics != NULL) {
        char *text = metrics_render(api->metrics);
        return serve_text(conn, req, method, "text/plain; version=0.0.4; charset=utf-8", text,
                          text ? strlen(text) : 0, 200);
    }
    if (strcmp(url, "/openapi.yaml") == 0 && api->openapi != NULL)
        return serve_text(conn, req, method, "application/yaml",
                          dup_text(api->openapi, api->openapi_len), api->openapi_len, 200);
    const char *id;
    if (users_route(url, &id))
        return serve_users(api, conn, req, method, id);
    return send_problem(conn, req, 404, "no such resource", NULL, NULL);
}

/* What admit() will refuse for the method or the token alone (405, 401, 403), asked
 * without answering: on_request then drops the body as it comes instead of holding it. */
static bool refused_by_headers(struct http_api *api, struct MHD_Connection *conn, const char *url,
                               const char *method)
{
    const char *id;
    bool is_get;
    if (!users_route(url, &id))
        return false;
    if (users_allow(id, method, &is_get) != NULL)
        return true;
    char why[128];
    return auth_check(api->auth, header_value(conn, MHD_HTTP_HEADER_AUTHORIZATION),
                      is_get ? "users:read" : "users:write", why, sizeof why) != AUTH_OK;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct http_api *api = cls;
    struct request *req = *con_cls;
    (void)version;

    if (req == NULL) {
        req = calloc(1, sizeof *req);
        if (req == NULL)
            return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &req->start);
        snprintf(req->method, sizeof req->method, "%s", method);
        snprintf(req->path, sizeof req->path, "%s", url);
        *con_cls = req;
        const char *cl = header_value(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *expect = header_value(conn, MHD_HTTP_HEADER_EXPECT);
        bool expects_continue = expect != NULL && strcasecmp(expect, "100-continue") == 0;
        bool far_over = false;
        bool declares_body = header_value(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
        if (cl != NULL && header_value(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL) {
            /* The body is framed by Transfer-Encoding (MHD reads the chunks), so the
             * Content-Length says nothing about its size: 400 and close, once the body is
             * in (a client still sending would read a reset) or at once when it waits for
             * 100 Continue. */
            req->framing_conflict = true;
            return expects_continue ? send_framing_conflict(conn, req) : MHD_YES;
        }
        if (cl != NULL) { /* MHD itself refuses one that does not parse or overflows */
            char *end = NULL;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            req->too_large = errno != 0 || *end != '\0' || n > api->max_body;
            far_over =
                req->too_large && (errno != 0 || *end != '\0' || n - api->max_body > DRAIN_MAX);
            declares_body = declares_body || n > 0;
        }
        const char *id;
        bool users = users_route(url, &id);
        bool reads_body = strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                          strcmp(method, "PATCH") == 0;
        if (far_over || expects_continue) {
            bool ok = false;
            enum MHD_Result ret = admit(api, conn, req, url, method, &ok);
            if (!ok)
                return ret;
            /* The other paths never read a body: their answer (404, 405, ...) now, rather
             * than after draining 8 MiB, or never for a body that is not coming. A GET,
             * HEAD or DELETE that is let go on reads none either: dropped as it comes. */
            req->drop_body = !reads_body;
            return users ? MHD_YES : route(api, conn, req, url, method);
        }
        /* admit() once the body is in. Meanwhile a body that will never be read is dropped as
         * it comes, never held (a client without a token must not make the server hold a
         * body per connection): the other paths read none, and a users route's request
         * refused for its method or token gets that refusal whatever its body. */
        if (declares_body) {
            req->refused_early = users && refused_by_headers(api, conn, url, method);
            req->drop_body = !users || req->refused_early || !reads_body;
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->too_large || req->framing_conflict || req->drop_body ||
            n > api->max_body - req->len) {
            /* A declared size a little over the limit (sent without waiting for 100
             * Continue), a chunked body found too large, or one that gets 400 for its
             * framing, or one never read (drop_body). MHD cannot answer in the middle of a
             * body: drop it and answer 413 (400, the refusal, the other path's answer) at
             * its end, unless it goes on past DRAIN_MAX, when the connection is closed so
             * that one client cannot send for ever. A dropped body over the limit is too
             * large all the same: a users route's limit holds for every method. */
            if (!req->too_large && !req->framing_conflict &&
                (!req->drop_body || n > api->max_body - req->len)) {
                req->too_large = true;
                request_body_free(api, req);
            }
            req->len = n > SIZE_MAX - req->len ? SIZE_MAX : req->len + n; /* bytes seen */
            if (req->len > api->max_body && req->len - api->max_body > DRAIN_MAX) {
                char limit[24];
                snprintf(limit, sizeof limit, "%zu", api->max_body);
                log_write(LOG_WARN, "request body far over the limit: connection closed", "method",
                          req->method, "path", req->path, "limit_bytes", limit, NULL);
                req->status = 413; /* for the access log and the metrics */
                return MHD_NO;
            }
            return MHD_YES;
        }
        if (req->len + n > req->cap) {
            size_t cap = req->cap ? req->cap : 1024;
            while (cap < req->len + n)
                cap *= 2;
            /* not realloc: the old buffer may hold a password and is wiped before it goes */
            char *b = malloc(cap);
            if (b == NULL)
                return MHD_NO;
            if (req->len > 0)
                memcpy(b, req->body, req->len);
            request_body_free(api, req);
            req->body = b;
            req->cap = cap;
            if (api->body_bytes != NULL)
                metric_gauge_add(api->body_bytes, (int64_t)cap);
        }
        memcpy(req->body + req->len, upload_data, n);
        req->len += n;
        return MHD_YES;
    }
    if (req->job != NULL) /* resumed: a password lane ran the write */
        return answer_queued_write(conn, req);
    if (req->framing_conflict)
        return send_framing_conflict(conn, req);
    const char *id;
    if (!req->admitted) {
        bool ok = false;
        enum MHD_Result ret = admit(api, conn, req, url, method, &ok);
        if (!ok)
            return ret;
        if (req->refused_early) {
            /* A token that became valid while the body came (its nbf passed): the body was
             * dropped, so the refusal of the headers stands. */
            const struct header bearer[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer"},
                                            {NULL, NULL}};
            return send_problem(conn, req, 401, "the token was not valid when the request began",
                                NULL, bearer);
        }
    } else if (req->too_large && users_route(url, &id)) {
        /* admitted from the headers; a chunked body then proved too large */
        return send_problem(conn, req, 413, "the request body is too large", NULL, NULL);
    }
    return route(api, conn, req, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http_api *api = cls;
    struct request *req = *con_cls;
    (void)conn;

    if (req == NULL)
        return;
    if (req->job != NULL && req->status == 0 && req->job->done)
        /* The client went away while its write waited for a lane or ran: the write was
         * done (or refused) all the same, and nobody read the answer. */
        log_write(LOG_WARN, "client went away before the answer to its write", "method",
                  req->method, "path", req->path, "write",
                  req->job->result == USERS_OK ? "done" : "not done", NULL);
    double secs = seconds_since(&req->start);
    /* No status of ours: cut short (client gone, timeout, shutdown) is "none", no answer
     * was sent; otherwise libmicrohttpd answered or failed it itself (a malformed chunk
     * gets its own 400), with a code not known here: "other". */
    bool cut_short = toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ||
                     toe == MHD_REQUEST_TERMINATED_READ_ERROR ||
                     toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ||
                     toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN;
    size_t slot = N_TRACKED;
    for (size_t i = 0; i < N_TRACKED; i++) {
        if (tracked_codes[i] == req->status && (req->status != 0 || cut_short))
            slot = i;
    }
    if (api->requests[slot] != NULL)
        metric_counter_add(api->requests[slot], 1);
    if (api->duration != NULL)
        metric_histogram_observe(api->duration, secs);
    if (log_enabled(LOG_INFO)) {
        char status[8], ms[32];
        snprintf(status, sizeof status, "%u", req->status);
        snprintf(ms, sizeof ms, "%.3f", secs * 1000.0);
        log_write(LOG_INFO, "request", "method", req->method, "path", req->path, "status", status,
                  "duration_ms", ms, NULL);
    }
    if (req->job != NULL) {
        write_job_free(req->job);
        pthread_mutex_lock(&api->lane_mu);
        api->lane_pending--;
        pthread_mutex_unlock(&api->lane_mu);
    }
    request_body_free(api, req);
    free(req);
    *con_cls = NULL;
}

/* At most 10 of libmicrohttpd's lines a minute: a client can make it write one per
 * connection it opens past the per-address limit. */
static struct log_rate mhd_log_rate = LOG_RATE_INIT(10, 60);

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    log_write_limited(&mhd_log_rate, "http server", fmt, ap);
}

static void register_metrics(struct http_api *api, struct metrics *m)
{
    static const double bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                    0.1,   0.25,   0.5,   1,    2.5};
    char labels[32];

    if (m == NULL)
        return;
    for (size_t i = 0; i <= N_TRACKED; i++) {
        if (i < N_TRACKED && tracked_codes[i] == 0)
            snprintf(labels, sizeof labels, "code=\"none\"");
        else if (i < N_TRACKED)
            snprintf(labels, sizeof labels, "code=\"%u\"", tracked_codes[i]);
        else
            snprintf(labels, sizeof labels, "code=\"other\"");
        api->requests[i] = metrics_counter(m, "userdata_http_requests_total",
                                           "HTTP requests answered, by status code", labels);
    }
    api->duration = metrics_histogram(m, "userdata_http_request_duration_seconds",
                                      "Time from request start to response completion", NULL,
                                      bounds, sizeof bounds / sizeof bounds[0]);
    api->lane_queued_gauge =
        metrics_gauge(m, "userdata_password_writes_queued",
                      "Writes with a password waiting for a hashing lane", NULL);
    api->body_bytes = metrics_gauge(m, "userdata_http_request_body_bytes",
                                    "Bytes of request bodies held in memory now", NULL);
}

/* Stops the password lanes once every queued write has run (each connection resumed),
 * then waits up to 5 s for those answers to go out. */
static void lanes_stop(struct http_api *api)
{
    pthread_mutex_lock(&api->lane_mu);
    api->lane_stopping = true;
    pthread_cond_broadcast(&api->lane_cv);
    pthread_mutex_unlock(&api->lane_mu);
    for (unsigned i = 0; i < api->lanes_running; i++)
        pthread_join(api->lanes[i], NULL);
    api->lanes_running = 0;
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&api->lane_mu);
        unsigned pending = api->lane_pending;
        pthread_mutex_unlock(&api->lane_mu);
        if (pending == 0)
            break;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void api_free(struct http_api *api)
{
    free(api->lanes);
    pthread_cond_destroy(&api->lane_cv);
    pthread_mutex_destroy(&api->lane_mu);
    free(api);
}

static bool lanes_start(struct http_api *api, const struct http_api_config *cfg, char *errstr,
                        size_t errlen)
{
    api->lane_cap = cfg->pw_queue;
    api->lane_wait_ms = cfg->pw_wait_ms;
    api->n_lanes = cfg->pw_lanes;
    if (cfg->pw_lanes == 0)
        return true;
    api->lanes = calloc(cfg->pw_lanes, sizeof *api->lanes);
    if (api->lanes == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return false;
    }
    for (unsigned i = 0; i < cfg->pw_lanes; i++) {
        int e = pthread_create(&api->lanes[i], NULL, lane_main, api);
        if (e != 0) {
            snprintf(errstr, errlen, "cannot start a password lane: %s", strerror(e));
            lanes_stop(api);
            return false;
        }
        api->lanes_running++;
    }
    return true;
}

struct http_api *http_api_start(const struct http_api_config *cfg, struct users *users,
                                const struct auth *auth, struct metrics *metrics, char *errstr,
                                size_t errlen)
{
    struct sockaddr_in addr;
    struct http_api *api = calloc(1, sizeof *api);

    if (api == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&api->lane_mu, NULL) != 0) {
        snprintf(errstr, errlen, "cannot make a mutex");
        free(api);
        return NULL;
    }
    if (pthread_cond_init(&api->lane_cv, NULL) != 0) {
        snprintf(errstr, errlen, "cannot make a condition variable");
        pthread_mutex_destroy(&api->lane_mu);
        free(api);
        return NULL;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(cfg->port);
    if (inet_pton(AF_INET, cfg->bind_addr, &addr.sin_addr) != 1) {
        snprintf(errstr, errlen, "bind address %s is not an IPv4 address", cfg->bind_addr);
        api_free(api);
        return NULL;
    }
    api->users = users;
    api->auth = auth;
    api->max_body = cfg->max_body;
    api->openapi = cfg->openapi;
    api->openapi_len = cfg->openapi_len;
    api->metrics = metrics;
    register_metrics(api, metrics);
    if (!lanes_start(api, cfg, errstr, errlen)) {
        api_free(api);
        return NULL;
    }

    api->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_EPOLL | MHD_USE_TURBO |
            MHD_ALLOW_SUSPEND_RESUME,
        cfg->port, NULL, NULL, on_request, api,
        /* the logger first, so that MHD reports nothing through its own stderr logger */
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)(cfg->threads ? cfg->threads : 1), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)MAX_CONNECTIONS,
        /* so that one client holding connections open (slowloris) cannot take them all */
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->conns_per_ip,
        /* Headers only: bodies are copied out as they arrive. MHD clears the pool per
         * request, so the default 32 KiB costs measurable CPU (bench/README.md). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)16384, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, api, MHD_OPTION_END);
    if (api->daemon == NULL) {
        snprintf(errstr, errlen, "cannot listen on %s:%u (in use, or not allowed)", cfg->bind_addr,
                 cfg->port);
        lanes_stop(api);
        api_free(api);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->daemon, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : cfg->port;
    return api;
}

uint16_t http_api_port(const struct http_api *api)
{
    return api->port;
}

void http_api_stop(struct http_api *api)
{
    if (api == NULL)
        return;
    lanes_stop(api);
    MHD_stop_daemon(api->daemon);
    api_free(api);
}
