/* push-email: composition root. Reads the configuration once, applies the delivery log's
 * migrations, wires SMTP, the delivery log, the templates and the clock into the
 * notifier, and runs the Kafka consumer until SIGTERM/SIGINT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "datasources/file_templates.h"
#include "datasources/mariadb_delivery_log.h"
#include "datasources/smtp_sender.h"
#include "datasources/system_notify_env.h"
#include "entities/email_message.h"
#include "entities/notification.h"
#include "interactors/notifier.h"
#include "shared/config.h"
#include "shared/db.h"
#include "shared/health.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "shared/signals.h"
#include "transport/kafka_consumer.h"

#ifndef PUSH_EMAIL_DEFAULT_SHARE_DIR
#define PUSH_EMAIL_DEFAULT_SHARE_DIR "/usr/share/push-email"
#endif
#define PUSH_EMAIL_VERSION "0.1.0"

/* Everything read from the environment, parsed once. Strings are owned. */
struct settings {
    char *brokers, *group_id, *topic, *dlq_topic;
    char *smtp_url, *smtp_starttls, *smtp_username, *smtp_password, *smtp_ca_file;
    char *smtp_auth_mechs;
    bool smtp_verify;
    long long smtp_connect_timeout_ms, smtp_timeout_ms;
    char *from, *from_name, *message_id_domain, *default_locale;
    char *db_host, *db_user, *db_password, *db_name;
    uint16_t db_port;
    long long db_connect_timeout_s, db_io_timeout_s, db_wait_s;
    char *migrations_dir, *templates_dir;
    char *health_addr;
    uint16_t health_port;
    long long retry_base_ms, retry_max_ms, session_timeout_ms;
    char *log_level;
};

static void settings_free(struct settings *s)
{
    char **strs[] = {
        &s->brokers,           &s->group_id,        &s->topic,          &s->dlq_topic,
        &s->smtp_url,          &s->smtp_starttls,   &s->smtp_username,  &s->smtp_password,
        &s->smtp_ca_file,      &s->smtp_auth_mechs, &s->from,           &s->from_name,
        &s->message_id_domain, &s->default_locale,  &s->db_host,        &s->db_user,
        &s->db_password,       &s->db_name,         &s->migrations_dir, &s->templates_dir,
        &s->health_addr,       &s->log_level};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (*strs[i] != NULL && (strs[i] == &s->smtp_password || strs[i] == &s->db_password))
            memset(*strs[i], 0, strlen(*strs[i]));
        free(*strs[i]);
        *strs[i] = NULL;
    }
}

/* The domain of PUSH_EMAIL_MESSAGE_ID_DOMAIN, else of PUSH_EMAIL_FROM (checked at start:
 * system_notify_env_new). */
static const char *ehlo_name(const struct settings *s)
{
    const char *d = s->message_id_domain ? s->message_id_domain : s->from;
    const char *at = d != NULL ? strrchr(d, '@') : NULL;
    return at != NULL ? at + 1 : d;
}

static struct smtp_config smtp_config_of(const struct settings *s)
{
    struct smtp_config sc = {
        .url = s->smtp_url,
        .starttls = strcasecmp(s->smtp_starttls, "required") == 0 ? SMTP_STARTTLS_REQUIRED
                    : strcasecmp(s->smtp_starttls, "none") == 0   ? SMTP_STARTTLS_NONE
                                                                  : SMTP_STARTTLS_OPPORTUNISTIC,
        .username = s->smtp_username,
        .password = s->smtp_password,
        .auth_mechs = s->smtp_auth_mechs,
        /* A relay may refuse a name that is not fully qualified (Postfix's
         * reject_non_fqdn_helo_hostname, at RCPT: permanent): the Message-ID domain. */
        .ehlo_name = ehlo_name(s),
        .ca_file = s->smtp_ca_file,
        .verify = s->smtp_verify,
        .connect_timeout_ms = (unsigned)s->smtp_connect_timeout_ms,
        .timeout_ms = (unsigned)s->smtp_timeout_ms,
        .stop_requested = signals_stop_requested,
    };
    return sc;
}

static int settings_load(struct settings *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    if (config_string("PUSH_EMAIL_KAFKA_BROKERS", "127.0.0.1:9092", &s->brokers, err, errlen) ||
        config_string("PUSH_EMAIL_GROUP_ID", "push-email", &s->group_id, err, errlen) ||
        config_string("PUSH_EMAIL_TOPIC", "cdc.info-user", &s->topic, err, errlen) ||
        config_string("PUSH_EMAIL_DLQ_TOPIC", "cdc.info-user.dlq", &s->dlq_topic, err, errlen) ||
        config_string("PUSH_EMAIL_SMTP_URL", "smtp://127.0.0.1:1025", &s->smtp_url, err, errlen) ||
        config_string("PUSH_EMAIL_SMTP_STARTTLS", "opportunistic", &s->smtp_starttls, err,
                      errlen) ||
        config_string("PUSH_EMAIL_SMTP_USERNAME", NULL, &s->smtp_username, err, errlen) ||
        config_string("PUSH_EMAIL_SMTP_PASSWORD", NULL, &s->smtp_password, err, errlen) ||
        config_string("PUSH_EMAIL_SMTP_CA_FILE", NULL, &s->smtp_ca_file, err, errlen) ||
        config_string("PUSH_EMAIL_SMTP_AUTH_MECHS", "PLAIN LOGIN", &s->smtp_auth_mechs, err,
                      errlen) ||
        config_bool("PUSH_EMAIL_SMTP_VERIFY", true, &s->smtp_verify, err, errlen) ||
        config_int("PUSH_EMAIL_SMTP_CONNECT_TIMEOUT_MS", 10000, 100, 600000,
                   &s->smtp_connect_timeout_ms, err, errlen) ||
        config_int("PUSH_EMAIL_SMTP_TIMEOUT_MS", 60000, 1000, 3600000, &s->smtp_timeout_ms, err,
                   errlen) ||
        config_string("PUSH_EMAIL_FROM", "no-reply@cdc-notify.local", &s->from, err, errlen) ||
        config_string("PUSH_EMAIL_FROM_NAME", "cdc-notify", &s->from_name, err, errlen) ||
        config_string("PUSH_EMAIL_MESSAGE_ID_DOMAIN", NULL, &s->message_id_domain, err, errlen) ||
        config_string("PUSH_EMAIL_DEFAULT_LOCALE", "en", &s->default_locale, err, errlen) ||
        config_string("PUSH_EMAIL_DB_HOST", "127.0.0.1", &s->db_host, err, errlen) ||
        config_port("PUSH_EMAIL_DB_PORT", 3307, false, &s->db_port, err, errlen) ||
        config_string("PUSH_EMAIL_DB_USER", "push_email", &s->db_user, err, errlen) ||
        config_string("PUSH_EMAIL_DB_PASSWORD", "", &s->db_password, err, errlen) ||
        config_string("PUSH_EMAIL_DB_NAME", "notifications", &s->db_name, err, errlen) ||
        config_int("PUSH_EMAIL_DB_CONNECT_TIMEOUT_S", 2, 1, 60, &s->db_connect_timeout_s, err,
                   errlen) ||
        config_int("PUSH_EMAIL_DB_IO_TIMEOUT_S", 5, 1, 300, &s->db_io_timeout_s, err, errlen) ||
        config_int("PUSH_EMAIL_DB_WAIT_S", 60, 0, 3600, &s->db_wait_s, err, errlen) ||
        config_string("PUSH_EMAIL_MIGRATIONS_DIR", PUSH_EMAIL_DEFAULT_SHARE_DIR "/migrations",
                      &s->migrations_dir, err, errlen) ||
        config_string("PUSH_EMAIL_TEMPLATES_DIR", PUSH_EMAIL_DEFAULT_SHARE_DIR "/templates",
                      &s->templates_dir, err, errlen) ||
        config_ip_addr("PUSH_EMAIL_HEALTH_ADDR", "127.0.0.1", true, &s->health_addr, err, errlen) ||
        config_port("PUSH_EMAIL_HEALTH_PORT", 8081, true, &s->health_port, err, errlen) ||
        config_int("PUSH_EMAIL_RETRY_BASE_MS", 500, 10, 600000, &s->retry_base_ms, err, errlen) ||
        config_int("PUSH_EMAIL_RETRY_MAX_MS", 60000, 100, 3600000, &s->retry_max_ms, err, errlen) ||
        config_int("PUSH_EMAIL_KAFKA_SESSION_TIMEOUT_MS", 10000, 6000, 300000,
                   &s->session_timeout_ms, err, errlen) ||
        config_string("PUSH_EMAIL_LOG_LEVEL", "info", &s->log_level, err, errlen))
        return -1;
    enum log_level lvl;
    if (!log_level_parse(s->log_level, &lvl)) {
        snprintf(err, errlen, "PUSH_EMAIL_LOG_LEVEL: must be debug, info, warn or error");
        return -1;
    }
    if (!db_name_valid(s->db_name)) {
        snprintf(err, errlen, "PUSH_EMAIL_DB_NAME: must be " DB_NAME_RULE);
        return -1;
    }
    if (strcasecmp(s->smtp_starttls, "none") != 0 &&
        strcasecmp(s->smtp_starttls, "opportunistic") != 0 &&
        strcasecmp(s->smtp_starttls, "required") != 0) {
        snprintf(err, errlen, "PUSH_EMAIL_SMTP_STARTTLS: must be none, opportunistic or required");
        return -1;
    }
    if (!email_address_valid(s->from)) {
        snprintf(err, errlen, "PUSH_EMAIL_FROM: must be an email address");
        return -1;
    }
    /* Empty Kafka settings would fail only later (after the database wait) or never. */
    const struct {
        const char *name, *value;
    } kafka[] = {{"PUSH_EMAIL_KAFKA_BROKERS", s->brokers},
                 {"PUSH_EMAIL_GROUP_ID", s->group_id},
                 {"PUSH_EMAIL_TOPIC", s->topic},
                 {"PUSH_EMAIL_DLQ_TOPIC", s->dlq_topic}};
    for (size_t i = 0; i < sizeof kafka / sizeof kafka[0]; i++) {
        if (kafka[i].value[strspn(kafka[i].value, " \t")] == '\0') {
            snprintf(err, errlen, "%s: must not be empty", kafka[i].name);
            return -1;
        }
    }
    if (strcmp(s->topic, s->dlq_topic) == 0) {
        snprintf(err, errlen, "PUSH_EMAIL_DLQ_TOPIC: must differ from PUSH_EMAIL_TOPIC");
        return -1;
    }
    /* An SMTP setting that would fail every send, or send the password in clear. */
    static const char *const smtp_vars[] = {
        [SMTP_CONFIG_URL] = "PUSH_EMAIL_SMTP_URL",
        [SMTP_CONFIG_STARTTLS] = "PUSH_EMAIL_SMTP_STARTTLS",
        [SMTP_CONFIG_USERNAME] = "PUSH_EMAIL_SMTP_USERNAME",
        [SMTP_CONFIG_PASSWORD] = "PUSH_EMAIL_SMTP_PASSWORD",
        [SMTP_CONFIG_AUTH_MECHS] = "PUSH_EMAIL_SMTP_AUTH_MECHS",
    };
    struct smtp_config sc = smtp_config_of(s);
    enum smtp_config_field field;
    char why[200];
    if (smtp_config_check(&sc, &field, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", smtp_vars[field], why);
        return -1;
    }
    /* A CA file that cannot be read would make every send a transient failure, retried
     * for ever. */
    if (s->smtp_ca_file != NULL && s->smtp_ca_file[0] != '\0' &&
        config_check_file("PUSH_EMAIL_SMTP_CA_FILE", s->smtp_ca_file, err, errlen) != 0)
        return -1;
    if (s->retry_max_ms < s->retry_base_ms) {
        snprintf(err, errlen,
                 "PUSH_EMAIL_RETRY_MAX_MS: must not be below PUSH_EMAIL_RETRY_BASE_MS");
        return -1;
    }
    return 0;
}

static struct db_config db_config_of(const struct settings *s)
{
    struct db_config c = {
        .host = s->db_host,
        .port = s->db_port,
        .user = s->db_user,
        .password = s->db_password,
        .database = s->db_name,
        .connect_timeout_s = (unsigned)s->db_connect_timeout_s,
        .io_timeout_s = (unsigned)s->db_io_timeout_s,
    };
    return c;
}

/* Applies the delivery log's migrations, waiting up to db_wait_s for the database. */
static int run_migrations(const struct settings *s)
{
    struct db_config c = db_config_of(s);
    char err[512];

    return db_migrations_apply_waiting(&c, s->migrations_dir, (unsigned)s->db_wait_s,
                                       signals_stop_requested, err, sizeof err);
}

static enum notify_outcome handle_change(void *ctx, const struct user_change *c,
                                         struct notify_report *report)
{
    return notifier_handle(ctx, c, report);
}

static void prefetch_changes(void *ctx, const struct user_change *const *changes, size_t n)
{
    notifier_prefetch(ctx, changes, n);
}

static uint64_t gate_ticket(void *ctx)
{
    return notifier_ticket(ctx);
}

static uint64_t gate_durable(void *ctx)
{
    return notifier_durable(ctx);
}

static int gate_flush(void *ctx, int timeout_ms)
{
    return notifier_flush(ctx, timeout_ms);
}

/* /healthz and /readyz alike: a push-email whose loop is stuck, or that cannot track a
 * partition, or whose DLQ producer is dead, neither works nor gets better by waiting. */
static bool alive(void *ctx, char *why, size_t whylen)
{
    return kafka_consumer_alive(ctx, why, whylen);
}

int main(int argc, char **argv)
{
    struct settings s;
    char err[512];
    int rc = 1;
    enum log_level lvl = LOG_INFO;
    struct metrics *metrics = NULL;
    struct smtp_sender *smtp = NULL;
    struct mariadb_delivery_log *dlog = NULL;
    struct file_templates *templates = NULL;
    struct system_notify_env *env = NULL;
    struct notifier *notifier = NULL;
    struct kafka_consumer *consumer = NULL;
    struct health_server *health = NULL;

    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: push-email [--version]\nConfiguration comes from PUSH_EMAIL_* "
               "environment variables (see README.md).\n");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("push-email %s\n", PUSH_EMAIL_VERSION);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "usage: push-email [--version]\n");
        return 2;
    }
    if (settings_load(&s, err, sizeof err) != 0) {
        fprintf(stderr, "push-email: %s\n", err);
        settings_free(&s);
        return 2;
    }
    (void)log_level_parse(s.log_level, &lvl);
    log_init("push-email", lvl);
    if (signals_install() != 0) {
        fprintf(stderr, "push-email: cannot install signal handlers\n");
        goto out;
    }

    templates = file_templates_new(s.templates_dir, err, sizeof err);
    if (templates == NULL) {
        fprintf(stderr, "push-email: PUSH_EMAIL_TEMPLATES_DIR: %s\n", err);
        rc = 2;
        goto out;
    }
    struct smtp_config sc = smtp_config_of(&s);
    smtp = smtp_sender_new(&sc, err, sizeof err);
    if (smtp == NULL) {
        /* The settings were checked: what is left is libcurl or memory. */
        log_write(LOG_ERROR, "cannot set up the SMTP client", "error", err, NULL);
        goto out;
    }
    const char *domain = s.message_id_domain ? s.message_id_domain : s.from;
    env = system_notify_env_new(domain);
    if (env == NULL) {
        fprintf(stderr, "push-email: PUSH_EMAIL_MESSAGE_ID_DOMAIN: not a domain name\n");
        rc = 2;
        goto out;
    }
    /* Every kind of email renders in every locale before anything waits for the database:
     * a configuration that would fail each email (a missing or broken template, a default
     * locale without templates, an unusable sender) stops the start here. */
    const char *locales[64];
    size_t n_locales = file_templates_locales(templates, locales, 64);
    struct notifier_config nc = {s.from, s.from_name, s.default_locale, locales,
                                 n_locales < 64 ? n_locales : 64};
    struct notifier *probe =
        notifier_new((struct mail_sender){0}, (struct delivery_log){0},
                     file_templates_port(templates), system_notify_env_port(env), &nc);
    if (probe == NULL) {
        log_write(LOG_ERROR, "cannot start: out of memory", NULL);
        goto out;
    }
    int checked =
        notifier_selfcheck(probe, locales, n_locales < 64 ? n_locales : 64, err, sizeof err);
    notifier_free(probe);
    if (checked != 0) {
        fprintf(stderr, "push-email: templates or sender: %s\n", err);
        rc = 2;
        goto out;
    }
    if (config_check_dir("PUSH_EMAIL_MIGRATIONS_DIR", s.migrations_dir, err, sizeof err) != 0) {
        fprintf(stderr, "push-email: %s\n", err);
        rc = 2;
        goto out;
    }
    int mrc = run_migrations(&s);
    if (mrc != 0) {
        if (mrc == DB_MIGRATIONS_STOPPED) {
            log_write(LOG_INFO, "stopped before the database was there", NULL);
            rc = 0;
        }
        goto out;
    }
    struct db_config dbc = db_config_of(&s);
    dlog = mariadb_delivery_log_new(&dbc);
    metrics = metrics_new();
    if (dlog == NULL || metrics == NULL) {
        log_write(LOG_ERROR, "cannot start: out of memory", NULL);
        goto out;
    }
    notifier = notifier_new(smtp_sender_port(smtp), mariadb_delivery_log_port(dlog),
                            file_templates_port(templates), system_notify_env_port(env), &nc);
    if (notifier == NULL)
        goto out;

    /* The delivery log writes `sent` marks behind: offsets wait for them. */
    const struct kafka_offset_gate gate = {gate_ticket, gate_durable, gate_flush, notifier};
    struct kafka_consumer_config kcfg = {
        .brokers = s.brokers,
        .group_id = s.group_id,
        .topic = s.topic,
        .dlq_topic = s.dlq_topic,
        .retry_base_ms = (uint32_t)s.retry_base_ms,
        .retry_max_ms = (uint32_t)s.retry_max_ms,
        .session_timeout_ms = (uint32_t)s.session_timeout_ms,
        .gate = &gate,
        .prefetch = prefetch_changes,
        /* Each of an event's emails may take two SMTP timeouts (a send whose reused
         * connection fails is tried once more on a new one), the 2 s it waits for the
         * mark before it, and two database calls that time out (connect + I/O); plus the
         * batch's one delivery-log lookup. 551 s with the defaults, so
         * max.poll.interval.ms is 621 s. */
        .event_max_ms = (uint32_t)(NOTIFY_MAX_PER_CHANGE *
                                       (2 * s.smtp_timeout_ms + 2000 +
                                        2 * 1000 * (s.db_connect_timeout_s + s.db_io_timeout_s)) +
                                   1000 * (s.db_connect_timeout_s + s.db_io_timeout_s)),
    };
    consumer = kafka_consumer_new(&kcfg, handle_change, notifier, metrics, err, sizeof err);
    if (consumer == NULL) {
        log_write(LOG_ERROR, "cannot start the Kafka consumer", "error", err, NULL);
        goto out;
    }
    const struct health_checks checks = {alive, alive, consumer};
    health = health_server_start(s.health_addr, s.health_port, metrics, &checks, err, sizeof err);
    if (health == NULL) {
        log_write(LOG_ERROR, "cannot start the health server", "error", err, NULL);
        goto out;
    }
    char port[8], max_poll[16];
    snprintf(port, sizeof port, "%u", health_server_port(health));
    snprintf(max_poll, sizeof max_poll, "%u", kafka_consumer_max_poll_interval_ms(consumer));
    log_write(LOG_INFO, "push-email consuming", "topic", s.topic, "group", s.group_id, "brokers",
              s.brokers, "health_port", port, "max_poll_interval_ms", max_poll, "version",
              PUSH_EMAIL_VERSION, NULL);

    kafka_consumer_run(consumer, signals_stop_requested);
    log_write(LOG_INFO, "stopping: committing and leaving the group", NULL);
    rc = 0;
out:
    health_server_stop(health);
    kafka_consumer_free(consumer); /* commits stored offsets, closes */
    notifier_free(notifier);
    mariadb_delivery_log_free(dlog);
    system_notify_env_free(env);
    smtp_sender_free(smtp);
    file_templates_free(templates);
    metrics_free(metrics);
    if (rc == 0)
        log_write(LOG_INFO, "stopped", NULL);
    settings_free(&s);
    return rc;
}
