/* test_auth: the Bearer JWT checks of userdata (transport/auth.c) against tokens made
 * with libjwt directly, including hostile ones (alg none, alg confusion, wrong keys). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jwt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "transport/auth.h"

#ifndef TEST_KEYS_DIR
#error "TEST_KEYS_DIR must name the directory of the test keys"
#endif

#define SECRET       "0123456789abcdef0123456789abcdef-test-only"
#define OTHER_SECRET "fedcba9876543210fedcba9876543210-test-only"
#define AUDIENCE     "userdata"
#define ISSUER       "https://issuer.test"

struct keys {
    char *pub;
    size_t pub_len;
    char *pub_pkcs1;
    size_t pub_pkcs1_len;
    char *priv;
    size_t priv_len;
    char *other_pub;
    size_t other_pub_len;
    char *other_priv;
    size_t other_priv_len;
};

/* Reads a whole key file; the result is malloc'd, NUL-terminated, freed by the caller. */
static char *read_key(const char *name, size_t *len)
{
    char path[512];
    FILE *f = NULL;
    char *buf = NULL;
    long size = 0;

    snprintf(path, sizeof(path), "%s/%s", TEST_KEYS_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    size = ftell(f);
    assert_true(size > 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    buf[size] = '\0';
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static int setup_keys(void **state)
{
    struct keys *k = calloc(1, sizeof(*k));
    assert_non_null(k);
    k->pub = read_key("test_rs256_public.pem", &k->pub_len);
    k->pub_pkcs1 = read_key("test_rs256_public_pkcs1.pem", &k->pub_pkcs1_len);
    k->priv = read_key("test_rs256_private.pem", &k->priv_len);
    k->other_pub = read_key("other_rs256_public.pem", &k->other_pub_len);
    k->other_priv = read_key("other_rs256_private.pem", &k->other_priv_len);
    *state = k;
    return 0;
}

static int teardown_keys(void **state)
{
    struct keys *k = *state;
    free(k->pub);
    free(k->pub_pkcs1);
    free(k->priv);
    free(k->other_pub);
    free(k->other_priv);
    free(k);
    return 0;
}

static struct auth_config hs_config(void)
{
    struct auth_config cfg = {
        .alg = AUTH_HS256,
        .key = (const unsigned char *)SECRET,
        .key_len = strlen(SECRET),
        .audience = AUDIENCE,
        .issuer = NULL,
        .leeway_s = 30,
    };
    return cfg;
}

static struct auth *hs_auth(const char *issuer)
{
    char err[256] = "";
    struct auth_config cfg = hs_config();
    struct auth *a = NULL;

    cfg.issuer = issuer;
    a = auth_new(&cfg, err, sizeof(err));
    if (a == NULL) {
        fail_msg("auth_new: %s", err);
    }
    return a;
}

static struct auth *rs_auth(const char *pub, size_t pub_len)
{
    char err[256] = "";
    struct auth_config cfg = hs_config();
    struct auth *a = NULL;

    cfg.alg = AUTH_RS256;
    cfg.key = (const unsigned char *)pub;
    cfg.key_len = pub_len;
    a = auth_new(&cfg, err, sizeof(err));
    if (a == NULL) {
        fail_msg("auth_new: %s", err);
    }
    return a;
}

/* Signs claims_json (a JSON object) with alg/key via libjwt and returns "Bearer <jwt>"
 * (malloc'd; caller frees). */
static char *bearer(jwt_alg_t alg, const void *key, size_t key_len, const char *claims_json)
{
    jwt_t *jwt = NULL;
    char *tok = NULL;
    char *header = NULL;
    size_t n = 0;

    assert_int_equal(jwt_new(&jwt), 0);
    assert_int_equal(jwt_add_grants_json(jwt, claims_json), 0);
    assert_int_equal(jwt_set_alg(jwt, alg, key, (int)key_len), 0);
    tok = jwt_encode_str(jwt);
    assert_non_null(tok);
    n = strlen("Bearer ") + strlen(tok) + 1;
    header = malloc(n);
    assert_non_null(header);
    snprintf(header, n, "Bearer %s", tok);
    free(tok);
    jwt_free(jwt);
    return header;
}

static char *hs_bearer(const char *claims_json)
{
    return bearer(JWT_ALG_HS256, SECRET, strlen(SECRET), claims_json);
}

/* A claims object valid now for AUDIENCE, with extra members appended (may be ""). */
static char *claims(const char *extra)
{
    static char buf[1024]; /* consumed before the next call */
    long now = (long)time(NULL);
    snprintf(buf, sizeof(buf),
             "{\"sub\":\"u1\",\"aud\":\"" AUDIENCE "\",\"iat\":%ld,\"exp\":%ld,"
             "\"scope\":\"users:read users:write\"%s%s}",
             now, now + 300, extra[0] != '\0' ? "," : "", extra);
    return buf;
}

/* Checks one header against a and asserts result and, when want_why is set, reason. */
static void expect(const struct auth *a, const char *header, const char *scope,
                   enum auth_result want, const char *want_why)
{
    char why[128] = "";
    enum auth_result got = auth_check(a, header, scope, why, sizeof(why));
    if (got != want) {
        fail_msg("auth_check = %d (%s), want %d", (int)got, why, (int)want);
    }
    if (want_why != NULL) {
        assert_string_equal(why, want_why);
    }
}

static void test_hs256_valid_token_is_accepted(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer(claims(""));
    expect(a, h, "users:read", AUTH_OK, "ok");
    expect(a, h, NULL, AUTH_OK, NULL);
    free(h);
    auth_free(a);
}

static void test_missing_header_is_missing(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    expect(a, NULL, "users:read", AUTH_MISSING, "missing bearer token");
    auth_free(a);
}

static void test_scheme_is_case_insensitive_with_one_space_run(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer(claims(""));
    const char *tok = h + strlen("Bearer ");
    char buf[2048];

    snprintf(buf, sizeof(buf), "bEaReR %s", tok);
    expect(a, buf, "users:read", AUTH_OK, NULL);
    snprintf(buf, sizeof(buf), "Bearer    %s", tok);
    expect(a, buf, "users:read", AUTH_OK, NULL);
    snprintf(buf, sizeof(buf), "Bearer\t%s", tok);
    expect(a, buf, "users:read", AUTH_INVALID, "malformed bearer token");
    snprintf(buf, sizeof(buf), "Bearer %s ", tok);
    expect(a, buf, "users:read", AUTH_INVALID, "malformed bearer token");
    snprintf(buf, sizeof(buf), "Bearer %s %s", tok, tok);
    expect(a, buf, "users:read", AUTH_INVALID, "malformed bearer token");
    free(h);
    auth_free(a);
}

static void test_other_schemes_are_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer(claims(""));
    const char *tok = h + strlen("Bearer ");
    char buf[2048];

    snprintf(buf, sizeof(buf), "Basic %s", tok);
    expect(a, buf, "users:read", AUTH_INVALID, "malformed bearer token");
    snprintf(buf, sizeof(buf), "Bearer%s", tok);
    expect(a, buf, "users:read", AUTH_INVALID, "malformed bearer token");
    expect(a, tok, "users:read", AUTH_INVALID, "malformed bearer token");
    expect(a, "", "users:read", AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer", "users:read", AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer ", "users:read", AUTH_INVALID, "malformed bearer token");
    free(h);
    auth_free(a);
}

static void test_garbage_tokens_are_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    expect(a, "Bearer !!!", NULL, AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer abc", NULL, AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer a.b.c.d", NULL, AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer a+b.c/d.e=", NULL, AUTH_INVALID, "malformed bearer token");
    expect(a, "Bearer a.b.c", NULL, AUTH_INVALID, "bad signature or malformed token");
    expect(a, "Bearer ..", NULL, AUTH_INVALID, "bad signature or malformed token");
    auth_free(a);
}

static void test_header_over_8k_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    size_t n = AUTH_MAX_HEADER + 1;
    char *h = malloc(n + 1);
    assert_non_null(h);
    memcpy(h, "Bearer ", 7);
    memset(h + 7, 'a', n - 7);
    h[n] = '\0';
    expect(a, h, NULL, AUTH_INVALID, "authorization header too long");
    free(h);
    auth_free(a);
}

static void test_token_signed_with_another_secret_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = bearer(JWT_ALG_HS256, OTHER_SECRET, strlen(OTHER_SECRET), claims(""));
    expect(a, h, "users:read", AUTH_INVALID, "bad signature or malformed token");
    free(h);
    auth_free(a);
}

static void test_tampered_payload_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer(claims(""));
    char *dot = strchr(h, '.');
    assert_non_null(dot);
    dot[2] = dot[2] == 'A' ? 'B' : 'A';
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    free(h);
    auth_free(a);
}

static void test_expired_token_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:read\"}", AUDIENCE,
             now - 120);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_INVALID, "token expired");
    free(h);

    /* Within the 30 s leeway it still passes. */
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:read\"}", AUDIENCE,
             now - 10);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_OK, NULL);
    free(h);
    auth_free(a);
}

static void test_missing_or_non_numeric_exp_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer("{\"aud\":\"" AUDIENCE "\",\"scope\":\"users:read\"}");
    expect(a, h, "users:read", AUTH_INVALID, "missing or invalid exp");
    free(h);
    h = hs_bearer("{\"aud\":\"" AUDIENCE "\",\"exp\":\"9999999999\"}");
    expect(a, h, NULL, AUTH_INVALID, "missing or invalid exp");
    free(h);
    auth_free(a);
}

static void test_not_yet_valid_token_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char extra[64];
    char *h = NULL;

    snprintf(extra, sizeof(extra), "\"nbf\":%ld", (long)time(NULL) + 600);
    h = hs_bearer(claims(extra));
    expect(a, h, "users:read", AUTH_INVALID, "token not yet valid");
    free(h);

    snprintf(extra, sizeof(extra), "\"nbf\":%ld", (long)time(NULL) - 5);
    h = hs_bearer(claims(extra));
    expect(a, h, "users:read", AUTH_OK, NULL);
    free(h);
    auth_free(a);
}

static void test_iat_in_the_future_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"iat\":%ld,\"exp\":%ld}", AUDIENCE, now + 600,
             now + 900);
    h = hs_bearer(c);
    expect(a, h, NULL, AUTH_INVALID, "token issued in the future");
    free(h);
    auth_free(a);
}

static void test_wrong_audience_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"aud\":\"billing\",\"exp\":%ld,\"scope\":\"users:read\"}", now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_INVALID, "wrong audience");
    free(h);

    snprintf(c, sizeof(c), "{\"aud\":[\"billing\",\"mail\"],\"exp\":%ld}", now + 60);
    h = hs_bearer(c);
    expect(a, h, NULL, AUTH_INVALID, "wrong audience");
    free(h);

    snprintf(c, sizeof(c), "{\"aud\":[],\"exp\":%ld}", now + 60);
    h = hs_bearer(c);
    expect(a, h, NULL, AUTH_INVALID, "wrong audience");
    free(h);

    /* A prefix of ours is not ours. */
    snprintf(c, sizeof(c), "{\"aud\":\"userdat\",\"exp\":%ld}", now + 60);
    h = hs_bearer(c);
    expect(a, h, NULL, AUTH_INVALID, "wrong audience");
    free(h);
    auth_free(a);
}

static void test_audience_array_holding_ours_is_accepted(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"aud\":[\"billing\",42,\"%s\"],\"exp\":%ld,\"scope\":\"users:read\"}",
             AUDIENCE, now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_OK, NULL);
    free(h);
    auth_free(a);
}

static void test_missing_audience_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"exp\":%ld,\"scope\":\"users:read\"}", (long)time(NULL) + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_INVALID, "missing audience");
    free(h);
    auth_free(a);
}

static void test_issuer_is_checked_when_configured(void **state)
{
    (void)state;
    struct auth *with_iss = hs_auth(ISSUER);
    struct auth *without = hs_auth(NULL);
    char *wrong = hs_bearer(claims("\"iss\":\"https://evil.test\""));
    char *right = hs_bearer(claims("\"iss\":\"" ISSUER "\""));
    char *none = hs_bearer(claims(""));

    expect(with_iss, wrong, "users:read", AUTH_INVALID, "wrong issuer");
    expect(with_iss, none, "users:read", AUTH_INVALID, "wrong issuer");
    expect(with_iss, right, "users:read", AUTH_OK, NULL);
    expect(without, wrong, "users:read", AUTH_OK, NULL);
    free(wrong);
    free(right);
    free(none);
    auth_free(with_iss);
    auth_free(without);
}

static void test_missing_scope_is_forbidden(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:read\"}", AUDIENCE,
             now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:write", AUTH_FORBIDDEN, "missing scope users:write");
    free(h);

    /* users:write does not imply users:read. */
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:write\"}", AUDIENCE,
             now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_FORBIDDEN, "missing scope users:read");
    free(h);

    /* Entries match whole, never by prefix or substring. */
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:readx xusers:read\"}",
             AUDIENCE, now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_FORBIDDEN, NULL);
    free(h);

    /* No scope claim, or one that is not a string. */
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld}", AUDIENCE, now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_FORBIDDEN, NULL);
    free(h);
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":[\"users:read\"]}", AUDIENCE,
             now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:read", AUTH_FORBIDDEN, NULL);
    free(h);
    auth_free(a);
}

static void test_scope_among_several_is_accepted(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    char *h = NULL;

    snprintf(c, sizeof(c),
             "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"openid  profile users:write users:read\"}",
             AUDIENCE, now + 60);
    h = hs_bearer(c);
    expect(a, h, "users:write", AUTH_OK, NULL);
    expect(a, h, "users:read", AUTH_OK, NULL);
    expect(a, h, "profile", AUTH_OK, NULL);
    expect(a, h, "users:admin", AUTH_FORBIDDEN, "missing scope users:admin");
    free(h);
    auth_free(a);
}

/* base64url without padding of s, into out (NUL-terminated). */
static void b64url(const char *s, char *out, size_t outlen)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s);
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)(unsigned char)s[i] << 16;
        size_t chunk = n - i < 3 ? n - i : 3;
        if (chunk > 1) {
            v |= (unsigned)(unsigned char)s[i + 1] << 8;
        }
        if (chunk > 2) {
            v |= (unsigned)(unsigned char)s[i + 2];
        }
        for (size_t k = 0; k < chunk + 1; k++) {
            assert_true(o + 1 < outlen);
            out[o++] = tbl[(v >> (18 - 6 * k)) & 0x3f];
        }
    }
    out[o] = '\0';
}

static void test_alg_none_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char head[128];
    char body[512];
    char h[1024];

    /* Made by libjwt itself. */
    char *lib_none = bearer(JWT_ALG_NONE, NULL, 0, claims(""));
    expect(a, lib_none, "users:read", AUTH_INVALID, NULL);
    free(lib_none);

    /* Hand made, with and without a signature part, and with alg spelled "None". */
    b64url(claims(""), body, sizeof(body));
    b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}", head, sizeof(head));
    snprintf(h, sizeof(h), "Bearer %s.%s.", head, body);
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    snprintf(h, sizeof(h), "Bearer %s.%s.c2lnbmF0dXJl", head, body);
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    b64url("{\"alg\":\"None\"}", head, sizeof(head));
    snprintf(h, sizeof(h), "Bearer %s.%s.", head, body);
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    auth_free(a);
}

static void test_other_hmac_alg_with_our_secret_is_invalid(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = bearer(JWT_ALG_HS512, SECRET, strlen(SECRET), claims(""));
    expect(a, h, "users:read", AUTH_INVALID, "unexpected algorithm");
    free(h);
    auth_free(a);
}

/* The classic confusion: an attacker signs HS256 with the (public) RSA key bytes as the
 * HMAC secret. libjwt 1.10 verifies that signature; only the alg check refuses it. */
static void test_alg_confusion_hs256_with_rsa_public_key_is_invalid(void **state)
{
    struct keys *k = *state;
    struct auth *a = rs_auth(k->pub, k->pub_len);
    char *h = bearer(JWT_ALG_HS256, k->pub, k->pub_len, claims(""));
    jwt_t *jwt = NULL;

    /* Prove the premise: libjwt alone accepts the forged token. */
    assert_int_equal(
        jwt_decode(&jwt, h + strlen("Bearer "), (const unsigned char *)k->pub, (int)k->pub_len), 0);
    assert_int_equal(jwt_get_alg(jwt), JWT_ALG_HS256);
    jwt_free(jwt);

    expect(a, h, "users:read", AUTH_INVALID, "unexpected algorithm");
    free(h);
    auth_free(a);
}

static void test_rs256_token_against_hs256_config_is_invalid(void **state)
{
    struct keys *k = *state;
    struct auth *a = hs_auth(NULL);
    char *h = bearer(JWT_ALG_RS256, k->priv, k->priv_len, claims(""));
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    free(h);
    auth_free(a);
}

static void test_rs256_valid_token_is_accepted(void **state)
{
    struct keys *k = *state;
    struct auth *spki = rs_auth(k->pub, k->pub_len);
    struct auth *pkcs1 = rs_auth(k->pub_pkcs1, k->pub_pkcs1_len);
    char *h = bearer(JWT_ALG_RS256, k->priv, k->priv_len, claims(""));
    expect(spki, h, "users:write", AUTH_OK, NULL);
    expect(pkcs1, h, "users:write", AUTH_OK, NULL);
    free(h);
    auth_free(spki);
    auth_free(pkcs1);
}

static void test_rs256_token_of_another_key_is_invalid(void **state)
{
    struct keys *k = *state;
    struct auth *a = rs_auth(k->other_pub, k->other_pub_len);
    char *h = bearer(JWT_ALG_RS256, k->priv, k->priv_len, claims(""));
    expect(a, h, "users:read", AUTH_INVALID, "bad signature or malformed token");
    free(h);
    auth_free(a);
}

static void test_auth_new_refuses_unusable_config(void **state)
{
    struct keys *k = *state;
    char err[256] = "";
    struct auth_config cfg = hs_config();

    cfg.key = (const unsigned char *)"short-secret";
    cfg.key_len = strlen("short-secret");
    assert_null(auth_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "at least 32 bytes"));

    cfg = hs_config();
    cfg.key_len = 31;
    assert_null(auth_new(&cfg, err, sizeof(err)));

    cfg = hs_config();
    cfg.alg = AUTH_RS256;
    cfg.key = (const unsigned char *)k->priv;
    cfg.key_len = k->priv_len;
    err[0] = '\0';
    assert_null(auth_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "not a private key"));

    cfg.key = (const unsigned char *)SECRET;
    cfg.key_len = strlen(SECRET);
    err[0] = '\0';
    assert_null(auth_new(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "PEM public key"));

    cfg = hs_config();
    cfg.audience = NULL;
    assert_null(auth_new(&cfg, err, sizeof(err)));
    cfg.audience = "";
    assert_null(auth_new(&cfg, err, sizeof(err)));

    cfg = hs_config();
    cfg.leeway_s = -1;
    assert_null(auth_new(&cfg, err, sizeof(err)));

    assert_null(auth_new(NULL, err, sizeof(err)));
    assert_null(auth_new(NULL, NULL, 0));
    auth_free(NULL);
}

static void test_mint_round_trips(void **state)
{
    struct keys *k = *state;
    char err[256] = "";
    char why[128] = "";
    char header[4096];
    char *tok = NULL;
    struct auth_config cfg = hs_config();
    struct auth *a = NULL;
    jwt_t *jwt = NULL;

    cfg.issuer = ISSUER;
    a = auth_new(&cfg, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(auth_mint(&cfg, "alice", "users:read users:write", 60, &tok, err, sizeof(err)),
                     0);
    assert_non_null(tok);
    snprintf(header, sizeof(header), "Bearer %s", tok);
    assert_int_equal(auth_check(a, header, "users:write", why, sizeof(why)), AUTH_OK);
    assert_int_equal(auth_check(a, header, "users:admin", why, sizeof(why)), AUTH_FORBIDDEN);
    assert_null(strstr(why, tok));

    assert_int_equal(jwt_decode(&jwt, tok, (const unsigned char *)SECRET, (int)strlen(SECRET)), 0);
    assert_string_equal(jwt_get_grant(jwt, "sub"), "alice");
    assert_string_equal(jwt_get_grant(jwt, "aud"), AUDIENCE);
    assert_string_equal(jwt_get_grant(jwt, "iss"), ISSUER);
    assert_int_equal(jwt_get_grant_int(jwt, "exp") - jwt_get_grant_int(jwt, "iat"), 60);
    jwt_free(jwt);
    free(tok);
    auth_free(a);

    /* RS256: minted with the private key, checked with the public one. */
    cfg = hs_config();
    cfg.alg = AUTH_RS256;
    cfg.key = (const unsigned char *)k->priv;
    cfg.key_len = k->priv_len;
    assert_int_equal(auth_mint(&cfg, "bob", "users:read", 60, &tok, err, sizeof(err)), 0);
    a = rs_auth(k->pub, k->pub_len);
    snprintf(header, sizeof(header), "Bearer %s", tok);
    expect(a, header, "users:read", AUTH_OK, NULL);
    free(tok);
    auth_free(a);

    /* Minting refuses what the checker would refuse. */
    cfg = hs_config();
    cfg.key_len = 8;
    assert_int_equal(auth_mint(&cfg, "x", NULL, 60, &tok, err, sizeof(err)), -1);
    assert_null(tok);
    cfg = hs_config();
    assert_int_equal(auth_mint(&cfg, "x", NULL, 0, &tok, err, sizeof(err)), -1);
    cfg.alg = AUTH_RS256;
    cfg.key = (const unsigned char *)k->pub;
    cfg.key_len = k->pub_len;
    assert_int_equal(auth_mint(&cfg, "x", NULL, 60, &tok, err, sizeof(err)), -1);
    assert_null(tok);
}

static void test_why_never_contains_the_token(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *good = hs_bearer(claims(""));
    char *bad = bearer(JWT_ALG_HS256, OTHER_SECRET, strlen(OTHER_SECRET), claims(""));
    char why[4096];
    const char *headers[] = {good, bad};

    for (size_t i = 0; i < 2; i++) {
        const char *tok = headers[i] + strlen("Bearer ");
        (void)auth_check(a, headers[i], "users:admin", why, sizeof(why));
        assert_null(strstr(why, tok));
        assert_null(strstr(why, strchr(tok, '.') + 1));
    }
    /* A tiny or absent why buffer is fine. */
    assert_int_equal(auth_check(a, bad, "users:read", why, 1), AUTH_INVALID);
    assert_int_equal(auth_check(a, good, "users:read", NULL, 0), AUTH_OK);
    free(good);
    free(bad);
    auth_free(a);
}

struct race {
    const struct auth *a;
    const char *good;
    const char *bad;
    int failures;
};

static void *race_worker(void *arg)
{
    struct race *r = arg;
    char why[128];
    for (int i = 0; i < 200; i++) {
        if (auth_check(r->a, r->good, "users:read", why, sizeof(why)) != AUTH_OK ||
            auth_check(r->a, r->bad, "users:read", why, sizeof(why)) != AUTH_INVALID) {
            r->failures++;
        }
    }
    return NULL;
}

static void test_concurrent_checks_share_one_auth(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *good = hs_bearer(claims(""));
    char *bad = bearer(JWT_ALG_HS256, OTHER_SECRET, strlen(OTHER_SECRET), claims(""));
    pthread_t th[4];
    struct race r[4];

    for (size_t i = 0; i < 4; i++) {
        r[i] = (struct race){.a = a, .good = good, .bad = bad, .failures = 0};
        assert_int_equal(pthread_create(&th[i], NULL, race_worker, &r[i]), 0);
    }
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(r[i].failures, 0);
    }
    free(good);
    free(bad);
    auth_free(a);
}

/* The verified-token cache: a hit still checks the scope asked now and the expiry, and a
 * token differing in one byte from a cached one is checked in full. */
static void test_cached_token_still_gets_scope_checks(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    long now = (long)time(NULL);
    char c[256];
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:read\"}", AUDIENCE,
             now + 300);
    char *h = hs_bearer(c);

    expect(a, h, "users:read", AUTH_OK, NULL);
    expect(a, h, "users:read", AUTH_OK, NULL); /* from the cache */
    expect(a, h, "users:write", AUTH_FORBIDDEN, "missing scope users:write");
    expect(a, h, "users:write", AUTH_FORBIDDEN, "missing scope users:write");
    free(h);
    auth_free(a);
}

static void test_cached_token_expires(void **state)
{
    (void)state;
    char err[256] = "";
    struct auth_config cfg = hs_config();
    cfg.leeway_s = 0;
    struct auth *a = auth_new(&cfg, err, sizeof(err));
    assert_non_null(a);
    long now = (long)time(NULL);
    char c[256];
    snprintf(c, sizeof(c), "{\"aud\":\"%s\",\"exp\":%ld,\"scope\":\"users:read\"}", AUDIENCE,
             now + 1);
    char *h = hs_bearer(c);

    expect(a, h, "users:read", AUTH_OK, NULL);
    while ((long)time(NULL) <= now + 1) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    expect(a, h, "users:read", AUTH_INVALID, "token expired");
    free(h);
    auth_free(a);
}

static void test_token_differing_from_a_cached_one_is_checked_in_full(void **state)
{
    (void)state;
    struct auth *a = hs_auth(NULL);
    char *h = hs_bearer(claims(""));
    expect(a, h, "users:read", AUTH_OK, NULL);

    /* Same header and payload, last signature character changed. */
    size_t n = strlen(h);
    h[n - 1] = h[n - 1] == 'A' ? 'B' : 'A';
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    /* A payload byte changed, signature kept. */
    h[n - 1] = h[n - 1] == 'A' ? 'B' : 'A';
    char *dot = strchr(h, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    expect(a, h, "users:read", AUTH_INVALID, NULL);
    free(h);
    auth_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hs256_valid_token_is_accepted),
        cmocka_unit_test(test_cached_token_still_gets_scope_checks),
        cmocka_unit_test(test_cached_token_expires),
        cmocka_unit_test(test_token_differing_from_a_cached_one_is_checked_in_full),
        cmocka_unit_test(test_missing_header_is_missing),
        cmocka_unit_test(test_scheme_is_case_insensitive_with_one_space_run),
        cmocka_unit_test(test_other_schemes_are_invalid),
        cmocka_unit_test(test_garbage_tokens_are_invalid),
        cmocka_unit_test(test_header_over_8k_is_invalid),
        cmocka_unit_test(test_token_signed_with_another_secret_is_invalid),
        cmocka_unit_test(test_tampered_payload_is_invalid),
        cmocka_unit_test(test_expired_token_is_invalid),
        cmocka_unit_test(test_missing_or_non_numeric_exp_is_invalid),
        cmocka_unit_test(test_not_yet_valid_token_is_invalid),
        cmocka_unit_test(test_iat_in_the_future_is_invalid),
        cmocka_unit_test(test_wrong_audience_is_invalid),
        cmocka_unit_test(test_audience_array_holding_ours_is_accepted),
        cmocka_unit_test(test_missing_audience_is_invalid),
        cmocka_unit_test(test_issuer_is_checked_when_configured),
        cmocka_unit_test(test_missing_scope_is_forbidden),
        cmocka_unit_test(test_scope_among_several_is_accepted),
        cmocka_unit_test(test_alg_none_is_invalid),
        cmocka_unit_test(test_other_hmac_alg_with_our_secret_is_invalid),
        cmocka_unit_test(test_alg_confusion_hs256_with_rsa_public_key_is_invalid),
        cmocka_unit_test(test_rs256_token_against_hs256_config_is_invalid),
        cmocka_unit_test(test_rs256_valid_token_is_accepted),
        cmocka_unit_test(test_rs256_token_of_another_key_is_invalid),
        cmocka_unit_test(test_auth_new_refuses_unusable_config),
        cmocka_unit_test(test_mint_round_trips),
        cmocka_unit_test(test_why_never_contains_the_token),
        cmocka_unit_test(test_concurrent_checks_share_one_auth),
    };
    return cmocka_run_group_tests(tests, setup_keys, teardown_keys);
}
