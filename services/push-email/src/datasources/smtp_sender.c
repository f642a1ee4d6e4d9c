/* smtp_sender: the mail_sender port on libcurl's SMTP client.
 *
 * One CURL easy handle lives as long as the sender, so libcurl keeps the SMTP connection
 * (after EHLO, STARTTLS and AUTH) in the handle's cache and the next message goes out with
 * MAIL FROM on the same connection. libcurl checks a cached connection before reusing it,
 * so a connection the server closed while idle is replaced transparently. When a send on a
 * REUSED connection fails at the socket level before any reply and before the last byte of
 * the message was handed over (the server dropped it in the very moment), the send is tried
 * once more on a fresh connection: the message cannot have been accepted. A connection lost
 * after that (the end of DATA may have reached the server, which may have accepted the
 * message) is MAIL_TRANSIENT like any other lost reply: the caller sends it again later, with
 * the same Message-ID (RFC 1047: without the reply a client cannot know).
 *
 * Result mapping (enum mail_result is all the interactors see):
 *   CURLE_OK                                    -> MAIL_SENT
 *   server reply 5xx to RCPT TO (550 mailbox
 *   unavailable, 553 bad address, ...), to DATA,
 *   or to the end of DATA (554 content refused,
 *   552 too big)                                -> MAIL_PERMANENT (DLQ: retrying will not help)
 *   server reply 4xx (421, 450, 451, 452)       -> MAIL_TRANSIENT
 *   530/534/535/538 and CURLE_LOGIN_DENIED
 *   (authentication)                            -> MAIL_TRANSIENT: wrong credentials are our
 *       configuration, the same for every recipient. Marking each email failed would
 *       send the whole stream to the DLQ; as a transient failure the consumer pauses,
 *       retries with backoff and alerts (metrics, logs) until an operator fixes it.
 *   5xx to MAIL FROM (our sender refused: "550
 *   5.7.1 sender not allowed", 553 ...), except
 *   552 (the message is too big)                 -> MAIL_TRANSIENT, for the same reason: the
 *       envelope sender is ours and the same for every email. libcurl reports it as
 *       "MAIL failed: <code>" in its error buffer, which tells it from a refused RCPT TO.
 *   5xx to the greeting, EHLO/HELO or STARTTLS
 *   (the relay refuses us: "554 access denied") -> MAIL_TRANSIENT, for the same reason.
 *   connect refused, timeouts, resolve errors,
 *   send/recv errors, TLS errors (STARTTLS
 *   required but missing or failing, bad cert)  -> MAIL_TRANSIENT
 *   an address with control characters or <>   -> MAIL_PERMANENT (never reaches libcurl:
 *       it would let a value inject SMTP commands)
 *   anything else                               -> MAIL_TRANSIENT (nothing is lost)
 *
 * The gate (struct mail_gate): the read callback hands libcurl the message but its last
 * byte, then asks the gate, and only then hands over that byte; libcurl sends the end of
 * DATA ("\r\n.\r\n") after it. So the message is on the wire while the caller's gate
 * waits, and the server cannot accept it before the gate says so. A gate that refuses
 * aborts the transfer (CURL_READFUNC_ABORT): libcurl drops the connection without ending
 * the DATA, and the server discards the message -> MAIL_TRANSIENT.
 *
 * A failed send drops its connection: libcurl keeps a connection whose end-of-data reply
 * timed out or was abandoned (that wait runs in its "done" phase, which does not close it),
 * and the next MAIL FROM would then read the late reply meant for the message before. The
 * socket is shut down (CURLINFO_ACTIVESOCKET; libcurl still owns it), so libcurl finds it
 * dead before any reuse and closes it without a QUIT. At free, the read side of the socket
 * is shut down first: libcurl still says QUIT but does not wait for the reply (its cleanup
 * handle ignores our timeouts and would wait 120 s on a silent server).
 *
 * The size of the message is not given to libcurl (INFILESIZE -1): libcurl counts the bytes
 * it wrote after dot-stuffing, so with a known size and one stuffed dot it would end the DATA
 * one byte early, skipping the held-back byte and the gate. Unknown, it reads until the read
 * callback returns 0. (No SIZE= on MAIL FROM then; a server's 552 still comes at the end.)
 *
 * Stopping: with cfg->stop_requested, a send that is still running 500 ms after a stop was
 * requested (a stalled server) is abandoned (MAIL_TRANSIENT) within about two seconds (libcurl
 * calls the progress callback about once a second while nothing moves), instead of holding
 * the process for up to timeout_ms, but ONLY while the last byte of the message has not been
 * handed over: after that the end of DATA may be on the wire and the server may accept the
 * message, and abandoning it then would send it again later. That wait is bounded by
 * timeout_ms.
 *
 * err gets a short reason: the server's last refusal (4xx/5xx) line when there was one (e.g.
 * "550 5.1.1 mailbox unavailable"), else libcurl's message. The password is never
 * logged: verbose output stays off, and we send no command text to err or the log. */
#include "datasources/smtp_sender.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "shared/log.h"

#define REPLY_MAX 256

struct smtp_sender {
    CURL *curl;                                /* owned; keeps the connection */
    char *url, *username, *password, *ca_file; /* owned copies */
    char errbuf[CURL_ERROR_SIZE];              /* libcurl's detail of the last failure */
    char reply[REPLY_MAX];                     /* last server reply line of this send */
    bool (*stop_requested)(void);              /* may be NULL */
    int64_t stop_seen_us;                      /* when this send first saw the stop; -1 */
    const struct upload *cur;                  /* the send in progress, for xferinfo_cb */
    int stopped;                               /* this send was abandoned for a stop */
};

#define STOP_GRACE_US 500000 /* a send still running this long after a stop is abandoned */

/* The data of one send, handed to libcurl's read callback. */
struct upload {
    const char *p;
    size_t left;
    const struct mail_gate *gate; /* NULL: none */
    int gated;                    /* the gate was asked */
    int refused;                  /* ... and said no */
    int all_handed;               /* libcurl has every byte: the end of DATA may follow */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

/* curl_global_init is not thread-safe in every libcurl build: it runs once. */
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nitems;

    if (n >= u->left && u->gate != NULL && !u->gated) {
        if (u->left > 1) {
            n = u->left - 1; /* all but the last byte: the gate comes before it */
        } else {
            u->gated = 1;
            if (u->gate->ready(u->gate->ctx) != 0) {
                u->refused = 1;
                return CURL_READFUNC_ABORT;
            }
        }
    }
    if (n > u->left) {
        n = u->left;
    }
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    if (u->left == 0) {
        u->all_handed = 1;
    }
    return n;
}

/* libcurl passes every SMTP reply line to the header callback: keep the last one. */
static size_t header_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    struct smtp_sender *s = arg;
    size_t n = size * nitems;
    size_t keep = n;

    while (keep > 0 && (buf[keep - 1] == '\r' || buf[keep - 1] == '\n')) {
        keep--;
    }
    if (keep >= sizeof s->reply) {
        keep = sizeof s->reply - 1;
    }
    /* Only refusals (4xx, 5xx): after one, libcurl says QUIT and the "221 Bye" that
     * follows must not hide the reason. */
    if (keep >= 3 && (buf[0] == '4' || buf[0] == '5') && buf[1] >= '0' && buf[1] <= '9' &&
        buf[2] >= '0' && buf[2] <= '9') {
        memcpy(s->reply, buf, keep);
        s->reply[keep] = '\0';
        for (size_t i = 0; i < keep; i++) {
            if ((unsigned char)s->reply[i] < 0x20 || s->reply[i] == 0x7f) {
                s->reply[i] = ' ';
            }
        }
    }
    return n;
}

/* An address we hand to libcurl: no control characters (CR/LF would inject commands),
 * no angle brackets, not longer than SMTP allows. Empty only when allow_empty. */
static int address_ok(const char *a, int allow_empty)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)a; *p != '\0'; p++, n++) {
        if (*p < 0x20 || *p == 0x7f || *p == '<' || *p == '>') {
            return 0;
        }
    }
    return (n > 0 || allow_empty) && n <= 254;
}

/* libcurl's progress callback (about once a second while nothing moves): abandons a send
 * that is still running STOP_GRACE_US after a stop was requested. */
static int xferinfo_cb(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    struct smtp_sender *s = arg;
    struct timespec ts;
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;

    if (s->stop_requested == NULL || !s->stop_requested()) {
        return 0;
    }
    if (s->cur != NULL && s->cur->all_handed) {
        return 0; /* the server may be accepting it: never abandon now (see the top) */
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    if (s->stop_seen_us < 0) {
        s->stop_seen_us = now_us; /* the first call that saw the stop */
        return 0;
    }
    if (now_us - s->stop_seen_us < STOP_GRACE_US) {
        return 0;
    }
    s->stopped = 1;
    return 1; /* CURLE_ABORTED_BY_CALLBACK */
}

static int is_auth_reply(long code)
{
    return code == 530 || code == 534 || code == 535 || code == 538;
}

static int is_socket_error(CURLcode rc)
{
    return rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING;
}

/* A 5xx to RCPT TO that refuses to relay for us, or wants us authenticated first, in the
 * words the common MTAs use ("554 5.7.1 <x>: Relay access denied" (Postfix), "550 relay not
 * permitted" (Exim), "550 5.7.1 <x>... Relaying denied" (Sendmail), "550 5.7.57 Client not
 * authenticated" (Exchange)): the relay refuses every recipient alike until it is set up
 * right, so the refusal is about us, not this recipient. Only those phrases count, and
 * never in the address the reply repeats ("<x@relay.example>") nor under a 5.1.x/5.2.x
 * code (the mailbox): "550 5.1.1 ... User unknown in relay recipient table" stays the
 * recipient's. */
static int refuses_relaying_for_us(const char *reply)
{
    static const char *const phrases[] = {
        "relay access denied",    "relaying denied",        "relay denied",
        "relay not permitted",    "relaying not permitted", "unable to relay",
        "not permitted to relay", "not authenticated",      "authentication required",
    };
    char text[REPLY_MAX];
    size_t n = 0;
    int in_angle = 0;

    for (size_t i = 0; reply[i] != '\0' && n < sizeof text - 1; i++) {
        if (reply[i] == '<') {
            in_angle = 1;
        } else if (reply[i] == '>') {
            in_angle = 0;
        } else if (!in_angle) {
            text[n++] = (char)tolower((unsigned char)reply[i]);
        }
    }
    text[n] = '\0';
    /* "550 5.1.1 ...": the enhanced code, when there is one, must not be the mailbox's. */
    if (n >= 8 && text[3] == ' ' && text[4] == '5' && text[5] == '.' &&
        (text[6] == '1' || text[6] == '2') && text[7] == '.') {
        return 0;
    }
    for (size_t i = 0; i < sizeof phrases / sizeof phrases[0]; i++) {
        if (strstr(text, phrases[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

/* A 5xx is this email's for good only where it answers this email: its recipient (RCPT
 * TO), the DATA command (no valid recipient), its end of data (the content refused), or
 * 552 (too big) to MAIL FROM. A 5xx to the greeting, EHLO/HELO, STARTTLS or otherwise to
 * MAIL FROM, or one to RCPT TO that refuses to relay for us, refuses us, the same for
 * every email: transient (pause, alert, retry), never a `failed` mark that a fixed relay
 * could not undo. */
static enum mail_result map_result(CURLcode rc, long code, const char *errbuf, const char *reply,
                                   int data_handed)
{
    if (rc == CURLE_OK) {
        return MAIL_SENT;
    }
    if (rc == CURLE_LOGIN_DENIED || is_auth_reply(code) || code < 500 || code > 599) {
        return MAIL_TRANSIENT; /* 4xx, network, TLS, timeouts, anything unknown */
    }
    if (strncmp(errbuf, "RCPT failed", 11) == 0) {
        return refuses_relaying_for_us(reply) ? MAIL_TRANSIENT : MAIL_PERMANENT;
    }
    if (strncmp(errbuf, "DATA failed", 11) == 0 || data_handed ||
        (code == 552 && strncmp(errbuf, "MAIL failed", 11) == 0)) {
        return MAIL_PERMANENT;
    }
    return MAIL_TRANSIENT;
}

/* One SMTP transaction. *reused = it ran on a cached connection. */
static CURLcode perform(struct smtp_sender *s, const char *from, const char *to, const char *data,
                        size_t len, const struct mail_gate *gate, long *code, int *reused,
                        int *refused, int *handed)
{
    struct curl_slist *rcpt = NULL;
    struct upload up = {data, len, gate, 0, 0, 0};
    char from_arg[300], to_arg[300];
    long connects = 0;
    CURLcode rc;

    *code = 0;
    *reused = 0;
    *refused = 0;
    *handed = 0;
    s->errbuf[0] = '\0';
    s->reply[0] = '\0';
    s->stop_seen_us = -1;
    snprintf(from_arg, sizeof from_arg, "<%s>", from);
    snprintf(to_arg, sizeof to_arg, "<%s>", to);
    rcpt = curl_slist_append(NULL, to_arg);
    if (rcpt == NULL) {
        rc = CURLE_OUT_OF_MEMORY;
        goto out;
    }
    curl_easy_setopt(s->curl, CURLOPT_MAIL_FROM, from_arg);
    curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(s->curl, CURLOPT_READDATA, &up);
    curl_easy_setopt(s->curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)-1);
    s->cur = &up;
    rc = curl_easy_perform(s->curl);
    curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, code);
    curl_easy_getinfo(s->curl, CURLINFO_NUM_CONNECTS, &connects);
    *reused = connects == 0;
    *refused = up.refused;
    *handed = up.all_handed;
out:
    /* The handle must not keep pointers into this frame. */
    s->cur = NULL;
    curl_easy_setopt(s->curl, CURLOPT_MAIL_RCPT, (struct curl_slist *)NULL);
    curl_easy_setopt(s->curl, CURLOPT_READDATA, (void *)NULL);
    curl_slist_free_all(rcpt);
    return rc;
}

/* Makes libcurl drop the connection of the last send (see the top): no reuse, no QUIT. */
static void drop_connection(struct smtp_sender *s)
{
    curl_socket_t fd = CURL_SOCKET_BAD;

    if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
        fd != CURL_SOCKET_BAD) {
        (void)shutdown(fd, SHUT_RDWR);
    }
}

static enum mail_result smtp_send(void *self, const char *from, const char *to, const char *data,
                                  size_t len, const struct mail_gate *gate, char *err,
                                  size_t errlen)
{
    struct smtp_sender *s = self;
    enum mail_result res;
    long code = 0;
    int reused = 0, refused = 0, handed = 0;
    CURLcode rc;

    if (!address_ok(to, 0) || !address_ok(from, 1)) {
        snprintf(err, errlen, "invalid %s address", address_ok(to, 0) ? "sender" : "recipient");
        return MAIL_PERMANENT;
    }
    rc = perform(s, from, to, data, len, gate, &code, &reused, &refused, &handed);
    /* Only a connection that failed before any reply and before the end of data could be
     * on the wire: after that the server may have accepted the message. */
    if (rc != CURLE_OK && reused && code == 0 && !handed && is_socket_error(rc)) {
        log_write(LOG_INFO, "smtp connection lost; retrying on a new one", "error",
                  curl_easy_strerror(rc), NULL);
        rc = perform(s, from, to, data, len, gate, &code, &reused, &refused, &handed);
    }
    if (rc != CURLE_OK) {
        drop_connection(s);
    }
    if (refused) {
        snprintf(err, errlen, "not sent: the gate before the end of data refused it");
        return MAIL_TRANSIENT;
    }
    if (s->stopped) {
        s->stopped = 0;
        snprintf(err, errlen, "abandoned: stopping, and the server had not answered");
        return MAIL_TRANSIENT;
    }
    res = map_result(rc, code, s->errbuf, s->reply, handed);
    if (res != MAIL_SENT) {
        if (s->reply[0] != '\0' && code >= 400) {
            snprintf(err, errlen, "%s", s->reply);
        } else {
            snprintf(err, errlen, "%s%s%s", curl_easy_strerror(rc), s->errbuf[0] ? ": " : "",
                     s->errbuf);
        }
    }
    return res;
}

/* The SASL mechanisms of libcurl's SMTP client that work with a username and password
 * (XOAUTH2 and OAUTHBEARER need a token; EXTERNAL is used only without a password, and a
 * username needs one here: not offered). */
static const char *const known_mechs[] = {"PLAIN",      "LOGIN", "CRAM-MD5",
                                          "DIGEST-MD5", "NTLM",  "GSSAPI"};

/* mechs ("PLAIN LOGIN", ' ' or ',' apart; NULL/empty: PLAIN and LOGIN) as libcurl's login
 * options ("AUTH=PLAIN;AUTH=LOGIN": libcurl then uses no other mechanism, whatever the
 * server offers) into out; false on a name libcurl does not know or no room. */
static bool login_options(const char *mechs, char *out, size_t outlen)
{
    size_t used = 0, n = 0;

    if (mechs == NULL || mechs[0] == '\0')
        mechs = "PLAIN LOGIN";
    out[0] = '\0';
    for (const char *p = mechs; *p != '\0';) {
        p += strspn(p, " ,");
        size_t len = strcspn(p, " ,");
        if (len == 0)
            break;
        bool known = false;
        for (size_t i = 0; i < sizeof known_mechs / sizeof known_mechs[0] && !known; i++)
            known = strlen(known_mechs[i]) == len && strncasecmp(known_mechs[i], p, len) == 0;
        if (!known)
            return false;
        int w = snprintf(out + used, outlen - used, "%sAUTH=%.*s", n > 0 ? ";" : "", (int)len, p);
        if (w < 0 || (size_t)w >= outlen - used)
            return false;
        for (size_t i = used; i < used + (size_t)w; i++)
            out[i] = (char)toupper((unsigned char)out[i]);
        used += (size_t)w;
        n++;
        p += len;
    }
    return n > 0;
}

/* url with "/" + ehlo as its path when it has none (libcurl says EHLO with the URL's path,
 * else with this machine's host name); a copy of url when ehlo is empty or the URL has a
 * path. NULL when out of memory. */
static char *url_with_ehlo(const char *url, const char *ehlo)
{
    CURLU *u;
    char *path = NULL, *full = NULL, *out = NULL;
    char buf[300];

    if (ehlo == NULL || ehlo[0] == '\0')
        return strdup(url);
    u = curl_url();
    if (u == NULL)
        return NULL;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK) {
        if (path[0] != '\0' && strcmp(path, "/") != 0)
            out = strdup(url);
        else if ((size_t)snprintf(buf, sizeof buf, "/%s", ehlo) < sizeof buf &&
                 curl_url_set(u, CURLUPART_PATH, buf, CURLU_URLENCODE) == CURLUE_OK &&
                 curl_url_get(u, CURLUPART_URL, &full, 0) == CURLUE_OK)
            out = strdup(full);
        else
            out = strdup(url);
    }
    curl_free(full);
    curl_free(path);
    curl_url_cleanup(u);
    return out;
}

static bool non_empty(const char *s)
{
    return s != NULL && s[0] != '\0';
}

int smtp_config_check(const struct smtp_config *cfg, enum smtp_config_field *field, char *err,
                      size_t errlen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *part = NULL;
    char opts[160];
    int rc = -1;

    *field = SMTP_CONFIG_URL;
    if (u == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (cfg->url == NULL || curl_url_set(u, CURLUPART_URL, cfg->url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        (strcmp(scheme, "smtp") != 0 && strcmp(scheme, "smtps") != 0)) {
        snprintf(err, errlen, "must be smtp://host[:port] or smtps://host[:port]");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0') {
        snprintf(err, errlen, "has no host");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_OPTIONS, &part, 0) == CURLUE_OK) {
        snprintf(err, errlen,
                 "must not hold a user, password or login options (the "
                 "username, password and mechanisms have settings of their own)");
        goto out;
    }
    if (non_empty(cfg->username) != non_empty(cfg->password)) {
        *field = non_empty(cfg->username) ? SMTP_CONFIG_PASSWORD : SMTP_CONFIG_USERNAME;
        snprintf(err, errlen, "must be set when the %s is",
                 non_empty(cfg->username) ? "username" : "password");
        goto out;
    }
    if (non_empty(cfg->username) && strcmp(scheme, "smtp") == 0 &&
        cfg->starttls != SMTP_STARTTLS_REQUIRED) {
        *field = SMTP_CONFIG_STARTTLS;
        snprintf(err, errlen,
                 "must be required when a username is set on an smtp:// URL (or use smtps://): "
                 "else the password goes in clear to a server that does not offer STARTTLS");
        goto out;
    }
    if (!login_options(cfg->auth_mechs, opts, sizeof opts)) {
        *field = SMTP_CONFIG_AUTH_MECHS;
        snprintf(err, errlen,
                 "must be SASL mechanisms among PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, "
                 "NTLM, GSSAPI");
        goto out;
    }
    rc = 0;
out:
    curl_free(part);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(u);
    return rc;
}

static const struct mail_sender_ops smtp_sender_ops = {.send = smtp_send};

static char *dup_opt(const char *s)
{
    return s != NULL && s[0] != '\0' ? strdup(s) : NULL;
}

/* Checks one setopt; fills err naming the option. */
static int opt_ok(CURLcode rc, const char *name, char *err, size_t errlen)
{
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "smtp option %s: %s", name, curl_easy_strerror(rc));
        return 0;
    }
    return 1;
}

#define SETOPT(opt, val) opt_ok(curl_easy_setopt(s->curl, opt, val), #opt, err, errlen)

/* Caller frees the result with smtp_sender_free. */
struct smtp_sender *smtp_sender_new(const struct smtp_config *cfg, char *err, size_t errlen)
{
    struct smtp_sender *s = NULL;
    long use_ssl = CURLUSESSL_NONE;
    long connect_ms = cfg->connect_timeout_ms > 0 ? (long)cfg->connect_timeout_ms : 10000;
    long total_ms = cfg->timeout_ms > 0 ? (long)cfg->timeout_ms : 60000;

    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init: %s", curl_easy_strerror(curl_init_rc));
        goto fail;
    }
    static const char *const field_names[] = {"url", "starttls", "username", "password",
                                              "auth mechanisms"};
    enum smtp_config_field field;
    char why[200];
    if (smtp_config_check(cfg, &field, why, sizeof why) != 0) {
        snprintf(err, errlen, "smtp %s: %s", field_names[field], why);
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->url = url_with_ehlo(cfg->url, cfg->ehlo_name);
    s->username = dup_opt(cfg->username);
    s->password = dup_opt(cfg->password);
    s->ca_file = dup_opt(cfg->ca_file);
    s->stop_requested = cfg->stop_requested;
    s->curl = curl_easy_init();
    if (s->url == NULL || s->curl == NULL || (cfg->username && cfg->username[0] && !s->username) ||
        (cfg->password && cfg->password[0] && !s->password) ||
        (cfg->ca_file && cfg->ca_file[0] && !s->ca_file)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    switch (cfg->starttls) {
    case SMTP_STARTTLS_NONE:
        use_ssl = CURLUSESSL_NONE;
        break;
    case SMTP_STARTTLS_OPPORTUNISTIC:
        use_ssl = CURLUSESSL_TRY;
        break;
    case SMTP_STARTTLS_REQUIRED:
        use_ssl = CURLUSESSL_ALL;
        break;
    }
    if (!SETOPT(CURLOPT_URL, s->url) || !SETOPT(CURLOPT_ERRORBUFFER, s->errbuf) ||
        !SETOPT(CURLOPT_NOSIGNAL, 1L) || !SETOPT(CURLOPT_UPLOAD, 1L) ||
        !SETOPT(CURLOPT_READFUNCTION, read_cb) || !SETOPT(CURLOPT_HEADERFUNCTION, header_cb) ||
        !SETOPT(CURLOPT_HEADERDATA, s) || !SETOPT(CURLOPT_USE_SSL, use_ssl) ||
        !SETOPT(CURLOPT_CONNECTTIMEOUT_MS, connect_ms) || !SETOPT(CURLOPT_TIMEOUT_MS, total_ms) ||
        /* Each reply, the QUIT's too: libcurl says QUIT after a refusal and waits for its
         * reply outside CURLOPT_TIMEOUT_MS, 120 s by default. */
        !SETOPT(CURLOPT_SERVER_RESPONSE_TIMEOUT, (total_ms + 999) / 1000) ||
        !SETOPT(CURLOPT_SSL_VERIFYPEER, cfg->verify ? 1L : 0L) ||
        !SETOPT(CURLOPT_SSL_VERIFYHOST, cfg->verify ? 2L : 0L) ||
        !SETOPT(CURLOPT_TCP_KEEPALIVE, 1L)) {
        goto fail;
    }
    if (s->stop_requested != NULL &&
        (!SETOPT(CURLOPT_XFERINFOFUNCTION, xferinfo_cb) || !SETOPT(CURLOPT_XFERINFODATA, s) ||
         !SETOPT(CURLOPT_NOPROGRESS, 0L))) {
        goto fail;
    }
    if (s->ca_file != NULL && !SETOPT(CURLOPT_CAINFO, s->ca_file)) {
        goto fail;
    }
    if (s->username != NULL) {
        char opts[160];
        (void)login_options(cfg->auth_mechs, opts, sizeof opts); /* checked above */
        if (!SETOPT(CURLOPT_USERNAME, s->username) ||
            !SETOPT(CURLOPT_PASSWORD, s->password ? s->password : "") ||
            !SETOPT(CURLOPT_LOGIN_OPTIONS, opts)) {
            goto fail;
        }
    }
    return s;
fail:
    smtp_sender_free(s);
    return NULL;
}

/* Closes the connection (libcurl says QUIT) and frees s (NULL is fine). */
void smtp_sender_free(struct smtp_sender *s)
{
    if (s == NULL) {
        return;
    }
    if (s->curl != NULL) {
        curl_socket_t fd = CURL_SOCKET_BAD;
        if (curl_easy_getinfo(s->curl, CURLINFO_ACTIVESOCKET, &fd) == CURLE_OK &&
            fd != CURL_SOCKET_BAD) {
            (void)shutdown(fd, SHUT_RD); /* QUIT goes out; its reply is not waited for */
        }
        curl_easy_cleanup(s->curl);
    }
    if (s->password != NULL) {
        explicit_bzero(s->password, strlen(s->password));
    }
    free(s->ca_file);
    free(s->password);
    free(s->username);
    free(s->url);
    free(s);
}

struct mail_sender smtp_sender_port(struct smtp_sender *s)
{
    struct mail_sender port = {.ops = &smtp_sender_ops, .self = s};
    return port;
}
