/* smtp_sender: the mail_sender port on libcurl's SMTP client, one connection kept open
 * across messages. */
#ifndef PUSH_EMAIL_DATASOURCES_SMTP_SENDER_H
#define PUSH_EMAIL_DATASOURCES_SMTP_SENDER_H

#include <stdbool.h>
#include <stddef.h>

#include "repositories/mail_sender.h"

enum smtp_starttls {
    SMTP_STARTTLS_NONE,          /* plain SMTP (a local sink) */
    SMTP_STARTTLS_OPPORTUNISTIC, /* STARTTLS when the server offers it, else plain */
    SMTP_STARTTLS_REQUIRED,      /* no STARTTLS: nothing is sent (TRANSIENT) */
};

struct smtp_config {
    const char *url;              /* "smtp://127.0.0.1:1025" or "smtps://host:465" (TLS at once) */
    enum smtp_starttls starttls;  /* for smtp:// URLs */
    const char *username;         /* NULL/empty: no AUTH; else only over TLS that cannot be
                                     skipped (smtps://, or STARTTLS required) */
    const char *password;         /* never logged; set exactly when username is */
    const char *auth_mechs;       /* SASL mechanisms AUTH may use, ' ' or ',' apart;
                                     NULL/empty: "PLAIN LOGIN" */
    const char *ehlo_name;        /* the EHLO name when the URL has no path (a path is
                                     libcurl's EHLO name); NULL/empty: libcurl's default,
                                     this machine's host name, in a pod not a fully
                                     qualified one, which a relay may refuse */
    const char *ca_file;          /* NULL/empty: the system's CA store */
    bool verify;                  /* verify the server's certificate and name */
    unsigned connect_timeout_ms;  /* 0: 10 s */
    unsigned timeout_ms;          /* a whole send, connect included; 0: 60 s */
    bool (*stop_requested)(void); /* NULL, or true once the process is stopping: a send
                                     still stalled 0.5 s later is abandoned (TRANSIENT) */
};

struct smtp_sender;

/* Makes a sender; no connection is opened until the first send. The config strings are
 * copied. NULL with err filled on failure (libcurl init, out of memory, bad option).
 * Free with smtp_sender_free (closes the connection: QUIT). */
struct smtp_sender *smtp_sender_new(const struct smtp_config *cfg, char *err, size_t errlen);

/* The fields of struct smtp_config that smtp_config_check can refuse. */
enum smtp_config_field {
    SMTP_CONFIG_URL,
    SMTP_CONFIG_STARTTLS,
    SMTP_CONFIG_USERNAME,
    SMTP_CONFIG_PASSWORD,
    SMTP_CONFIG_AUTH_MECHS,
};

/* Checks cfg as smtp_sender_new does, before anything is sent: a URL libcurl parses, of
 * scheme smtp or smtps, with a host and without credentials or login options in it (they
 * have their own fields); a username and a password together or neither; credentials only
 * over TLS that cannot be skipped, so a server that does not offer STARTTLS (or a network
 * that strips it) never sees the password; known SASL mechanisms. 0, or -1 with *field
 * set and err saying what is wrong (without the field's name). */
int smtp_config_check(const struct smtp_config *cfg, enum smtp_config_field *field, char *err,
                      size_t errlen);
void smtp_sender_free(struct smtp_sender *s);

/* The port, valid while s lives. Not thread-safe: one sender per thread. */
struct mail_sender smtp_sender_port(struct smtp_sender *s);

#endif
