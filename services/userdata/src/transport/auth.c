/* auth: verifies the Bearer JWTs of requests (HS256 or RS256, exp, aud, scopes). */
#include "auth.h"

#include <cjson/cJSON.h>
#include <jwt.h>
#include <sodium.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define AUTH_HS256_MIN_SECRET 32

static const char PEM_PUBLIC[] = "-----BEGIN PUBLIC KEY-----";
static const char PEM_RSA_PUBLIC[] = "-----BEGIN RSA PUBLIC KEY-----";

/* Immutable after auth_new but for the cache (which has its own lock), so one instance
 * serves every request thread. */
/* Verified tokens, so that a client sending the same token again costs one lookup and
 * not a decode plus an HMAC or RSA check (most of a request's CPU otherwise). A token is
 * cached only after every check but the scope passed; a hit re-checks expiry and the
 * scope. Keyed by the exact token text: any other byte is a miss and a full check. */
#define AUTH_CACHE_SLOTS     256
#define AUTH_CACHE_TOKEN_MAX 2048
#define AUTH_CACHE_SCOPE_MAX 512
struct auth_cache_entry {
    char *token; /* malloc'd; NULL = empty slot */
    double exp;
    char scope[AUTH_CACHE_SCOPE_MAX]; /* the granted "scope" claim, "" when none */
};
struct auth_cache {
    pthread_mutex_t lock;
    struct auth_cache_entry slots[AUTH_CACHE_SLOTS];
};

struct auth {
    struct auth_cache *cache; /* mutable behind a const struct auth */
    enum auth_alg alg;
    unsigned char *key; /* NUL-terminated copy, key_len bytes before the NUL */
    size_t key_len;
    char *audience;
    char *issuer; /* NULL: not checked */
    long leeway_s;
};

static void set_msg(char *buf, size_t len, const char *msg)
{
    if (buf != NULL && len > 0) {
        snprintf(buf, len, "%s", msg);
    }
}

static bool has_prefix(const unsigned char *key, size_t key_len, const char *prefix)
{
    size_t n = strlen(prefix);
    return key_len >= n && memcmp(key, prefix, n) == 0;
}

static bool contains(const unsigned char *hay, size_t hay_len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n <= hay_len && i <= hay_len - n; i++) {
        if (memcmp(hay + i, needle, n) == 0) {
            return true;
        }
    }
    return false;
}

static jwt_alg_t to_jwt_alg(enum auth_alg alg)
{
    return alg == AUTH_RS256 ? JWT_ALG_RS256 : JWT_ALG_HS256;
}

/* Checks the verification key of cfg; returns a reason or NULL when usable. */
static const char *verify_key_problem(const struct auth_config *cfg)
{
    if (cfg->key == NULL || cfg->key_len == 0) {
        return "auth: no key configured";
    }
    if (cfg->key_len > INT_MAX) {
        return "auth: key too large";
    }
    switch (cfg->alg) {
    case AUTH_HS256:
        if (cfg->key_len < AUTH_HS256_MIN_SECRET) {
            return "auth: HS256 secret must be at least 32 bytes";
        }
        return NULL;
    case AUTH_RS256:
        if (contains(cfg->key, cfg->key_len, "PRIVATE KEY")) {
            return "auth: RS256 verification key must be a PEM public key, not a private key";
        }
        if (!has_prefix(cfg->key, cfg->key_len, PEM_PUBLIC) &&
            !has_prefix(cfg->key, cfg->key_len, PEM_RSA_PUBLIC)) {
            return "auth: RS256 key must be a PEM public key (-----BEGIN PUBLIC KEY-----)";
        }
        return NULL;
    }
    return "auth: unknown algorithm";
}

struct auth *auth_new(const struct auth_config *cfg, char *errstr, size_t errlen)
{
    struct auth *a = NULL;
    const char *problem = NULL;

    if (cfg == NULL) {
        set_msg(errstr, errlen, "auth: no configuration");
        goto fail;
    }
    problem = verify_key_problem(cfg);
    if (problem != NULL) {
        set_msg(errstr, errlen, problem);
        goto fail;
    }
    if (cfg->audience == NULL || cfg->audience[0] == '\0') {
        set_msg(errstr, errlen, "auth: audience is required");
        goto fail;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > 86400) {
        set_msg(errstr, errlen, "auth: leeway must be between 0 and 86400 seconds");
        goto fail;
    }

    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        goto oom;
    }
    a->alg = cfg->alg;
    a->leeway_s = cfg->leeway_s;
    a->key_len = cfg->key_len;
    a->key = malloc(cfg->key_len + 1);
    if (a->key == NULL) {
        goto oom;
    }
    memcpy(a->key, cfg->key, cfg->key_len);
    a->key[cfg->key_len] = '\0';
    a->audience = strdup(cfg->audience);
    if (a->audience == NULL) {
        goto oom;
    }
    if (cfg->issuer != NULL) {
        a->issuer = strdup(cfg->issuer);
        if (a->issuer == NULL) {
            goto oom;
        }
    }
    a->cache = calloc(1, sizeof(*a->cache));
    if (a->cache == NULL) {
        goto oom;
    }
    pthread_mutex_init(&a->cache->lock, NULL);
    return a;

oom:
    set_msg(errstr, errlen, "auth: out of memory");
fail:
    auth_free(a);
    return NULL;
}

void auth_free(struct auth *a)
{
    if (a == NULL) {
        return;
    }
    if (a->key != NULL) {
        /* The HS256 secret should not linger in freed memory. */
        volatile unsigned char *p = a->key;
        for (size_t i = 0; i < a->key_len; i++) {
            p[i] = 0;
        }
    }
    if (a->cache != NULL) {
        for (size_t i = 0; i < AUTH_CACHE_SLOTS; i++) {
            free(a->cache->slots[i].token);
        }
        pthread_mutex_destroy(&a->cache->lock);
        free(a->cache);
    }
    free(a->key);
    free(a->audience);
    free(a->issuer);
    free(a);
}

static bool is_token_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

/* Returns the token inside "Bearer <token>" or NULL when the header is not of that form:
 * scheme case-insensitive, one run of spaces, then base64url segments joined by dots. */
static const char *bearer_token(const char *header)
{
    static const char scheme[] = "Bearer";
    const size_t scheme_len = sizeof(scheme) - 1;
    const char *p = NULL;
    const char *token = NULL;
    size_t dots = 0;

    if (strncasecmp(header, scheme, scheme_len) != 0 || header[scheme_len] != ' ') {
        return NULL;
    }
    p = header + scheme_len;
    while (*p == ' ') {
        p++;
    }
    token = p;
    for (; *p != '\0'; p++) {
        if (!is_token_char(*p)) {
            return NULL;
        }
        if (*p == '.') {
            dots++;
        }
    }
    /* A JWS in compact form is exactly header.payload.signature. */
    if (p == token || dots != 2) {
        return NULL;
    }
    return token;
}

/* A NumericDate claim: absent → *present = false; present but not a finite number → false. */
static bool numeric_date(const cJSON *claims, const char *name, bool *present, double *value)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(claims, name);
    *present = item != NULL;
    if (item == NULL) {
        return true;
    }
    if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble)) {
        return false;
    }
    *value = item->valuedouble;
    return true;
}

static bool audience_matches(const cJSON *aud, const char *audience)
{
    const cJSON *elem = NULL;

    if (cJSON_IsString(aud)) {
        return strcmp(aud->valuestring, audience) == 0;
    }
    if (!cJSON_IsArray(aud)) {
        return false;
    }
    cJSON_ArrayForEach(elem, aud)
    {
        if (cJSON_IsString(elem) && strcmp(elem->valuestring, audience) == 0) {
            return true;
        }
    }
    return false;
}

/* True when the space-separated list holds scope as one whole entry. */
static bool scope_listed(const char *list, const char *scope)
{
    size_t want = strlen(scope);
    const char *p = list;

    while (*p != '\0') {
        size_t n = 0;
        while (*p == ' ') {
            p++;
        }
        while (p[n] != '\0' && p[n] != ' ') {
            n++;
        }
        if (n > 0 && n == want && memcmp(p, scope, n) == 0) {
            return true;
        }
        p += n;
    }
    return false;
}

/* Validates the registered claims and the scope; fills why. */
static enum auth_result check_claims(const struct auth *a, const cJSON *claims, const char *scope,
                                     char *why, size_t whylen)
{
    const double now = (double)time(NULL);
    const double leeway = (double)a->leeway_s;
    bool present = false;
    double t = 0;
    const cJSON *aud = NULL;
    const cJSON *iss = NULL;
    const cJSON *granted = NULL;

    if (!numeric_date(claims, "exp", &present, &t) || !present) {
        set_msg(why, whylen, "missing or invalid exp");
        return AUTH_INVALID;
    }
    if (now > t + leeway) {
        set_msg(why, whylen, "token expired");
        return AUTH_INVALID;
    }
    if (!numeric_date(claims, "nbf", &present, &t)) {
        set_msg(why, whylen, "invalid nbf");
        return AUTH_INVALID;
    }
    if (present && now + leeway < t) {
        set_msg(why, whylen, "token not yet valid");
        return AUTH_INVALID;
    }
    if (!numeric_date(claims, "iat", &present, &t)) {
        set_msg(why, whylen, "invalid iat");
        return AUTH_INVALID;
    }
    if (present && t > now + leeway) {
        set_msg(why, whylen, "token issued in the future");
        return AUTH_INVALID;
    }

    aud = cJSON_GetObjectItemCaseSensitive(claims, "aud");
    if (aud == NULL) {
        set_msg(why, whylen, "missing audience");
        return AUTH_INVALID;
    }
    if (!audience_matches(aud, a->audience)) {
        set_msg(why, whylen, "wrong audience");
        return AUTH_INVALID;
    }

    if (a->issuer != NULL) {
        iss = cJSON_GetObjectItemCaseSensitive(claims, "iss");
        if (!cJSON_IsString(iss) || strcmp(iss->valuestring, a->issuer) != 0) {
            set_msg(why, whylen, "wrong issuer");
            return AUTH_INVALID;
        }
    }

    if (scope != NULL && scope[0] != '\0') {
        granted = cJSON_GetObjectItemCaseSensitive(claims, "scope");
        if (!cJSON_IsString(granted) || !scope_listed(granted->valuestring, scope)) {
            if (why != NULL && whylen > 0) {
                snprintf(why, whylen, "missing scope %s", scope);
            }
            return AUTH_FORBIDDEN;
        }
    }
    set_msg(why, whylen, "ok");
    return AUTH_OK;
}

static size_t cache_slot(const char *token)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)token; *p; p++) {
        h = (h ^ *p) * 1099511628211ULL;
    }
    return (size_t)(h % AUTH_CACHE_SLOTS);
}

/* Looks token up; on a hit copies its expiry and scope out and returns true. */
static bool cache_get(const struct auth *a, const char *token, double *exp, char *scope,
                      size_t scope_len)
{
    struct auth_cache_entry *e = &a->cache->slots[cache_slot(token)];
    bool hit = false;

    pthread_mutex_lock(&a->cache->lock);
    /* Constant time: how long a comparison takes must not tell how much of a cached
     * (valid) token a guess got right. Lengths are no secret. */
    if (e->token != NULL && strlen(e->token) == strlen(token) &&
        sodium_memcmp(e->token, token, strlen(token)) == 0) {
        *exp = e->exp;
        snprintf(scope, scope_len, "%s", e->scope);
        hit = true;
    }
    pthread_mutex_unlock(&a->cache->lock);
    return hit;
}

static void cache_put(const struct auth *a, const char *token, const cJSON *claims)
{
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(claims, "exp");
    const cJSON *granted = cJSON_GetObjectItemCaseSensitive(claims, "scope");
    const char *scope = cJSON_IsString(granted) ? granted->valuestring : "";
    struct auth_cache_entry *e = &a->cache->slots[cache_slot(token)];
    char *copy = NULL;

    if (!cJSON_IsNumber(exp) || strlen(token) > AUTH_CACHE_TOKEN_MAX ||
        strlen(scope) >= AUTH_CACHE_SCOPE_MAX) {
        return;
    }
    copy = strdup(token);
    if (copy == NULL) {
        return;
    }
    pthread_mutex_lock(&a->cache->lock);
    free(e->token); /* the slot's previous token, if any, is forgotten */
    e->token = copy;
    e->exp = exp->valuedouble;
    snprintf(e->scope, sizeof(e->scope), "%s", scope);
    pthread_mutex_unlock(&a->cache->lock);
}

enum auth_result auth_check(const struct auth *a, const char *authorization, const char *scope,
                            char *why, size_t whylen)
{
    enum auth_result res = AUTH_INVALID;
    const char *token = NULL;
    jwt_t *jwt = NULL;
    char *claims_json = NULL;
    cJSON *claims = NULL;

    if (authorization == NULL) {
        set_msg(why, whylen, "missing bearer token");
        return AUTH_MISSING;
    }
    if (strnlen(authorization, AUTH_MAX_HEADER + 1) > AUTH_MAX_HEADER) {
        set_msg(why, whylen, "authorization header too long");
        return AUTH_INVALID;
    }
    token = bearer_token(authorization);
    if (token == NULL) {
        set_msg(why, whylen, "malformed bearer token");
        return AUTH_INVALID;
    }

    {
        double exp = 0;
        char granted[AUTH_CACHE_SCOPE_MAX];
        if (cache_get(a, token, &exp, granted, sizeof(granted))) {
            if ((double)time(NULL) > exp + (double)a->leeway_s) {
                set_msg(why, whylen, "token expired");
                return AUTH_INVALID;
            }
            if (scope != NULL && scope[0] != '\0' && !scope_listed(granted, scope)) {
                if (why != NULL && whylen > 0) {
                    snprintf(why, whylen, "missing scope %s", scope);
                }
                return AUTH_FORBIDDEN;
            }
            set_msg(why, whylen, "ok");
            return AUTH_OK;
        }
    }

    /* libjwt 1.10 verifies with whatever alg the token's header names, using our key as
     * that alg's key: an HS256 token keyed with the RSA public key bytes verifies. Only
     * the alg check below stops that (and "none", which libjwt refuses when a key is
     * given, but we do not rely on it). */
    if (jwt_decode(&jwt, token, a->key, (int)a->key_len) != 0 || jwt == NULL) {
        set_msg(why, whylen, "bad signature or malformed token");
        goto out;
    }
    if (jwt_get_alg(jwt) != to_jwt_alg(a->alg)) {
        set_msg(why, whylen, "unexpected algorithm");
        goto out;
    }

    /* The claims re-serialized by libjwt (jansson): one parse, no duplicate keys, and
     * typed access that jwt_get_grant/_int cannot give (arrays, missing vs zero). */
    claims_json = jwt_get_grants_json(jwt, NULL);
    if (claims_json == NULL) {
        set_msg(why, whylen, "malformed claims");
        goto out;
    }
    claims = cJSON_Parse(claims_json);
    if (!cJSON_IsObject(claims)) {
        set_msg(why, whylen, "malformed claims");
        goto out;
    }
    res = check_claims(a, claims, scope, why, whylen);
    if (res == AUTH_OK || res == AUTH_FORBIDDEN) {
        cache_put(a, token, claims); /* valid in all but (maybe) the scope asked now */
    }

out:
    cJSON_Delete(claims);
    free(claims_json); /* libjwt 1.10 has no jwt_free_str: its strings come from malloc */
    if (jwt != NULL) {
        jwt_free(jwt);
    }
    return res;
}

int auth_mint(const struct auth_config *cfg, const char *subject, const char *scope, long ttl_s,
              char **token, char *errstr, size_t errlen)
{
    int rc = -1;
    jwt_t *jwt = NULL;
    char *encoded = NULL;
    time_t now = time(NULL);

    if (token != NULL) {
        *token = NULL;
    }
    if (cfg == NULL || token == NULL || subject == NULL || ttl_s <= 0) {
        set_msg(errstr, errlen, "auth_mint: bad arguments");
        goto out;
    }
    if (cfg->key == NULL || cfg->key_len == 0 || cfg->key_len > INT_MAX) {
        set_msg(errstr, errlen, "auth_mint: no usable key");
        goto out;
    }
    if (cfg->alg == AUTH_HS256 && cfg->key_len < AUTH_HS256_MIN_SECRET) {
        set_msg(errstr, errlen, "auth_mint: HS256 secret must be at least 32 bytes");
        goto out;
    }
    if (cfg->audience == NULL || cfg->audience[0] == '\0') {
        set_msg(errstr, errlen, "auth_mint: audience is required");
        goto out;
    }
    if (ttl_s > LONG_MAX - (long)now) {
        set_msg(errstr, errlen, "auth_mint: ttl too large");
        goto out;
    }
    if (jwt_new(&jwt) != 0) {
        set_msg(errstr, errlen, "auth_mint: out of memory");
        goto out;
    }
    if (jwt_add_grant(jwt, "sub", subject) != 0 || jwt_add_grant(jwt, "aud", cfg->audience) != 0 ||
        (cfg->issuer != NULL && jwt_add_grant(jwt, "iss", cfg->issuer) != 0) ||
        (scope != NULL && jwt_add_grant(jwt, "scope", scope) != 0) ||
        jwt_add_grant_int(jwt, "iat", (long)now) != 0 ||
        jwt_add_grant_int(jwt, "exp", (long)now + ttl_s) != 0) {
        set_msg(errstr, errlen, "auth_mint: cannot add claims");
        goto out;
    }
    if (jwt_set_alg(jwt, to_jwt_alg(cfg->alg), cfg->key, (int)cfg->key_len) != 0) {
        set_msg(errstr, errlen, "auth_mint: key rejected by libjwt");
        goto out;
    }
    encoded = jwt_encode_str(jwt);
    if (encoded == NULL) {
        /* For RS256 this is where an unusable private key shows up. */
        set_msg(errstr, errlen, "auth_mint: signing failed (is the key a PEM private key?)");
        goto out;
    }
    *token = strdup(encoded);
    if (*token == NULL) {
        set_msg(errstr, errlen, "auth_mint: out of memory");
        goto out;
    }
    rc = 0;

out:
    free(encoded); /* libjwt 1.10: malloc'd, no jwt_free_str in this version */
    if (jwt != NULL) {
        jwt_free(jwt);
    }
    return rc;
}
