/* userdata: composition root. Reads the configuration once, wires the adapters into the
 * ports and runs one of the commands: serve (default), migrate, token. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "datasources/mariadb_user_repo.h"
#include "datasources/sodium_hasher.h"
#include "datasources/system_env.h"
#include "interactors/users.h"
#include "shared/config.h"
#include "shared/db.h"
#include "shared/health.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "shared/signals.h"
#include "transport/auth.h"
#include "transport/http_api.h"

#ifndef USERDATA_DEFAULT_SHARE_DIR
#define USERDATA_DEFAULT_SHARE_DIR "/usr/share/userdata"
#endif
#define USERDATA_VERSION "0.1.0"

/* Everything the service reads from its environment, parsed once. Strings are owned. */
struct settings {
    char *listen_addr;
    uint16_t port;
    long long health_port; /* -1: no health server of its own */
    long long threads;
    long long max_body;
    long long conns_per_ip;
    char *db_host;
    uint16_t db_port;
    char *db_user;
    char *db_password;
    char *db_name;
    long long db_pool;
    long long db_connect_timeout_s;
    long long db_io_timeout_s;
    long long db_wait_s;
    bool migrate_on_start;
    char *migrations_dir;
    char *openapi_path;
    char *jwt_alg;
    char *jwt_secret;
    char *jwt_public_key_file;
    char *jwt_audience;
    char *jwt_issuer;
    long long jwt_leeway_s;
    long long pwhash_opslimit;
    long long pwhash_memlimit_kib;
    long long pwhash_parallel;
    long long pwhash_wait_ms;
    long long pwhash_queue;
    char *log_level;
};

static void settings_free(struct settings *s)
{
    char **strs[] = {&s->listen_addr,  &s->db_host,
                     &s->db_user,      &s->db_password,
                     &s->db_name,      &s->migrations_dir,
                     &s->openapi_path, &s->jwt_alg,
                     &s->jwt_secret,   &s->jwt_public_key_file,
                     &s->jwt_audience, &s->jwt_issuer,
                     &s->log_level};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (*strs[i] != NULL && strs[i] == &s->db_password)
            memset(*strs[i], 0, strlen(*strs[i]));
        if (*strs[i] != NULL && strs[i] == &s->jwt_secret)
            memset(*strs[i], 0, strlen(*strs[i]));
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

/* Reads every variable; on the first bad one fills err and returns -1. */
static int settings_load(struct settings *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (config_ip_addr("USERDATA_LISTEN_ADDR", "127.0.0.1", false, &s->listen_addr, err, errlen) ||
        config_port("USERDATA_PORT", 8080, true, &s->port, err, errlen) ||
        config_int("USERDATA_HEALTH_PORT", -1, -1, 65535, &s->health_port, err, errlen) ||
        config_int("USERDATA_THREADS", 8, 1, 256, &s->threads, err, errlen) ||
        config_int("USERDATA_MAX_BODY_BYTES", 65536, 1024, 16 * 1024 * 1024, &s->max_body, err,
                   errlen) ||
        config_int("USERDATA_MAX_CONNECTIONS_PER_IP", 128, 0, 1000, &s->conns_per_ip, err,
                   errlen) ||
        config_string("USERDATA_DB_HOST", "127.0.0.1", &s->db_host, err, errlen) ||
        config_port("USERDATA_DB_PORT", 3307, false, &s->db_port, err, errlen) ||
        config_string("USERDATA_DB_USER", "userdata", &s->db_user, err, errlen) ||
        config_string("USERDATA_DB_PASSWORD", "", &s->db_password, err, errlen) ||
        config_string("USERDATA_DB_NAME", "userdata", &s->db_name, err, errlen) ||
        config_int("USERDATA_DB_POOL_SIZE", 0, 0, 320, &s->db_pool, err, errlen) ||
        config_int("USERDATA_DB_CONNECT_TIMEOUT_S", 2, 1, 60, &s->db_connect_timeout_s, err,
                   errlen) ||
        config_int("USERDATA_DB_IO_TIMEOUT_S", 5, 1, 300, &s->db_io_timeout_s, err, errlen) ||
        config_int("USERDATA_DB_WAIT_S", 60, 0, 3600, &s->db_wait_s, err, errlen) ||
        config_bool("USERDATA_MIGRATE_ON_START", true, &s->migrate_on_start, err, errlen) ||
        config_string("USERDATA_MIGRATIONS_DIR", USERDATA_DEFAULT_SHARE_DIR "/migrations",
                      &s->migrations_dir, err, errlen) ||
        config_string("USERDATA_OPENAPI_PATH", USERDATA_DEFAULT_SHARE_DIR "/openapi.yaml",
                      &s->openapi_path, err, errlen) ||
        config_string("USERDATA_JWT_ALG", "HS256", &s->jwt_alg, err, errlen) ||
        config_string("USERDATA_JWT_SECRET", NULL, &s->jwt_secret, err, errlen) ||
        config_string("USERDATA_JWT_PUBLIC_KEY_FILE", NULL, &s->jwt_public_key_file, err, errlen) ||
        config_string("USERDATA_JWT_AUDIENCE", "userdata", &s->jwt_audience, err, errlen) ||
        config_string("USERDATA_JWT_ISSUER", NULL, &s->jwt_issuer, err, errlen) ||
        config_int("USERDATA_JWT_LEEWAY_S", 30, 0, 3600, &s->jwt_leeway_s, err, errlen) ||
        config_int("USERDATA_PWHASH_OPSLIMIT", 2, 1, 100, &s->pwhash_opslimit, err, errlen) ||
        config_int("USERDATA_PWHASH_MEMLIMIT_KIB", 19456, 8, 4 * 1024 * 1024,
                   &s->pwhash_memlimit_kib, err, errlen) ||
        config_int("USERDATA_PWHASH_PARALLEL", 2, 1, 64, &s->pwhash_parallel, err, errlen) ||
        config_int("USERDATA_PWHASH_WAIT_MS", 5000, 1, 60000, &s->pwhash_wait_ms, err, errlen) ||
        config_int("USERDATA_PWHASH_QUEUE", 64, 1, 4096, &s->pwhash_queue, err, errlen) ||
        config_string("USERDATA_LOG_LEVEL", "info", &s->log_level, err, errlen))
        return -1;
    if (strcmp(s->jwt_alg, "HS256") != 0 && strcmp(s->jwt_alg, "RS256") != 0) {
        snprintf(err, errlen, "USERDATA_JWT_ALG: must be HS256 or RS256");
        return -1;
    }
    enum log_level lvl;
    if (!log_level_parse(s->log_level, &lvl)) {
        snprintf(err, errlen, "USERDATA_LOG_LEVEL: must be debug, info, warn or error");
        return -1;
    }
    if (!db_name_valid(s->db_name)) {
        snprintf(err, errlen, "USERDATA_DB_NAME: must be " DB_NAME_RULE);
        return -1;
    }
    if (s->db_pool == 0) /* every HTTP worker, every password lane, the health server */
        s->db_pool = s->threads + s->pwhash_parallel + (s->health_port >= 0 ? 1 : 0);
    return 0;
}

/* The health server's /readyz: the database answers. */
static bool db_ready(void *ctx, char *why, size_t whylen)
{
    if (users_ready(ctx) == USERS_OK)
        return true;
    snprintf(why, whylen, "the database is unavailable");
    return false;
}

static struct mariadb_config db_config(const struct settings *s)
{
    struct mariadb_config c = {
        .host = s->db_host,
        .port = s->db_port,
        .user = s->db_user,
        .password = s->db_password,
        .database = s->db_name,
        .pool_size = (unsigned)s->db_pool,
        .connect_timeout_s = (unsigned)s->db_connect_timeout_s,
        .io_timeout_s = (unsigned)s->db_io_timeout_s,
    };
    return c;
}

/* Applies migrations, waiting up to db_wait_s for the database to come up. */
static int run_migrations(const struct settings *s)
{
    const struct mariadb_config mc = db_config(s);
    const struct db_config c = {
        .host = mc.host,
        .port = mc.port,
        .user = mc.user,
        .password = mc.password,
        .database = mc.database,
        .connect_timeout_s = mc.connect_timeout_s,
        .io_timeout_s = mc.io_timeout_s,
    };
    char err[512];

    return db_migrations_apply_waiting(&c, s->migrations_dir, (unsigned)s->db_wait_s,
                                       signals_stop_requested, err, sizeof err);
}

/* Checks the migrations directory, then applies the migrations: 0; 2 when the directory
 * cannot be listed (a configuration error, reported on stderr); DB_MIGRATIONS_STOPPED when
 * a stop was asked for while waiting for the database; 1 on any other failure. */
static int migrate(const struct settings *s)
{
    char err[512];

    if (config_check_dir("USERDATA_MIGRATIONS_DIR", s->migrations_dir, err, sizeof err) != 0) {
        fprintf(stderr, "userdata: %s\n", err);
        return 2;
    }
    int mrc = run_migrations(s);
    return mrc == 0 || mrc == DB_MIGRATIONS_STOPPED ? mrc : 1;
}

/* userdata migrate: applies the migrations and exits; 0 only when they are in (a Job that
 * was stopped before the database came up has not migrated anything). */
static int cmd_migrate(const struct settings *s)
{
    int r = migrate(s);
    return r == DB_MIGRATIONS_STOPPED ? 1 : r;
}

/* Loads the JWT key material per the settings into *key (malloc'd; caller frees). */
static int auth_settings(const struct settings *s, struct auth_config *ac, char **key, char *err,
                         size_t errlen)
{
    size_t len = 0;

    memset(ac, 0, sizeof *ac);
    *key = NULL;
    ac->audience = s->jwt_audience;
    ac->issuer = s->jwt_issuer;
    ac->leeway_s = (long)s->jwt_leeway_s;
    if (strcmp(s->jwt_alg, "RS256") == 0) {
        ac->alg = AUTH_RS256;
        if (s->jwt_public_key_file == NULL) {
            snprintf(err, errlen,
                     "USERDATA_JWT_PUBLIC_KEY_FILE: required when USERDATA_JWT_ALG=RS256");
            return -1;
        }
        if (config_read_file(s->jwt_public_key_file, 64 * 1024, key, &len, err, errlen) != 0) {
            char why[384];

            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "USERDATA_JWT_PUBLIC_KEY_FILE: %s", why);
            return -1;
        }
    } else {
        ac->alg = AUTH_HS256;
        if (s->jwt_secret == NULL || s->jwt_secret[0] == '\0') {
            snprintf(err, errlen,
                     "USERDATA_JWT_SECRET: required (or USERDATA_JWT_SECRET_FILE) for HS256");
            return -1;
        }
        *key = strdup(s->jwt_secret);
        if (*key == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        len = strlen(*key);
    }
    ac->key = (const unsigned char *)*key;
    ac->key_len = len;
    return 0;
}

static int cmd_serve(const struct settings *s)
{
    int rc = 1;
    char err[512];
    char *key = NULL;
    char *openapi = NULL;
    size_t openapi_len = 0;
    struct auth_config ac;
    struct auth *auth = NULL;
    struct metrics *metrics = NULL;
    struct mariadb_user_repo *repo = NULL;
    struct sodium_hasher *hasher = NULL;
    struct users *users = NULL;
    struct http_api *api = NULL;
    struct health_server *health = NULL;
    struct mariadb_config dbc = db_config(s);

    if (auth_settings(s, &ac, &key, err, sizeof err) != 0) {
        fprintf(stderr, "userdata: %s\n", err);
        rc = 2;
        goto out;
    }
    auth = auth_new(&ac, err, sizeof err);
    if (auth == NULL) {
        fprintf(stderr, "userdata: %s: %s\n",
                ac.alg == AUTH_HS256 ? "USERDATA_JWT_SECRET" : "USERDATA_JWT_PUBLIC_KEY_FILE", err);
        rc = 2;
        goto out;
    }
    if (config_read_file(s->openapi_path, 4 * 1024 * 1024, &openapi, &openapi_len, err,
                         sizeof err) != 0) {
        log_write(LOG_WARN, "openapi spec not served", "error", err, NULL);
        openapi = NULL;
        openapi_len = 0;
    }
    if (s->migrate_on_start) {
        int mrc = migrate(s);

        if (mrc != 0) {
            /* a stop asked for before the database was there is a clean exit */
            rc = mrc == DB_MIGRATIONS_STOPPED ? 0 : mrc;
            goto out;
        }
    }

    metrics = metrics_new();
    repo = mariadb_user_repo_new(&dbc);
    hasher = sodium_hasher_new((unsigned long long)s->pwhash_opslimit,
                               (size_t)s->pwhash_memlimit_kib * 1024, (unsigned)s->pwhash_parallel,
                               (unsigned)s->pwhash_wait_ms);
    if (metrics == NULL || repo == NULL || hasher == NULL) {
        log_write(LOG_ERROR, "cannot start: out of memory or libsodium failed", NULL);
        goto out;
    }
    users = users_new(mariadb_user_repo_port(repo), sodium_hasher_port(hasher), system_env_port());
    if (users == NULL)
        goto out;

    struct http_api_config hc = {
        .bind_addr = s->listen_addr,
        .port = s->port,
        .threads = (unsigned)s->threads,
        .max_body = (size_t)s->max_body,
        .conns_per_ip = (unsigned)s->conns_per_ip,
        .openapi = openapi,
        .openapi_len = openapi_len,
        .pw_lanes = (unsigned)s->pwhash_parallel,
        .pw_queue = (unsigned)s->pwhash_queue,
        .pw_wait_ms = (unsigned)s->pwhash_wait_ms,
    };
    api = http_api_start(&hc, users, auth, metrics, err, sizeof err);
    if (api == NULL) {
        log_write(LOG_ERROR, "cannot start the HTTP server", "error", err, NULL);
        goto out;
    }
    /* Probes on a port of their own: the API's workers each serve their connections one
     * after another, and a database that stops answering holds a worker for up to the I/O
     * timeouts; a liveness probe queued behind such requests would fail and get a process
     * restarted that has nothing wrong with it. Here each probe gets a thread. */
    if (s->health_port >= 0) {
        const struct health_checks checks = {NULL, db_ready, users};
        health = health_server_start(s->listen_addr, (uint16_t)s->health_port, metrics, &checks,
                                     err, sizeof err);
        if (health == NULL) {
            log_write(LOG_ERROR, "cannot start the health server", "error", err, NULL);
            goto out;
        }
    }
    char port[8], health_port[8];
    snprintf(port, sizeof port, "%u", http_api_port(api));
    snprintf(health_port, sizeof health_port, "%u", health ? health_server_port(health) : 0);
    log_write(LOG_INFO, "userdata listening", "addr", s->listen_addr, "port", port, "health_port",
              health != NULL ? health_port : "none", "version", USERDATA_VERSION, NULL);
    while (!signals_stop_requested())
        signals_wait(1000);
    log_write(LOG_INFO, "stopping: finishing requests in flight", NULL);
    rc = 0;
out:
    health_server_stop(health);
    http_api_stop(api);
    users_free(users);
    sodium_hasher_free(hasher);
    mariadb_user_repo_free(repo);
    metrics_free(metrics);
    auth_free(auth);
    free(openapi);
    if (key != NULL) {
        memset(key, 0, ac.key_len);
        free(key);
    }
    if (rc == 0)
        log_write(LOG_INFO, "stopped", NULL);
    return rc;
}

/* userdata token [--scope S] [--ttl SECONDS] [--sub SUBJECT] [--private-key PEM]:
 * prints a development token signed with the configured HS256 secret, or with the
 * given RS256 private key. */
static int cmd_token(const struct settings *s, int argc, char **argv)
{
    const char *scope = "users:read users:write";
    const char *sub = "dev";
    const char *private_key = NULL;
    long ttl = 3600;
    char err[512];
    char *key = NULL;
    char *token = NULL;
    size_t len = 0;
    struct auth_config ac;
    int rc = 2;
    static const struct option opts[] = {{"scope", required_argument, NULL, 's'},
                                         {"ttl", required_argument, NULL, 't'},
                                         {"sub", required_argument, NULL, 'u'},
                                         {"private-key", required_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 's')
            scope = optarg;
        else if (c == 't')
            ttl = strtol(optarg, NULL, 10);
        else if (c == 'u')
            sub = optarg;
        else if (c == 'k')
            private_key = optarg;
        else
            goto out;
    }
    if (ttl <= 0 || ttl > 366L * 86400) {
        fprintf(stderr, "userdata token: --ttl must be 1 to 31622400 seconds\n");
        goto out;
    }
    if (strcmp(s->jwt_alg, "RS256") == 0) {
        if (private_key == NULL) {
            fprintf(stderr, "userdata token: RS256 needs --private-key FILE\n");
            goto out;
        }
        memset(&ac, 0, sizeof ac);
        ac.alg = AUTH_RS256;
        ac.audience = s->jwt_audience;
        ac.issuer = s->jwt_issuer;
        if (config_read_file(private_key, 64 * 1024, &key, &len, err, sizeof err) != 0) {
            fprintf(stderr, "userdata token: %s\n", err);
            goto out;
        }
        ac.key = (const unsigned char *)key;
        ac.key_len = len;
    } else if (auth_settings(s, &ac, &key, err, sizeof err) != 0) {
        fprintf(stderr, "userdata: %s\n", err);
        goto out;
    }
    if (auth_mint(&ac, sub, scope, ttl, &token, err, sizeof err) != 0) {
        fprintf(stderr, "userdata token: %s\n", err);
        rc = 1;
        goto out;
    }
    printf("%s\n", token);
    rc = 0;
out:
    free(token);
    if (key != NULL) {
        memset(key, 0, strlen(key));
        free(key);
    }
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: userdata [serve | migrate | token [--scope S] [--ttl SECONDS] "
               "[--sub SUBJECT] [--private-key FILE] | --version]\n"
               "Configuration comes from USERDATA_* environment variables (see README.md).\n");
}

int main(int argc, char **argv)
{
    struct settings s;
    char err[512];
    enum log_level lvl = LOG_INFO;
    const char *cmd = argc > 1 ? argv[1] : "serve";
    int rc;

    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("userdata %s\n", USERDATA_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0 && strcmp(cmd, "token") != 0) {
        usage(stderr);
        return 2;
    }
    if (settings_load(&s, err, sizeof err) != 0) {
        fprintf(stderr, "userdata: %s\n", err);
        settings_free(&s);
        return 2;
    }
    (void)log_level_parse(s.log_level, &lvl);
    log_init("userdata", lvl);
    if (signals_install() != 0) {
        fprintf(stderr, "userdata: cannot install signal handlers\n");
        settings_free(&s);
        return 1;
    }
    if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(&s);
    else if (strcmp(cmd, "token") == 0)
        rc = cmd_token(&s, argc - 1, argv + 1);
    else
        rc = cmd_serve(&s);
    settings_free(&s);
    return rc;
}
