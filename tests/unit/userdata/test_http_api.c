/* The HTTP transport driven by a real libcurl client against a real daemon on an
 * ephemeral port, with fake ports behind the interactor: every status code of the API. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <jwt.h>
#include <pthread.h>
#include <time.h>

#include "fake_ports.h"
#include "interactors/users.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "transport/auth.h"
#include "transport/http_api.h"

#define SECRET   "0123456789abcdef0123456789abcdef-test-secret"
#define MAX_BODY 4096

struct fixture {
    struct fake_repo repo;
    struct fake_env env;
    struct fake_hasher hasher;
    struct users *uc;
    struct auth *auth;
    struct metrics *metrics;
    struct http_api *api;
    char base[64];
    char token_rw[2048];
    char token_ro[2048];
};

struct reply {
    long status;
    char *body;
    size_t len;
    char headers[4096];
    size_t hlen;
    cJSON *json;
};

static struct auth_config auth_cfg(void)
{
    struct auth_config c = {0};
    c.alg = AUTH_HS256;
    c.key = (const unsigned char *)SECRET;
    c.key_len = strlen(SECRET);
    c.audience = "userdata";
    c.leeway_s = 5;
    return c;
}

static void mint(const char *scope, long ttl, char *out, size_t outlen)
{
    struct auth_config c = auth_cfg();
    char err[256];
    char *tok = NULL;
    assert_int_equal(auth_mint(&c, "tester", scope, ttl, &tok, err, sizeof err), 0);
    snprintf(out, outlen, "%s", tok);
    free(tok);
}

/* auth_mint refuses a past expiry, so an expired token is built with libjwt itself. */
static void mint_expired(char *out, size_t outlen)
{
    jwt_t *jwt = NULL;
    time_t now = time(NULL);
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grant(jwt, "sub", "tester"), 0);
    assert_int_equal(jwt_add_grant(jwt, "aud", "userdata"), 0);
    assert_int_equal(jwt_add_grant(jwt, "scope", "users:read"), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "iat", (long)now - 600), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)now - 120), 0);
    assert_int_equal(
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    snprintf(out, outlen, "%s", tok);
    free(tok);
    jwt_free(jwt);
}

/* A users:write token not valid before now + nbf_in_s (the fixture's leeway is 5 s). */
static void mint_not_before(long nbf_in_s, char *out, size_t outlen)
{
    jwt_t *jwt = NULL;
    time_t now = time(NULL);
    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grant(jwt, "sub", "tester"), 0);
    assert_int_equal(jwt_add_grant(jwt, "aud", "userdata"), 0);
    assert_int_equal(jwt_add_grant(jwt, "scope", "users:read users:write"), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "iat", (long)now), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "nbf", (long)now + nbf_in_s), 0);
    assert_int_equal(jwt_add_grant_int(jwt, "exp", (long)now + 600), 0);
    assert_int_equal(
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
    char *tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    snprintf(out, outlen, "%s", tok);
    free(tok);
    jwt_free(jwt);
}

/* The fixture's server config: 2 workers and, as in production, writes with a password
 * on a password lane (g_no_lanes: on the worker). */
static bool g_no_lanes;

static struct http_api_config api_config(unsigned conns_per_ip)
{
    static const char spec[] = "openapi: 3.1.0\n";
    struct http_api_config hc = {.bind_addr = "127.0.0.1",
                                 .port = 0,
                                 .threads = 2,
                                 .max_body = MAX_BODY,
                                 .conns_per_ip = conns_per_ip,
                                 .openapi = spec,
                                 .openapi_len = sizeof spec - 1,
                                 .pw_lanes = g_no_lanes ? 0 : 1,
                                 .pw_queue = 8,
                                 .pw_wait_ms = 60000};
    return hc;
}

static int start_api_with(struct fixture *fx, const struct http_api_config *hc)
{
    char err[256];
    fx->api = http_api_start(hc, fx->uc, fx->auth, fx->metrics, err, sizeof err);
    if (fx->api == NULL) {
        fprintf(stderr, "http_api_start: %s\n", err);
        return -1;
    }
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%u", http_api_port(fx->api));
    return 0;
}

/* Starts the fixture's server (conns_per_ip 0: no per-address limit); 0 or -1. */
static int start_api(struct fixture *fx, unsigned conns_per_ip)
{
    struct http_api_config hc = api_config(conns_per_ip);
    return start_api_with(fx, &hc);
}

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    char err[256];
    struct auth_config ac = auth_cfg();

    if (fx == NULL)
        return -1;
    fake_repo_init(&fx->repo);
    fx->env.now_us = 1795000000000000LL;
    fx->uc = users_new(fake_repo_port(&fx->repo), fake_hasher_port_of(&fx->hasher),
                       fake_env_port(&fx->env));
    fx->auth = auth_new(&ac, err, sizeof err);
    fx->metrics = metrics_new();
    if (start_api(fx, 0) != 0)
        return -1;
    mint("users:read users:write", 600, fx->token_rw, sizeof fx->token_rw);
    mint("users:read", 600, fx->token_ro, sizeof fx->token_ro);
    *state = fx;
    return 0;
}

/* Restarts the fixture's server with a per-address connection limit. */
static void restart_with_conns_per_ip(struct fixture *fx, unsigned limit)
{
    http_api_stop(fx->api);
    if (start_api(fx, limit) != 0)
        fail_msg("http_api_start failed");
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    http_api_stop(fx->api);
    users_free(fx->uc);
    auth_free(fx->auth);
    metrics_free(fx->metrics);
    pthread_mutex_destroy(&fx->repo.lock);
    free(fx);
    return 0;
}

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

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct reply *r = ud;
    size_t len = size * n;
    if (r->hlen + len < sizeof r->headers) {
        memcpy(r->headers + r->hlen, p, len);
        r->hlen += len;
        r->headers[r->hlen] = '\0';
    }
    return len;
}

static void reply_free(struct reply *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

/* Returns the value of header name in r (case-insensitive), or "" when absent. */
static const char *header(struct reply *r, const char *name, char *buf, size_t buflen)
{
    size_t n = strlen(name);
    buf[0] = '\0';
    for (char *line = r->headers; line && *line;
         line = strstr(line, "\r\n") ? strstr(line, "\r\n") + 2 : NULL) {
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r\n");
            snprintf(buf, buflen, "%.*s", (int)len, v);
            break;
        }
    }
    return buf;
}

/* body_len (size_t)-1: strlen(body). extra: NULL-terminated list of header lines. */
static struct reply call(struct fixture *fx, const char *method, const char *path,
                         const char *token, const char *body, size_t body_len,
                         const char *const *extra)
{
    struct reply r = {0};
    char url[512], auth_h[2200];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();

    assert_non_null(c);
    snprintf(url, sizeof url, "%s%s", fx->base, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (token != NULL) {
        snprintf(auth_h, sizeof auth_h, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth_h);
    }
    for (const char *const *e = extra; e && *e; e++)
        h = curl_slist_append(h, *e);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                         (curl_off_t)(body_len == (size_t)-1 ? strlen(body) : body_len));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK)
        fail_msg("curl: %s", curl_easy_strerror(rc));
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (r.body != NULL)
        r.json = cJSON_Parse(r.body);
    return r;
}

static const char *const JSON[] = {"Content-Type: application/json", NULL};

#define ANA "{\"username\":\"ana\",\"email\":\"ana@example.com\",\"password\":\"correct horse\"}"

static struct reply create_ana(struct fixture *fx)
{
    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, JSON);
    assert_int_equal(r.status, 201);
    return r;
}

static const char *jstr(struct reply *r, const char *name)
{
    cJSON *v = cJSON_GetObjectItem(r->json, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void assert_problem(struct reply *r, long status)
{
    char ct[128];
    assert_int_equal(r->status, status);
    assert_string_equal(header(r, "Content-Type", ct, sizeof ct), "application/problem+json");
    assert_non_null(r->json);
    assert_int_equal(cJSON_GetObjectItem(r->json, "status")->valueint, status);
    assert_non_null(jstr(r, "title"));
}

static void create_returns_201_location_etag_and_no_hash(void **state)
{
    struct fixture *fx = *state;
    char v[256], want[128];
    struct reply r = create_ana(fx);

    const char *id = jstr(&r, "id");
    assert_non_null(id);
    snprintf(want, sizeof want, "/api/v1/users/%s", id);
    assert_string_equal(header(&r, "Location", v, sizeof v), want);
    assert_string_equal(header(&r, "ETag", v, sizeof v), "\"1\"");
    assert_null(strstr(r.body, "password_hash"));
    assert_null(strstr(r.body, "fake$"));
    assert_null(strstr(r.body, "correct horse"));
    assert_string_equal(jstr(&r, "username"), "ana");
    reply_free(&r);
}

static void get_one_and_404(void **state)
{
    struct fixture *fx = *state;
    char path[128], v[64];
    struct reply c = create_ana(fx);

    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));
    struct reply r = call(fx, "GET", path, fx->token_ro, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "ETag", v, sizeof v), "\"1\"");
    assert_string_equal(jstr(&r, "email"), "ana@example.com");
    reply_free(&r);

    r = call(fx, "GET", "/api/v1/users/00000000-0000-4000-8000-00000000dead", fx->token_ro, NULL, 0,
             NULL);
    assert_problem(&r, 404);
    reply_free(&r);
    r = call(fx, "GET", "/api/v1/users/not-a-uuid", fx->token_ro, NULL, 0, NULL);
    assert_problem(&r, 404);
    reply_free(&r);
    r = call(fx, "GET", "/nope", NULL, NULL, 0, NULL);
    assert_problem(&r, 404);
    reply_free(&r);
    reply_free(&c);
}

static void auth_401_and_403(void **state)
{
    struct fixture *fx = *state;
    char v[64], expired[2048];

    struct reply r = call(fx, "GET", "/api/v1/users", NULL, NULL, 0, NULL);
    assert_problem(&r, 401);
    assert_string_equal(header(&r, "WWW-Authenticate", v, sizeof v), "Bearer");
    reply_free(&r);

    r = call(fx, "GET", "/api/v1/users", "garbage.token.here", NULL, 0, NULL);
    assert_problem(&r, 401);
    reply_free(&r);

    mint_expired(expired, sizeof expired);
    r = call(fx, "GET", "/api/v1/users", expired, NULL, 0, NULL);
    assert_problem(&r, 401);
    reply_free(&r);

    r = call(fx, "POST", "/api/v1/users", fx->token_ro, ANA, (size_t)-1, JSON);
    assert_problem(&r, 403);
    assert_int_equal(fx->repo.inserts, 0);
    reply_free(&r);
}

static void bad_bodies_400_413_415_422(void **state)
{
    struct fixture *fx = *state;

    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, "{nope", (size_t)-1, JSON);
    assert_problem(&r, 400);
    reply_free(&r);

    r = call(fx, "POST", "/api/v1/users", fx->token_rw, "{\"username\":\"a\0b\"}", 18, JSON);
    assert_problem(&r, 400);
    reply_free(&r);

    r = call(fx, "POST", "/api/v1/users", fx->token_rw, "{\"username\":\"\xff\"}", (size_t)-1,
             JSON);
    assert_problem(&r, 400);
    reply_free(&r);

    /* POST ignores If-Match, but only a well-formed one (openapi.yaml) */
    const char *const bad_tag[] = {"Content-Type: application/json", "If-Match: 1", NULL};
    r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, bad_tag);
    assert_problem(&r, 400);
    reply_free(&r);

    const char *const text[] = {"Content-Type: text/plain", NULL};
    r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, text);
    assert_problem(&r, 415);
    reply_free(&r);
    r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, NULL);
    assert_problem(&r, 415);
    reply_free(&r);

    /* A 1 MB field: refused whole, before it is read. */
    size_t big = 1024 * 1024;
    char *body = malloc(big + 64);
    assert_non_null(body);
    int n = snprintf(body, 64, "{\"full_name\":\"");
    memset(body + n, 'x', big);
    memcpy(body + n + big, "\"}", 3);
    r = call(fx, "POST", "/api/v1/users", fx->token_rw, body, (size_t)-1, JSON);
    assert_problem(&r, 413);
    reply_free(&r);
    free(body);

    r = call(fx, "POST", "/api/v1/users", fx->token_rw,
             "{\"username\":\"a\",\"email\":\"bad\",\"password\":\"x\",\"isAdmin\":true}",
             (size_t)-1, JSON);
    assert_problem(&r, 422);
    cJSON *errs = cJSON_GetObjectItem(r.json, "errors");
    assert_true(cJSON_IsArray(errs));
    assert_int_equal(cJSON_GetArraySize(errs), 1); /* the unknown field, before rules */
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "field")->valuestring,
                        "isAdmin");
    reply_free(&r);

    r = call(fx, "POST", "/api/v1/users", fx->token_rw,
             "{\"username\":\"a\",\"email\":\"bad\",\"password\":\"x\"}", (size_t)-1, JSON);
    assert_problem(&r, 422);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "errors")), 3);
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 0);
}

static void duplicate_is_409(void **state)
{
    struct fixture *fx = *state;
    struct reply c = create_ana(fx);
    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, JSON);
    assert_problem(&r, 409);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(r.json, "errors"), 0), "field")
            ->valuestring,
        "username");
    reply_free(&r);
    reply_free(&c);
}

static void put_patch_if_match_412_and_etag(void **state)
{
    struct fixture *fx = *state;
    char path[128], v[64];
    struct reply c = create_ana(fx);
    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));

    const char *const stale[] = {"Content-Type: application/merge-patch+json", "If-Match: \"7\"",
                                 NULL};
    struct reply r =
        call(fx, "PATCH", path, fx->token_rw, "{\"full_name\":\"Ana\"}", (size_t)-1, stale);
    assert_problem(&r, 412);
    reply_free(&r);

    const char *const fresh[] = {"Content-Type: application/merge-patch+json", "If-Match: \"1\"",
                                 NULL};
    r = call(fx, "PATCH", path, fx->token_rw, "{\"full_name\":\"Ana\",\"address\":null}",
             (size_t)-1, fresh);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "ETag", v, sizeof v), "\"2\"");
    assert_string_equal(jstr(&r, "full_name"), "Ana");
    reply_free(&r);

    r = call(fx, "PATCH", path, fx->token_rw, "{\"full_name\":\"X\"}", (size_t)-1, JSON);
    assert_int_equal(r.status, 200); /* application/json is accepted for merge patch too */
    reply_free(&r);
    const char *const xml[] = {"Content-Type: application/xml", NULL};
    r = call(fx, "PATCH", path, fx->token_rw, "{}", (size_t)-1, xml);
    assert_problem(&r, 415);
    assert_string_equal(header(&r, "Accept-Patch", v, sizeof v), "application/merge-patch+json");
    reply_free(&r);

    const char *const put_stale[] = {"Content-Type: application/json", "If-Match: \"1\"", NULL};
    r = call(fx, "PUT", path, fx->token_rw, "{\"username\":\"ana\",\"email\":\"ana@example.org\"}",
             (size_t)-1, put_stale);
    assert_problem(&r, 412);
    reply_free(&r);
    r = call(fx, "PUT", path, fx->token_rw, "{\"username\":\"ana\",\"email\":\"ana@example.org\"}",
             (size_t)-1, JSON);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(&r, "email"), "ana@example.org");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "full_name")));
    reply_free(&r);

    const char *const bad_tag[] = {"Content-Type: application/json", "If-Match: 3", NULL};
    r = call(fx, "PUT", path, fx->token_rw, "{}", (size_t)-1, bad_tag);
    assert_problem(&r, 400);
    reply_free(&r);

    r = call(fx, "PUT", "/api/v1/users/00000000-0000-4000-8000-00000000dead", fx->token_rw,
             "{\"username\":\"zed\",\"email\":\"z@example.org\"}", (size_t)-1, JSON);
    assert_problem(&r, 404);
    reply_free(&r);
    r = call(fx, "PUT", path, fx->token_rw, "{\"username\":\"ana\"}", (size_t)-1, JSON);
    assert_problem(&r, 422);
    reply_free(&r);
    reply_free(&c);
}

/* If-Match compares entity-tags byte for byte (RFC 9110 8.8.3.2): "01" is not "1". */
static void if_match_compares_the_tag_text(void **state)
{
    struct fixture *fx = *state;
    char path[128];
    struct reply c = create_ana(fx);
    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));

    const char *const padded[] = {"Content-Type: application/merge-patch+json",
                                  "If-Match: \"0001\"", NULL};
    struct reply r =
        call(fx, "PATCH", path, fx->token_rw, "{\"full_name\":\"Ana\"}", (size_t)-1, padded);
    assert_problem(&r, 412);
    reply_free(&r);
    const char *const del_padded[] = {"If-Match: \"01\"", NULL};
    r = call(fx, "DELETE", path, fx->token_rw, NULL, 0, del_padded);
    assert_problem(&r, 412);
    reply_free(&r);
    assert_int_equal(fx->repo.updates + fx->repo.removes, 0);

    const char *const exact[] = {"Content-Type: application/merge-patch+json",
                                 "If-Match: \"01\", \"1\"", NULL};
    r = call(fx, "PATCH", path, fx->token_rw, "{\"full_name\":\"Ana\"}", (size_t)-1, exact);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    reply_free(&c);
}

/* A raw control character inside a JSON string is not JSON (RFC 8259 section 7): 400,
 * whatever the field; escaped, it is text the field rules judge. */
static void raw_control_characters_in_strings_are_400(void **state)
{
    struct fixture *fx = *state;
    char path[128];

    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw,
                          "{\"username\":\"ben\",\"email\":\"ben@example.com\","
                          "\"password\":\"correct\x01horse\"}",
                          (size_t)-1, JSON);
    assert_problem(&r, 400);
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 0);

    struct reply c = create_ana(fx);
    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));
    r = call(fx, "PATCH", path, fx->token_rw, "{\"address\":\"1 Main St\nSpringfield\"}",
             (size_t)-1, JSON);
    assert_problem(&r, 400);
    reply_free(&r);
    r = call(fx, "PATCH", path, fx->token_rw, "{\"address\":\"a\tb\"}", (size_t)-1, JSON);
    assert_problem(&r, 400);
    reply_free(&r);
    assert_int_equal(fx->repo.updates, 0);

    r = call(fx, "PATCH", path, fx->token_rw, "{\"address\":\"1 Main St\\nSpringfield\"}",
             (size_t)-1, JSON);
    assert_int_equal(r.status, 200);
    assert_string_equal(jstr(&r, "address"), "1 Main St\nSpringfield");
    reply_free(&r);
    reply_free(&c);
}

/* "" for full_name or address is refused (422) instead of being stored as null: a client
 * that sends "" never reads back something else. */
static void empty_full_name_or_address_is_422(void **state)
{
    struct fixture *fx = *state;
    char path[128];

    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw,
                          "{\"username\":\"ben\",\"email\":\"ben@example.com\","
                          "\"password\":\"correct horse\",\"full_name\":\"\"}",
                          (size_t)-1, JSON);
    assert_problem(&r, 422);
    cJSON *errs = cJSON_GetObjectItem(r.json, "errors");
    assert_int_equal(cJSON_GetArraySize(errs), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "field")->valuestring,
                        "full_name");
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 0);

    struct reply c = create_ana(fx);
    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));
    r = call(fx, "PATCH", path, fx->token_rw, "{\"address\":\"\"}", (size_t)-1, JSON);
    assert_problem(&r, 422);
    errs = cJSON_GetObjectItem(r.json, "errors");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(errs, 0), "field")->valuestring,
                        "address");
    reply_free(&r);
    assert_int_equal(fx->repo.updates, 0);
    reply_free(&c);
}

static void delete_204_then_404(void **state)
{
    struct fixture *fx = *state;
    char path[128];
    struct reply c = create_ana(fx);
    snprintf(path, sizeof path, "/api/v1/users/%s", jstr(&c, "id"));

    struct reply r = call(fx, "DELETE", path, fx->token_rw, NULL, 0, NULL);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.len, 0);
    reply_free(&r);
    r = call(fx, "DELETE", path, fx->token_rw, NULL, 0, NULL);
    assert_problem(&r, 404);
    reply_free(&r);
    reply_free(&c);
}

static void other_methods_405_with_allow(void **state)
{
    struct fixture *fx = *state;
    char v[128];

    struct reply r = call(fx, "DELETE", "/api/v1/users", fx->token_rw, NULL, 0, NULL);
    assert_problem(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD, POST");
    reply_free(&r);
    r = call(fx, "POST", "/api/v1/users/00000000-0000-4000-8000-000000000001", fx->token_rw, "{}",
             (size_t)-1, JSON);
    assert_problem(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD, PUT, PATCH, DELETE");
    reply_free(&r);
    r = call(fx, "POST", "/healthz", NULL, "{}", (size_t)-1, JSON);
    assert_problem(&r, 405);
    assert_string_equal(header(&r, "Allow", v, sizeof v), "GET, HEAD");
    reply_free(&r);
}

static void list_with_paging_and_bad_params(void **state)
{
    struct fixture *fx = *state;
    char body[160], path[160];

    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof body,
                 "{\"username\":\"user%d\",\"email\":\"u%d@example.com\",\"password\":"
                 "\"long enough\"}",
                 i, i);
        struct reply c = call(fx, "POST", "/api/v1/users", fx->token_rw, body, (size_t)-1, JSON);
        assert_int_equal(c.status, 201);
        reply_free(&c);
    }
    struct reply r = call(fx, "GET", "/api/v1/users?limit=2", fx->token_ro, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "items")), 2);
    const char *next = jstr(&r, "next");
    assert_non_null(next);
    int seen = 2;
    while (next != NULL) {
        snprintf(path, sizeof path, "/api/v1/users?limit=2&after=%s", next);
        reply_free(&r);
        r = call(fx, "GET", path, fx->token_ro, NULL, 0, NULL);
        assert_int_equal(r.status, 200);
        seen += cJSON_GetArraySize(cJSON_GetObjectItem(r.json, "items"));
        next = jstr(&r, "next");
    }
    assert_int_equal(seen, 5);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.json, "next")));
    reply_free(&r);

    const char *bad[] = {"/api/v1/users?limit=0", "/api/v1/users?limit=201",
                         "/api/v1/users?limit=abc", "/api/v1/users?limit=-1",
                         "/api/v1/users?after=x%27%20OR%201=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = call(fx, "GET", bad[i], fx->token_ro, NULL, 0, NULL);
        assert_problem(&r, 400);
        reply_free(&r);
    }
}

static void store_down_503_with_retry_after_and_readyz(void **state)
{
    struct fixture *fx = *state;
    char v[32];

    struct reply r = call(fx, "GET", "/readyz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    fx->repo.fail_all = USER_REPO_UNAVAILABLE;
    r = call(fx, "GET", "/readyz", NULL, NULL, 0, NULL);
    assert_problem(&r, 503);
    reply_free(&r);
    r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, JSON);
    assert_problem(&r, 503);
    assert_string_equal(header(&r, "Retry-After", v, sizeof v), "5");
    reply_free(&r);
    r = call(fx, "GET", "/healthz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200); /* liveness does not depend on the database */
    reply_free(&r);
    fx->repo.fail_all = USER_REPO_OK;
}

static void metrics_and_openapi_need_no_token(void **state)
{
    struct fixture *fx = *state;
    char v[128];

    struct reply c = create_ana(fx);
    reply_free(&c);
    struct reply r = call(fx, "GET", "/metrics", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "userdata_http_requests_total{code=\"201\"} 1"));
    assert_non_null(strstr(r.body, "userdata_http_request_duration_seconds_count"));
    reply_free(&r);
    r = call(fx, "GET", "/openapi.yaml", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(header(&r, "Content-Type", v, sizeof v), "application/yaml");
    assert_string_equal(r.body, "openapi: 3.1.0\n");
    reply_free(&r);
    r = call(fx, "HEAD", "/healthz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    reply_free(&r);
}

static void a_busy_password_hasher_is_503_with_retry_after(void **state)
{
    struct fixture *fx = *state;
    char v[64];

    fx->hasher.busy = true;
    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, ANA, (size_t)-1, JSON);
    assert_problem(&r, 503);
    assert_string_equal(header(&r, "Retry-After", v, sizeof v), "1");
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 0);
    fx->hasher.busy = false;
    r = create_ana(fx);
    reply_free(&r);
}

/* Restarts the fixture's server with threads HTTP workers and password lanes. */
static void restart_with_lanes(struct fixture *fx, unsigned threads, unsigned lanes, unsigned queue,
                               unsigned wait_ms)
{
    http_api_stop(fx->api);
    struct http_api_config hc = api_config(0);
    hc.threads = threads;
    hc.pw_lanes = lanes;
    hc.pw_queue = queue;
    hc.pw_wait_ms = wait_ms;
    if (start_api_with(fx, &hc) != 0)
        fail_msg("http_api_start failed");
}

/* A request made on a thread of its own (no cmocka assertions there): status 0 when it
 * got no answer. */
struct bg_call {
    struct fixture *fx;
    const char *method, *path, *body;
    long status;
    char retry_after[16];
    pthread_t thread;
};

static void *bg_main(void *arg)
{
    struct bg_call *b = arg;
    struct reply r = {0};
    char url[512], auth_h[2200], v[16];
    struct curl_slist *h = NULL;
    CURL *c = curl_easy_init();

    if (c == NULL)
        return NULL;
    snprintf(url, sizeof url, "%s%s", b->fx->base, b->path);
    snprintf(auth_h, sizeof auth_h, "Authorization: Bearer %s", b->fx->token_rw);
    h = curl_slist_append(h, auth_h);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, b->method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, b->body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &b->status);
        snprintf(b->retry_after, sizeof b->retry_after, "%s",
                 header(&r, "Retry-After", v, sizeof v));
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(r.body);
    return NULL;
}

static void bg_start(struct bg_call *b, struct fixture *fx, const char *method, const char *path,
                     const char *body)
{
    memset(b, 0, sizeof *b);
    b->fx = fx;
    b->method = method;
    b->path = path;
    b->body = body;
    assert_int_equal(pthread_create(&b->thread, NULL, bg_main, b), 0);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits up to 10 s until n hashes have started. */
static void wait_hashes_started(struct fixture *fx, unsigned n)
{
    for (int i = 0; i < 1000 && fx->hasher.started < n; i++)
        sleep_ms(10);
    assert_true(fx->hasher.started >= n);
}

/* Waits up to 10 s until /metrics says n writes wait for a password lane. */
static void wait_queued(struct fixture *fx, unsigned n)
{
    char want[64];
    bool seen = false;
    snprintf(want, sizeof want, "\nuserdata_password_writes_queued %u\n", n);
    for (int i = 0; i < 1000 && !seen; i++) {
        struct reply r = call(fx, "GET", "/metrics", NULL, NULL, 0, NULL);
        seen = r.body != NULL && strstr(r.body, want) != NULL;
        reply_free(&r);
        if (!seen)
            sleep_ms(10);
    }
    assert_true(seen);
}

#define BEN "{\"username\":\"ben\",\"email\":\"ben@example.com\",\"password\":\"pass word 2\"}"
#define CAI "{\"username\":\"cai\",\"email\":\"cai@example.com\",\"password\":\"pass word 3\"}"

/* Restarts the server with one password lane, then A's create holds that lane (its hash
 * held) and B's create (b may be NULL: none) waits in the queue behind it. */
static void lane_held(struct fixture *fx, unsigned threads, unsigned queue, unsigned wait_ms,
                      struct bg_call *a, struct bg_call *b)
{
    restart_with_lanes(fx, threads, 1, queue, wait_ms);
    fx->hasher.hold = true;
    bg_start(a, fx, "POST", "/api/v1/users", ANA);
    wait_hashes_started(fx, 1);
    if (b != NULL) {
        bg_start(b, fx, "POST", "/api/v1/users", BEN);
        wait_queued(fx, 1);
    }
}

/* Lets the held hash go and waits for A's and B's answers. */
static void lane_release(struct fixture *fx, struct bg_call *a, struct bg_call *b)
{
    fx->hasher.hold = false;
    pthread_join(a->thread, NULL);
    if (b != NULL)
        pthread_join(b->thread, NULL);
}

/* Writes with a password wait for a password lane, not on an HTTP worker: with ONE worker
 * and the hash held, reads and other requests are still answered (without the lanes they
 * would wait behind the hash and time out). */
static void password_writes_do_not_hold_the_http_workers(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a, b;

    lane_held(fx, 1, 8, 60000, &a, &b);
    struct reply r = call(fx, "GET", "/api/v1/users", fx->token_ro, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    r = call(fx, "GET", "/healthz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 0);

    lane_release(fx, &a, &b);
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_int_equal(fx->repo.inserts, 2);
    wait_queued(fx, 0);
}

/* Past the queue's size, a write with a password gets 503 + Retry-After at once; the ones
 * queued are answered. */
static void a_full_password_queue_is_503_at_once(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a, b;
    char v[16];

    lane_held(fx, 2, 1, 60000, &a, &b);
    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, CAI, (size_t)-1, JSON);
    assert_problem(&r, 503);
    assert_string_equal(header(&r, "Retry-After", v, sizeof v), "1");
    reply_free(&r);

    lane_release(fx, &a, &b);
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_int_equal(fx->repo.inserts, 2);
}

static void *stop_main(void *arg);

/* While the server stops, a new write with a password is told so (503 + Retry-After) and
 * other requests are still served until the queued writes are answered. */
static void a_password_write_while_stopping_is_503(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a, b;
    pthread_t stopper;
    char v[16];

    /* A hashes (held), B fills the queue of 1: until the stop begins, C gets "too many" */
    lane_held(fx, 2, 1, 60000, &a, &b);
    assert_int_equal(pthread_create(&stopper, NULL, stop_main, fx), 0);
    struct reply r = {0};
    for (int i = 0; i < 200; i++) { /* until the stop has begun */
        reply_free(&r);
        r = call(fx, "POST", "/api/v1/users", fx->token_rw, CAI, (size_t)-1, JSON);
        if (r.body != NULL && strstr(r.body, "stopping") != NULL)
            break;
        sleep_ms(10);
    }
    assert_problem(&r, 503);
    assert_non_null(strstr(jstr(&r, "detail"), "the server is stopping"));
    assert_string_equal(header(&r, "Retry-After", v, sizeof v), "1");
    reply_free(&r);
    r = call(fx, "GET", "/healthz", NULL, NULL, 0, NULL);
    assert_int_equal(r.status, 200);
    reply_free(&r);
    lane_release(fx, &a, &b); /* answered before the stop ends */
    pthread_join(stopper, NULL);
    fx->api = NULL; /* stopped */
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_int_equal(fx->repo.inserts, 2);
}

/* The same service without lanes hashes on the worker: the fixture's other tests run
 * through a lane, this one runs the basic write paths inline. */
static void password_writes_without_lanes_run_on_the_worker(void **state)
{
    struct fixture *fx = *state;
    g_no_lanes = true;
    restart_with_conns_per_ip(fx, 0);
    g_no_lanes = false;
    struct reply r = create_ana(fx);
    reply_free(&r);
    assert_int_equal(fx->repo.inserts, 1);
    assert_int_equal(fx->hasher.hashes, 1);
}

/* A write that waited for a lane longer than pw_wait_ms gets 503 + Retry-After without
 * running (its client may have given up). */
static void a_password_write_that_waited_too_long_is_503(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a, b;

    lane_held(fx, 2, 4, 500, &a, &b);
    sleep_ms(800); /* B has waited more than 500 ms */
    lane_release(fx, &a, &b);
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 503);
    assert_string_equal(b.retry_after, "1");
    assert_int_equal(fx->repo.inserts, 1);
    assert_int_equal(fx->hasher.started, 1); /* B was not hashed */
}

static void *stop_main(void *arg)
{
    struct fixture *fx = arg;
    http_api_stop(fx->api);
    return NULL;
}

/* Stopping the server answers every write waiting for a lane (it runs them first). */
static void stopping_answers_the_queued_password_writes(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a, b;
    pthread_t stopper;

    lane_held(fx, 2, 4, 60000, &a, &b);
    assert_int_equal(pthread_create(&stopper, NULL, stop_main, fx), 0);
    sleep_ms(100); /* the stop waits for the lane */
    fx->hasher.hold = false;
    pthread_join(stopper, NULL);
    fx->api = NULL; /* stopped */
    lane_release(fx, &a, &b);
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_int_equal(fx->repo.inserts, 2);
}

/* A raw connection to the fixture's server, for what libcurl will not do (send headers and
 * wait, stream a body by hand, hold connections open). 15 s send and receive timeouts. */
static int raw_connect(struct fixture *fx)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(http_api_port(fx->api))};
    struct timeval tv = {.tv_sec = 15};

    assert_true(fd >= 0);
    assert_int_equal(inet_pton(AF_INET, "127.0.0.1", &a.sin_addr), 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return fd;
}

static bool raw_send(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads until the end of a response's headers. Returns its status code; 0 when the
 * connection was closed (or reset) before a status line; -1 on a timeout. */
static int raw_status(int fd)
{
    char buf[4096];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t n = recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK ? -1 : 0;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            break;
    }
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return 0;
    return status;
}

/* A client that waits for 100 Continue is refused at once: no 100, no body read. */
static void refusals_are_answered_from_the_headers(void **state)
{
    struct fixture *fx = *state;
    char req[4096];
    static const char id[] = "00000000-0000-4000-8000-000000000001";
    struct {
        const char *method, *path, *token;
        const char *length;
        int want;
    } cases[] = {
        {"PATCH", id, NULL, "100", 401},         {"PUT", id, "garbage", "100", 401},
        {"POST", "", fx->token_ro, "100", 403},  {"PATCH", id, fx->token_rw, "1000000000", 413},
        {"POST", "", fx->token_rw, "4097", 413}, {"DELETE", id, fx->token_rw, "5000", 413},
        {"POST", id, fx->token_rw, "100", 405},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char auth_h[2200] = "";
        if (cases[i].token != NULL)
            snprintf(auth_h, sizeof auth_h, "Authorization: Bearer %s\r\n", cases[i].token);
        int n = snprintf(req, sizeof req,
                         "%s /api/v1/users%s%s HTTP/1.1\r\nHost: t\r\n%s"
                         "Content-Type: application/json\r\nContent-Length: %s\r\n"
                         "Expect: 100-continue\r\n\r\n",
                         cases[i].method, *cases[i].path ? "/" : "", cases[i].path, auth_h,
                         cases[i].length);
        int fd = raw_connect(fx);
        assert_true(raw_send(fd, req, (size_t)n));
        int status = raw_status(fd); /* no body was sent: 100 would be followed by a wait */
        if (status != cases[i].want)
            fail_msg("case %zu (%s): got %d, want %d", i, cases[i].method, status, cases[i].want);
        close(fd);
    }
    assert_int_equal(fx->repo.inserts + fx->repo.updates + fx->repo.removes + fx->repo.finds, 0);
}

/* A client that sends its body without waiting reads its refusal after the body (an
 * answer before it would come with a closed connection, and the client, still sending,
 * would get a reset). A body a little over the limit is dropped and gets 413. The size
 * limit is the users routes': elsewhere the path or the method is what is wrong. */
static void refusals_without_expect_come_after_the_body(void **state)
{
    struct fixture *fx = *state;
    static const char id[] = "00000000-0000-4000-8000-000000000001";
    size_t blen = 3 * MAX_BODY;
    char *body = malloc(blen);
    char head[2600];
    assert_non_null(body);
    memset(body, ' ', blen);
    struct {
        const char *method, *path, *token;
        size_t len;
        int want;
    } cases[] = {
        {"PUT", "/api/v1/users/", NULL, MAX_BODY - 10, 401},
        {"POST", "/api/v1/users", fx->token_ro, MAX_BODY, 403},
        {"POST", "/api/v1/users", fx->token_rw, 3 * MAX_BODY, 413},
        {"POST", "/nope", NULL, 3 * MAX_BODY, 404},
        {"POST", "/healthz", NULL, 3 * MAX_BODY, 405},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char auth_h[2200] = "";
        if (cases[i].token != NULL)
            snprintf(auth_h, sizeof auth_h, "Authorization: Bearer %s\r\n", cases[i].token);
        int n =
            snprintf(head, sizeof head,
                     "%s %s%s HTTP/1.1\r\nHost: t\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     cases[i].method, cases[i].path,
                     strcmp(cases[i].path, "/api/v1/users/") == 0 ? id : "", auth_h, cases[i].len);
        int fd = raw_connect(fx);
        assert_true(raw_send(fd, head, (size_t)n));
        /* a first piece smaller than the limit, then the rest: the server meets the body
         * in parts, as it does from a real client */
        assert_true(raw_send(fd, body, 100));
        usleep(20 * 1000);
        assert_true(raw_send(fd, body + 100, cases[i].len - 100));
        int status = raw_status(fd);
        if (status != cases[i].want)
            fail_msg("case %zu (%s %s): got %d, want %d", i, cases[i].method, cases[i].path, status,
                     cases[i].want);
        close(fd);
    }
    free(body);
    assert_int_equal(fx->repo.inserts + fx->repo.updates, 0);
}

/* userdata_http_request_body_bytes from /metrics; -1 when absent. */
static long long body_bytes(struct fixture *fx)
{
    long long v = -1;
    struct reply r = call(fx, "GET", "/metrics", NULL, NULL, 0, NULL);
    const char *p = r.body != NULL ? strstr(r.body, "\nuserdata_http_request_body_bytes ") : NULL;
    if (p != NULL)
        v = strtoll(p + strlen("\nuserdata_http_request_body_bytes "), NULL, 10);
    reply_free(&r);
    return v;
}

#define USER_1 "/api/v1/users/00000000-0000-4000-8000-000000000001"

/* Opens a connection and sends a request's headers and the first 100 bytes of a body of
 * MAX_BODY - 10 bytes; the rest comes with finish_put. */
static int start_put(struct fixture *fx, const char *method, const char *path, const char *token,
                     char *body)
{
    char head[2600], auth_h[2200] = "";
    if (token != NULL)
        snprintf(auth_h, sizeof auth_h, "Authorization: Bearer %s\r\n", token);
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\n"
                     "Host: t\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                     method, path, auth_h, MAX_BODY - 10);
    int fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    assert_true(raw_send(fd, body, 100));
    return fd;
}

static int finish_put(int fd, char *body)
{
    assert_true(raw_send(fd, body + 100, MAX_BODY - 10 - 100));
    int status = raw_status(fd);
    close(fd);
    return status;
}

/* A body that will never be read is dropped as it comes, not held until the answer at its
 * end: a users route's request refused from its headers (no token here) and one to any
 * other path (which reads no body), so that clients without a token cannot make the server
 * hold a body each. The gauge of held body bytes shows it, with a request that has a token
 * as the control. One HTTP worker: the pieces sent before the control's are handled before
 * the gauge, read after it, is answered. */
static void a_refused_requests_body_is_not_held(void **state)
{
    struct fixture *fx = *state;
    char *body = malloc(MAX_BODY);
    assert_non_null(body);
    memset(body, ' ', MAX_BODY);

    restart_with_lanes(fx, 1, 1, 4, 5000);
    assert_int_equal(body_bytes(fx), 0);
    int refused = start_put(fx, "PUT", USER_1, NULL, body);
    int other = start_put(fx, "POST", "/nope", NULL, body);
    int get = start_put(fx, "GET", "/api/v1/users", fx->token_rw, body); /* reads none */
    int held = start_put(fx, "PUT", USER_1, fx->token_rw, body);
    long long v = 0;
    for (int i = 0; i < 500 && v < 1024; i++) { /* the control's first piece is in */
        v = body_bytes(fx);
        if (v < 1024)
            sleep_ms(10);
    }
    v = body_bytes(fx);
    assert_int_equal(finish_put(refused, body), 401);
    assert_int_equal(finish_put(other, body), 404);
    assert_int_equal(finish_put(get, body), 200);
    assert_int_equal(finish_put(held, body), 400); /* spaces: not a JSON object */
    free(body);
    /* 1024: the control's buffer alone (4096 when the others were held as well) */
    assert_int_equal(v, 1024);
    for (int i = 0; i < 500 && body_bytes(fx) != 0; i++)
        sleep_ms(10);
    assert_int_equal(body_bytes(fx), 0);
}

/* The same for a client that waits for 100 Continue: a GET let go on from its headers
 * still reads no body, so what it sends after the 100 is dropped, not held. */
static void a_get_body_after_100_continue_is_not_held(void **state)
{
    struct fixture *fx = *state;
    char head[2600];
    char *body = malloc(MAX_BODY);
    assert_non_null(body);
    memset(body, ' ', MAX_BODY);

    restart_with_lanes(fx, 1, 1, 4, 5000); /* one worker: /metrics comes after the piece */
    int n = snprintf(head, sizeof head,
                     "GET /api/v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n",
                     fx->token_rw, MAX_BODY - 10);
    int fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    assert_int_equal(raw_status(fd), 100);
    assert_true(raw_send(fd, body, 100));
    sleep_ms(50);
    long long v = body_bytes(fx);
    assert_int_equal(finish_put(fd, body), 200);
    free(body);
    assert_int_equal(v, 0);
}

/* The refusal of the headers stands: a token that turns valid while its body comes (its
 * nbf passes) does not get the request run on a body that was dropped. */
static void a_token_valid_only_by_the_end_of_the_body_is_refused(void **state)
{
    struct fixture *fx = *state;
    char token[2048];
    char *body = malloc(MAX_BODY);
    assert_non_null(body);
    memset(body, ' ', MAX_BODY);
    memcpy(body, "{\"username\":\"ben\"}", 18);

    mint_not_before(7, token, sizeof token); /* valid 2 s from now, with the 5 s leeway */
    int fd = start_put(fx, "POST", "/api/v1/users", token, body);
    sleep_ms(3500);
    assert_int_equal(finish_put(fd, body), 401);
    free(body);
    assert_int_equal(fx->repo.inserts, 0);
}

/* A request that ends without an answer (its client went away in the middle of its body)
 * is counted as code="none", not lumped with unknown codes as "other". */
static void a_request_left_without_an_answer_counts_as_none(void **state)
{
    struct fixture *fx = *state;
    char *body = malloc(MAX_BODY);
    assert_non_null(body);
    memset(body, ' ', MAX_BODY);
    int fd = start_put(fx, "PUT", USER_1, fx->token_rw, body);
    sleep_ms(100);
    close(fd);
    free(body);
    bool seen = false;
    char last[64] = "";
    for (int i = 0; i < 500 && !seen; i++) {
        struct reply r = call(fx, "GET", "/metrics", NULL, NULL, 0, NULL);
        seen = r.body != NULL &&
               strstr(r.body, "\nuserdata_http_requests_total{code=\"none\"} 1\n") != NULL;
        const char *o = r.body != NULL ? strstr(r.body, "{code=\"other\"}") : NULL;
        snprintf(last, sizeof last, "%.30s", o != NULL ? o : "(no other)");
        reply_free(&r);
        if (!seen)
            sleep_ms(10);
    }
    if (!seen)
        fail_msg("no code=\"none\" count; %s", last);

    /* A malformed chunk is answered by libmicrohttpd itself (400): a code of its own, not
     * "none" (the client got an answer). */
    static const char bad[] = "POST /api/v1/users HTTP/1.1\r\nHost: t\r\n"
                              "Transfer-Encoding: chunked\r\n\r\nZZZZ\r\n";
    fd = raw_connect(fx);
    assert_true(raw_send(fd, bad, sizeof bad - 1));
    assert_int_equal(raw_status(fd), 400);
    close(fd);
    seen = false;
    for (int i = 0; i < 500 && !seen; i++) {
        struct reply r = call(fx, "GET", "/metrics", NULL, NULL, 0, NULL);
        seen = r.body != NULL &&
               strstr(r.body, "\nuserdata_http_requests_total{code=\"other\"} 1\n") != NULL;
        if (seen)
            assert_non_null(strstr(r.body, "\nuserdata_http_requests_total{code=\"none\"} 1\n"));
        reply_free(&r);
        if (!seen)
            sleep_ms(10);
    }
    assert_true(seen);
}

/* The paths other than the users routes read no body: a huge declared one, or a client
 * waiting for 100 Continue, gets their answer at once (it used to get none: the server
 * waited for a body it would drop, then closed). */
static void other_paths_answer_a_declared_body_at_once(void **state)
{
    struct fixture *fx = *state;
    struct {
        const char *head;
        int want;
    } cases[] = {
        {"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n", 405},
        {"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n", 404},
        {"PUT /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
         "Expect: 100-continue\r\n\r\n",
         405},
        {"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
         "Expect: 100-continue\r\n\r\n",
         404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = raw_connect(fx);
        assert_true(raw_send(fd, cases[i].head, strlen(cases[i].head)));
        int status = raw_status(fd); /* no body is sent */
        close(fd);
        if (status != cases[i].want)
            fail_msg("case %zu: got %d, want %d", i, status, cases[i].want);
    }
}

/* A chunked body declares no size: a little too much gets 413 at its end; a body that
 * goes on far past the limit (8 MiB) has its connection closed. */
static void a_chunked_body_over_the_limit_is_413_or_closed_when_far_over(void **state)
{
    struct fixture *fx = *state;
    char head[2400], chunk[1024 + 16];
    int fd = raw_connect(fx);
    int n = snprintf(head, sizeof head,
                     "POST /api/v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                     fx->token_rw);
    size_t clen = (size_t)snprintf(chunk, sizeof chunk, "400\r\n");
    memset(chunk + clen, ' ', 1024);
    clen += 1024;
    memcpy(chunk + clen, "\r\n", 2);
    clen += 2;

    /* twice the limit: read to its end, then 413 */
    assert_true(raw_send(fd, head, (size_t)n));
    for (int i = 0; i < 2 * MAX_BODY / 1024; i++)
        assert_true(raw_send(fd, chunk, clen));
    assert_true(raw_send(fd, "0\r\n\r\n", 5));
    assert_int_equal(raw_status(fd), 413);
    close(fd);

    fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    size_t sent = 0, cap = 64u * 1024 * 1024; /* 16384 times the limit */
    while (sent < cap && raw_send(fd, chunk, clen))
        sent += 1024;
    /* closed at 8 MiB past the limit; what the socket buffers took on top stays far
     * below 32 MiB */
    if (sent >= 32u * 1024 * 1024) {
        /* every byte was taken: finish the body and see what comes back */
        raw_send(fd, "0\r\n\r\n", 5);
        fail_msg("the server read a %zu-byte chunked body (limit %d) and answered %d", sent,
                 MAX_BODY, raw_status(fd));
    }
    assert_int_equal(raw_status(fd), 0); /* closed, no answer */
    close(fd);
    assert_int_equal(fx->repo.inserts, 0);

    /* the server goes on */
    struct reply r = create_ana(fx);
    reply_free(&r);
}

/* Reads what is left of a response until the server closes the connection: true when it
 * does (within the 15 s receive timeout), false when it keeps it open. */
static bool raw_closed(int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            return true;
        if (n < 0)
            return false;
    }
}

/* Transfer-Encoding and Content-Length together: two framings that a proxy and the server
 * could read differently (request smuggling). RFC 9112 6.3 says such a message ought to be
 * handled as an error and 6.1 that the connection must be closed after the answer: 400,
 * then close, whatever the declared length (never a 413 from a Content-Length that does
 * not frame the body). */
static void transfer_encoding_with_content_length_is_400_then_closed(void **state)
{
    struct fixture *fx = *state;
    char head[2600];
    static const char body[] = "2\r\n{}\r\n0\r\n\r\n";
    const char *const lengths[] = {"99999999", "2", "13"};

    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        int n = snprintf(head, sizeof head,
                         "POST /api/v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                         "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                         "Content-Length: %s\r\n\r\n",
                         fx->token_rw, lengths[i]);
        int fd = raw_connect(fx);
        assert_true(raw_send(fd, head, (size_t)n));
        assert_true(raw_send(fd, body, sizeof body - 1));
        int status = raw_status(fd);
        if (status != 400)
            fail_msg("Content-Length %s: got %d, want 400", lengths[i], status);
        assert_true(raw_closed(fd));
        close(fd);
    }

    /* A client that waits for 100 Continue gets its 400 at once, and sends no body. */
    int n = snprintf(head, sizeof head,
                     "PATCH /api/v1/users/00000000-0000-4000-8000-000000000001 HTTP/1.1\r\n"
                     "Host: t\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"
                     "Expect: 100-continue\r\n\r\n",
                     fx->token_rw);
    int fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    assert_int_equal(raw_status(fd), 400);
    assert_true(raw_closed(fd));
    close(fd);
    assert_int_equal(fx->repo.inserts + fx->repo.updates + fx->repo.finds, 0);

    /* chunked alone is fine */
    n = snprintf(head, sizeof head,
                 "POST /api/v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "%zx\r\n%s\r\n0\r\n\r\n",
                 fx->token_rw, strlen(ANA), ANA);
    fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    assert_int_equal(raw_status(fd), 201);
    close(fd);
}

/* Keep-alive connections held open by one address: the one past the limit is closed. */
static void one_address_holds_at_most_its_connection_limit(void **state)
{
    struct fixture *fx = *state;
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    int held[3];

    restart_with_conns_per_ip(fx, 3);
    for (size_t i = 0; i < 3; i++) {
        held[i] = raw_connect(fx);
        assert_true(raw_send(held[i], get, sizeof get - 1));
        assert_int_equal(raw_status(held[i]), 200);
    }
    int extra = raw_connect(fx); /* the kernel accepts it; the server closes it */
    raw_send(extra, get, sizeof get - 1);
    assert_int_equal(raw_status(extra), 0);
    close(extra);

    /* one is given back: a new connection is served (once the server saw the close) */
    close(held[0]);
    int status = 0;
    for (int tries = 0; tries < 50 && status != 200; tries++) {
        int fd = raw_connect(fx);
        raw_send(fd, get, sizeof get - 1);
        status = raw_status(fd);
        close(fd);
        if (status != 200)
            usleep(100 * 1000);
    }
    assert_int_equal(status, 200);
    close(held[1]);
    close(held[2]);
}

/* A client that goes away while its write with a password waits for a lane: the write is
 * done all the same (as any write whose client leaves; a WARN line says so), nothing is
 * held or leaked, and the server answers on and stops cleanly. */
static void a_client_gone_while_its_password_write_waits(void **state)
{
    struct fixture *fx = *state;
    struct bg_call a;
    char head[2600];

    lane_held(fx, 2, 4, 60000, &a, NULL);
    int n = snprintf(head, sizeof head,
                     "POST /api/v1/users HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     fx->token_rw, strlen(BEN), BEN);
    int fd = raw_connect(fx);
    assert_true(raw_send(fd, head, (size_t)n));
    wait_queued(fx, 1);
    close(fd); /* gone before its answer */
    lane_release(fx, &a, NULL);
    assert_int_equal(a.status, 201);
    for (int i = 0; i < 500 && fx->repo.inserts < 2; i++)
        sleep_ms(10);
    assert_int_equal(fx->repo.inserts, 2);
    wait_queued(fx, 0);
    struct reply r = call(fx, "POST", "/api/v1/users", fx->token_rw, CAI, (size_t)-1, JSON);
    assert_int_equal(r.status, 201);
    reply_free(&r);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    log_init("test", LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_returns_201_location_etag_and_no_hash, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(get_one_and_404, setup, teardown),
        cmocka_unit_test_setup_teardown(auth_401_and_403, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_bodies_400_413_415_422, setup, teardown),
        cmocka_unit_test_setup_teardown(duplicate_is_409, setup, teardown),
        cmocka_unit_test_setup_teardown(put_patch_if_match_412_and_etag, setup, teardown),
        cmocka_unit_test_setup_teardown(if_match_compares_the_tag_text, setup, teardown),
        cmocka_unit_test_setup_teardown(raw_control_characters_in_strings_are_400, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_full_name_or_address_is_422, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_204_then_404, setup, teardown),
        cmocka_unit_test_setup_teardown(other_methods_405_with_allow, setup, teardown),
        cmocka_unit_test_setup_teardown(list_with_paging_and_bad_params, setup, teardown),
        cmocka_unit_test_setup_teardown(store_down_503_with_retry_after_and_readyz, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(metrics_and_openapi_need_no_token, setup, teardown),
        cmocka_unit_test_setup_teardown(a_refused_requests_body_is_not_held, setup, teardown),
        cmocka_unit_test_setup_teardown(a_get_body_after_100_continue_is_not_held, setup, teardown),
        cmocka_unit_test_setup_teardown(a_token_valid_only_by_the_end_of_the_body_is_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_request_left_without_an_answer_counts_as_none, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(other_paths_answer_a_declared_body_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(password_writes_do_not_hold_the_http_workers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_full_password_queue_is_503_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(a_password_write_that_waited_too_long_is_503, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(stopping_answers_the_queued_password_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_password_write_while_stopping_is_503, setup, teardown),
        cmocka_unit_test_setup_teardown(a_client_gone_while_its_password_write_waits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(password_writes_without_lanes_run_on_the_worker, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_busy_password_hasher_is_503_with_retry_after, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(refusals_are_answered_from_the_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(refusals_without_expect_come_after_the_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            a_chunked_body_over_the_limit_is_413_or_closed_when_far_over, setup, teardown),
        cmocka_unit_test_setup_teardown(transfer_encoding_with_content_length_is_400_then_closed,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(one_address_holds_at_most_its_connection_limit, setup,
                                        teardown),
    };
    int rc = cmocka_run_group_tests_name("userdata HTTP API", tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
