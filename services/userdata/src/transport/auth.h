/* auth: verifies the Bearer JWTs of requests (HS256 or RS256, exp, aud, scopes). */
#ifndef USERDATA_TRANSPORT_AUTH_H
#define USERDATA_TRANSPORT_AUTH_H

#include <stdbool.h>
#include <stddef.h>

/* Longest Authorization header value auth_check accepts; longer ones are AUTH_INVALID. */
#define AUTH_MAX_HEADER 8192

enum auth_alg { AUTH_HS256, AUTH_RS256 };

struct auth_config {
    enum auth_alg alg;
    const unsigned char *key; /* HS256: the secret; RS256: the PEM public key */
    size_t key_len;
    const char *audience; /* required "aud" (string, or an array holding it) */
    const char *issuer;   /* NULL: not checked; else "iss" must equal it */
    long leeway_s;        /* clock skew allowed on exp/nbf */
};

enum auth_result {
    AUTH_OK = 0,
    AUTH_MISSING,   /* no Authorization header: 401 */
    AUTH_INVALID,   /* malformed, bad signature, wrong alg/aud/iss, expired: 401 */
    AUTH_FORBIDDEN, /* valid token without the scope: 403 */
};

struct auth;

/* Copies the key, audience and issuer (cfg may be freed afterwards); the result is freed
 * with auth_free. NULL with errstr filled when the configuration is unusable: an HS256
 * secret shorter than 32 bytes, an RS256 key that is not a PEM public key (a private key
 * is refused), no audience, a leeway outside 0..86400 s. */
struct auth *auth_new(const struct auth_config *cfg, char *errstr, size_t errlen);
void auth_free(struct auth *a);

/* Checks an Authorization header value ("Bearer <jwt>"; NULL when absent) and that the
 * token grants scope (space-separated "scope" claim, RFC 8693; exact entry match; NULL or
 * "" scope: no scope needed). The token's alg must be the configured one ("none" and any
 * other alg are AUTH_INVALID); exp is required; nbf and iat are checked when present.
 * why (may be NULL) gets a short, client-safe reason that never contains the token.
 * Neither argument is kept. Thread-safe: a is only read. */
enum auth_result auth_check(const struct auth *a, const char *authorization, const char *scope,
                            char *why, size_t whylen);

/* Mints a token for development: alg HS256 with key = the secret, or RS256 with key = a
 * PEM private key. Claims: sub, aud, iss (if set), scope, iat, exp = now + ttl_s.
 * *token is malloc'd; caller frees it with free(). Returns 0 or -1 with errstr (and
 * *token = NULL). */
int auth_mint(const struct auth_config *cfg, const char *subject, const char *scope, long ttl_s,
              char **token, char *errstr, size_t errlen);

#endif
