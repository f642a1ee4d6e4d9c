/* Integration tests of smtp_sender against a real SMTP server (aiosmtpd, smtp_server.py):
 * plain and STARTTLS+AUTH delivery byte for byte, the mapping of 535/550/451/refused/timeout
 * to mail_result, one TCP connection for many messages, and reconnection after the server
 * restarts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "datasources/smtp_sender.h"
#include "pe_test_util.h"

#ifndef SMTP_SERVER_PY
#error "SMTP_SERVER_PY must be defined by the build"
#endif
#ifndef PYTHON3_WITH_AIOSMTPD
#define PYTHON3_WITH_AIOSMTPD "/usr/bin/python3"
#endif

#define USER     "pe-test@example.org" /* an '@' made libcurl pick GSSAPI when offered */
#define PASSWORD "s3cret-pw"

struct server {
    pid_t pid;
    unsigned short port;
    char dir[PATH_MAX / 2 + 32];
    char log[PATH_MAX + 16];
};

static char workdir[PATH_MAX / 2];
static char cert[PATH_MAX + 16], key[PATH_MAX + 16];

/* A message with CRLF ends, a line that starts with '.' (dot-stuffing) and UTF-8. */
static const char message[] = "From: push-email <noreply@example.org>\r\n"
                              "To: <alice@example.org>\r\n"
                              "Subject: =?UTF-8?B?T2zDoQ==?=\r\n"
                              "Message-ID: <abc@example.org>\r\n"
                              "MIME-Version: 1.0\r\n"
                              "Content-Type: text/plain; charset=UTF-8\r\n"
                              "\r\n"
                              "Olá, Alice.\r\n"
                              ".a line that starts with a dot\r\n"
                              "..two dots\r\n"
                              "last line\r\n";

enum srv_flags {
    SRV_TLS = 1,
    SRV_AUTH = 2,
    SRV_REFUSE_GREETING = 4,
    SRV_REFUSE_HELO = 8,
    SRV_STALL_GREETING = 16, /* accepts, never greets */
    SRV_SILENT_QUIT = 32,    /* never answers QUIT */
    SRV_OFFER_GSSAPI = 64,   /* offers AUTH GSSAPI and NTLM too, and fails them */
};

static int server_start_on(struct server *s, unsigned short port, int flags)
{
    char portarg[16];
    char *argv[40];
    int n = 0;
    char ready[PATH_MAX + 16];

    s->port = port;
    snprintf(portarg, sizeof portarg, "%u", (unsigned)port);
    snprintf(ready, sizeof ready, "%s/ready", s->dir);
    unlink(ready);
    argv[n++] = PYTHON3_WITH_AIOSMTPD;
    argv[n++] = SMTP_SERVER_PY;
    argv[n++] = "--port";
    argv[n++] = portarg;
    argv[n++] = "--dir";
    argv[n++] = s->dir;
    if (flags & SRV_TLS) {
        argv[n++] = "--tls-cert";
        argv[n++] = cert;
        argv[n++] = "--tls-key";
        argv[n++] = key;
        argv[n++] = "--require-tls";
    }
    if (flags & SRV_AUTH) {
        argv[n++] = "--auth";
        argv[n++] = USER ":" PASSWORD;
    }
    argv[n++] = "--reject550";
    argv[n++] = "nobody@example.org";
    argv[n++] = "--reject451";
    argv[n++] = "busy@example.org";
    argv[n++] = "--relay-denied";
    argv[n++] = "far@elsewhere.example";
    argv[n++] = "--unknown-in-relay-table";
    argv[n++] = "gone@relay.example.org";
    argv[n++] = "--reject-sender";
    argv[n++] = "blocked@example.org";
    argv[n++] = "--reject552-sender";
    argv[n++] = "huge@example.org";
    argv[n++] = "--stall-data-for";
    argv[n++] = "stall@example.org";
    argv[n++] = "--reject-data-for";
    argv[n++] = "spam@example.org";
    argv[n++] = "--drop-after-data-for";
    argv[n++] = "drop@example.org";
    if (flags & SRV_REFUSE_GREETING) {
        argv[n++] = "--refuse-greeting";
    }
    if (flags & SRV_REFUSE_HELO) {
        argv[n++] = "--refuse-helo";
    }
    if (flags & SRV_STALL_GREETING) {
        argv[n++] = "--stall-greeting";
    }
    if (flags & SRV_SILENT_QUIT) {
        argv[n++] = "--silent-quit";
    }
    if (flags & SRV_OFFER_GSSAPI) {
        argv[n++] = "--offer-gssapi";
    }
    argv[n] = NULL;
    s->pid = pe_spawn(argv, s->log);
    if (s->pid < 0 || pe_wait_file(ready, 15000) != 0) {
        size_t len;
        char *log = pe_read_file(s->log, &len);
        fprintf(stderr, "smtp_server.py did not start; its log:\n%s\n", log ? log : "(none)");
        free(log);
        pe_stop(s->pid);
        return -1;
    }
    return 0;
}

static int server_start(struct server *s, int flags)
{
    static int seq;

    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/srv%d", workdir, ++seq);
    snprintf(s->log, sizeof s->log, "%s.log", s->dir);
    if (mkdir(s->dir, 0755) != 0) {
        return -1;
    }
    return server_start_on(s, pe_free_port(), flags);
}

/* TCP connections the server saw: distinct client ports in its connections file (aiosmtpd
 * reports a connection again after STARTTLS, on the same port). */
static size_t connections(const struct server *s)
{
    char path[PATH_MAX + 32];
    long ports[256];
    size_t n = 0;
    char *text, *line, *save = NULL;

    snprintf(path, sizeof path, "%s/connections", s->dir);
    text = pe_read_file(path, NULL);
    if (text == NULL) {
        return 0;
    }
    for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        long port = strtol(line, NULL, 10);
        size_t i = 0;
        while (i < n && ports[i] != port) {
            i++;
        }
        if (i == n && n < sizeof ports / sizeof ports[0]) {
            ports[n++] = port;
        }
    }
    free(text);
    return n;
}

static char *saved(const struct server *s, int n, const char *ext, size_t *len)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/msg-%d.%s", s->dir, n, ext);
    if (pe_wait_file(path, 3000) != 0) {
        return NULL;
    }
    return pe_read_file(path, len);
}

static struct smtp_sender *sender_for(const struct server *s, enum smtp_starttls tls,
                                      const char *user, const char *password)
{
    char url[64], err[256] = "";
    struct smtp_config cfg = {
        .url = url,
        .starttls = tls,
        .username = user,
        .password = password,
        .ca_file = cert,
        .verify = true,
        .connect_timeout_ms = 2000,
        .timeout_ms = 5000,
    };
    struct smtp_sender *snd;

    snprintf(url, sizeof url, "smtp://127.0.0.1:%u", (unsigned)s->port);
    snd = smtp_sender_new(&cfg, err, sizeof err);
    if (snd == NULL) {
        fail_msg("smtp_sender_new: %s", err);
    }
    return snd;
}

static enum mail_result send_from(struct smtp_sender *snd, const char *from, const char *to,
                                  char *err, size_t errlen)
{
    struct mail_sender port = smtp_sender_port(snd);
    err[0] = '\0';
    return port.ops->send(port.self, from, to, message, sizeof message - 1, NULL, err, errlen);
}

static enum mail_result send_to(struct smtp_sender *snd, const char *to, char *err, size_t errlen)
{
    struct mail_sender port = smtp_sender_port(snd);
    err[0] = '\0';
    return port.ops->send(port.self, "noreply@example.org", to, message, sizeof message - 1, NULL,
                          err, errlen);
}

/* A gate that records when it ran and whether the server had accepted anything by then. */
struct gate_probe {
    const struct server *s;
    int calls;
    int accepted_before; /* msg-1.eml existed while the gate held the message */
    int answer;          /* what ready() returns */
};

static int probe_ready(void *ctx)
{
    struct gate_probe *g = ctx;
    char path[PATH_MAX + 32];

    g->calls++;
    usleep(300 * 1000); /* the server has had all but the last byte for a while */
    snprintf(path, sizeof path, "%s/msg-1.eml", g->s->dir);
    g->accepted_before = access(path, F_OK) == 0;
    return g->answer;
}

static enum mail_result send_gated(struct smtp_sender *snd, struct gate_probe *g, char *err,
                                   size_t errlen)
{
    struct mail_sender port = smtp_sender_port(snd);
    const struct mail_gate gate = {probe_ready, g};
    err[0] = '\0';
    return port.ops->send(port.self, "noreply@example.org", "alice@example.org", message,
                          sizeof message - 1, &gate, err, errlen);
}

/* The fixture of most tests: a server and a sender for it, stopped and freed by fx_down
 * (the tests' teardown) even when the test fails. */
struct fx {
    struct server s;
    struct smtp_sender *snd;
    char err[256];
};

static struct fx *fx_up(void **state, int flags, enum smtp_starttls tls, const char *user,
                        const char *password)
{
    struct fx *f = calloc(1, sizeof *f);

    assert_non_null(f);
    *state = f;
    if (server_start(&f->s, flags) != 0) {
        f->s.pid = 0; /* server_start_on stopped it */
        fail_msg("the test SMTP server did not start");
    }
    f->snd = sender_for(&f->s, tls, user, password);
    return f;
}

static int fx_down(void **state)
{
    struct fx *f = *state;

    if (f != NULL) {
        smtp_sender_free(f->snd);
        if (f->s.pid > 0) {
            pe_stop(f->s.pid);
        }
        free(f);
    }
    return 0;
}

/* Message n the server saved is exactly want (len bytes). */
static void assert_saved(const struct server *s, int n, const char *want, size_t want_len)
{
    size_t len = 0;
    char *got = saved(s, n, "eml", &len);

    assert_non_null(got);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, len);
    free(got);
}

static int group_setup(void **state)
{
    char *argv[40];
    int n = 0;
    char cwd[PATH_MAX / 4];
    char log[PATH_MAX + 16];
    (void)state;

    if (getcwd(cwd, sizeof cwd) == NULL) {
        return -1;
    }
    snprintf(workdir, sizeof workdir, "%s/smtp-test-XXXXXX", cwd);
    if (mkdtemp(workdir) == NULL) {
        perror("mkdtemp");
        return -1;
    }
    snprintf(cert, sizeof cert, "%s/cert.pem", workdir);
    snprintf(key, sizeof key, "%s/key.pem", workdir);
    snprintf(log, sizeof log, "%s/openssl.log", workdir);
    argv[n++] = "openssl";
    argv[n++] = "req";
    argv[n++] = "-x509";
    argv[n++] = "-newkey";
    argv[n++] = "rsa:2048";
    argv[n++] = "-nodes";
    argv[n++] = "-keyout";
    argv[n++] = key;
    argv[n++] = "-out";
    argv[n++] = cert;
    argv[n++] = "-days";
    argv[n++] = "1";
    argv[n++] = "-subj";
    argv[n++] = "/CN=localhost";
    argv[n++] = "-addext";
    argv[n++] = "subjectAltName=DNS:localhost,IP:127.0.0.1";
    argv[n] = NULL;
    if (pe_run(argv, log) != 0) {
        fprintf(stderr, "openssl could not make a test certificate (see %s)\n", log);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    char *argv[] = {"rm", "-rf", workdir, NULL};
    (void)state;
    return pe_run(argv, NULL) == 0 ? 0 : -1;
}

static void test_plain_send_arrives_byte_exact(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);

    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_SENT);
    assert_saved(&f->s, 1, message, sizeof message - 1);
    char *meta = saved(&f->s, 1, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "from=noreply@example.org\n"));
    assert_non_null(strstr(meta, "to=alice@example.org\n"));
    free(meta);
}

static void test_starttls_required_with_auth_delivers(void **state)
{
    struct fx *f = fx_up(state, SRV_TLS | SRV_AUTH, SMTP_STARTTLS_REQUIRED, USER, PASSWORD);

    if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send: %s", f->err);
    }
    assert_saved(&f->s, 1, message, sizeof message - 1);
    char *meta = saved(&f->s, 1, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "tls=1\n"));
    assert_non_null(strstr(meta, "login=" USER "\n"));
    free(meta);
}

static void test_wrong_password_is_transient(void **state)
{
    struct fx *f = fx_up(state, SRV_TLS | SRV_AUTH, SMTP_STARTTLS_REQUIRED, USER, "wrong");

    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_TRANSIENT);
    if (strstr(f->err, "535") == NULL) {
        fail_msg("reason does not carry the server's code: %s", f->err);
    }
    assert_null(strstr(f->err, "wrong")); /* the password never appears */
}

static void test_starttls_required_but_not_offered_is_transient(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_REQUIRED, NULL, NULL);

    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_TRANSIENT);
    assert_true(f->err[0] != '\0');
    assert_int_equal(connections(&f->s), 2); /* the server's own start probe + ours */
}

static void test_550_recipient_is_permanent_and_451_transient(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);

    assert_int_equal(send_to(f->snd, "nobody@example.org", f->err, sizeof f->err), MAIL_PERMANENT);
    if (strncmp(f->err, "550", 3) != 0) {
        fail_msg("reason: %s", f->err);
    }
    assert_int_equal(send_to(f->snd, "busy@example.org", f->err, sizeof f->err), MAIL_TRANSIENT);
    if (strncmp(f->err, "451", 3) != 0) {
        fail_msg("reason: %s", f->err);
    }
    /* A recipient the relay will not relay to for us (no AUTH, say): the relay's setup,
     * the same for every recipient, so transient; a `failed` mark could not be undone
     * once the relay is fixed. */
    assert_int_equal(send_to(f->snd, "far@elsewhere.example", f->err, sizeof f->err),
                     MAIL_TRANSIENT);
    if (strcmp(f->err, "554 5.7.1 <far@elsewhere.example>: Relay access denied") != 0) {
        fail_msg("reason: %s", f->err);
    }
    /* "relay" in the address and in Postfix's unknown-user reply: still the recipient's. */
    assert_int_equal(send_to(f->snd, "gone@relay.example.org", f->err, sizeof f->err),
                     MAIL_PERMANENT);
    if (strncmp(f->err, "550 5.1.1 <gone@relay.example.org>", 34) != 0) {
        fail_msg("reason: %s", f->err);
    }
    /* The same sender goes on working after refusals. */
    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_SENT);
}

/* A refused envelope sender is ours and the same for every email: transient (the consumer
 * pauses and alerts) rather than a DLQ entry per email. 552 (too big) stays permanent. */
static void test_refused_sender_is_transient_but_552_permanent(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);
    char *err = f->err;

    assert_int_equal(
        send_from(f->snd, "blocked@example.org", "alice@example.org", err, sizeof f->err),
        MAIL_TRANSIENT);
    if (strncmp(err, "550 5.7.1", 9) != 0) {
        fail_msg("reason: %s", err);
    }
    assert_int_equal(send_from(f->snd, "huge@example.org", "alice@example.org", err, sizeof f->err),
                     MAIL_PERMANENT);
    if (strncmp(err, "552", 3) != 0) {
        fail_msg("reason: %s", err);
    }
    /* A refused recipient is still permanent, and the sender goes on working. */
    assert_int_equal(send_to(f->snd, "nobody@example.org", err, sizeof f->err), MAIL_PERMANENT);
    assert_int_equal(send_to(f->snd, "alice@example.org", err, sizeof f->err), MAIL_SENT);
}

/* A relay that refuses US (at the greeting or at EHLO/HELO) refuses every email alike: a
 * configuration matter, transient, never a `failed` mark per email that a fixed relay could
 * not undo. A 554 to the end of DATA refuses this message's content: permanent. */
static void test_refused_client_is_transient_refused_content_permanent(void **state)
{
    struct fx *f = fx_up(state, SRV_REFUSE_GREETING, SMTP_STARTTLS_NONE, NULL, NULL);
    char *err = f->err;

    assert_int_equal(send_to(f->snd, "alice@example.org", err, sizeof f->err), MAIL_TRANSIENT);
    if (strstr(err, "554") == NULL) {
        fail_msg("reason: %s", err);
    }
    fx_down(state);

    f = fx_up(state, SRV_REFUSE_HELO, SMTP_STARTTLS_NONE, NULL, NULL);
    err = f->err;
    assert_int_equal(send_to(f->snd, "alice@example.org", err, sizeof f->err), MAIL_TRANSIENT);
    if (strstr(err, "550") == NULL) {
        fail_msg("reason: %s", err);
    }
    fx_down(state);

    f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);
    err = f->err;
    assert_int_equal(send_to(f->snd, "spam@example.org", err, sizeof f->err), MAIL_PERMANENT);
    if (strncmp(err, "554 5.7.1", 9) != 0) {
        fail_msg("reason: %s", err);
    }
    assert_int_equal(send_to(f->snd, "alice@example.org", err, sizeof f->err), MAIL_SENT);
    assert_saved(&f->s, 1, message, sizeof message - 1);
}

static volatile int stop_flag;
static bool test_stop_requested(void)
{
    return stop_flag != 0;
}
static void *stop_after_300ms(void *arg)
{
    (void)arg;
    usleep(300 * 1000);
    stop_flag = 1;
    return NULL;
}

/* A stop (SIGTERM) while the server stalls at the greeting: the send is abandoned within
 * about two seconds, not after timeout_ms (60 s here). Stalled after the end of data, the
 * server may be accepting the message: then a stop does NOT abandon it (that could send it
 * twice); the wait ends with timeout_ms (3 s in that round), and free() does not wait for
 * the reply to QUIT. */
static void test_stop_abandons_a_stalled_send(void **state)
{
    struct server silent, s;
    char url[64], err[256] = "";
    pthread_t t;
    (void)state;
    assert_int_equal(server_start(&silent, SRV_STALL_GREETING), 0);

    struct smtp_config cfg = {
        .url = url,
        .starttls = SMTP_STARTTLS_NONE,
        .connect_timeout_ms = 60000,
        .timeout_ms = 60000,
        .stop_requested = test_stop_requested,
    };
    for (int round = 0; round < 2; round++) {
        const char *to = "alice@example.org";
        if (round == 0) {
            snprintf(url, sizeof url, "smtp://127.0.0.1:%u", (unsigned)silent.port);
        } else {
            assert_int_equal(server_start(&s, 0), 0);
            snprintf(url, sizeof url, "smtp://127.0.0.1:%u", (unsigned)s.port);
            to = "stall@example.org";
            cfg.timeout_ms = 3000;
        }
        struct smtp_sender *snd = smtp_sender_new(&cfg, err, sizeof err);
        assert_non_null(snd);
        stop_flag = 0;
        assert_int_equal(pthread_create(&t, NULL, stop_after_300ms, NULL), 0);
        long long t0 = pe_now_ms();
        assert_int_equal(send_to(snd, to, err, sizeof err), MAIL_TRANSIENT);
        long long took = pe_now_ms() - t0;
        pthread_join(t, NULL);
        if (round == 0 && (took > 4000 || strstr(err, "stopping") == NULL)) {
            fail_msg("round %d: took %lld ms: %s", round, took, err);
        }
        if (round == 1 && (took < 2500 || strstr(err, "imeout") == NULL)) {
            fail_msg("round %d: abandoned after the end of data (%lld ms): %s", round, took, err);
        }
        long long t1 = pe_now_ms();
        smtp_sender_free(snd);
        assert_true(pe_now_ms() - t1 < 1500);
    }
    stop_flag = 0;
    pe_stop(s.pid);
    pe_stop(silent.pid);
}

/* No reply to the end of data within timeout_ms: transient, and that connection is not used
 * again (the late reply would answer the next MAIL FROM); the next send gets a new one. */
static void test_end_of_data_timeout_does_not_poison_the_next_send(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL); /* timeout_ms 5 s */
    size_t before = connections(&f->s); /* the sender connects on its first send */

    assert_int_equal(send_to(f->snd, "stall@example.org", f->err, sizeof f->err), MAIL_TRANSIENT);
    long long t0 = pe_now_ms();
    if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send after the stalled one: %s", f->err);
    }
    assert_true(pe_now_ms() - t0 < 2000);
    char *meta = saved(&f->s, 1, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "to=alice@example.org\n"));
    free(meta);
    assert_int_equal(connections(&f->s) - before, 2);
    long long t1 = pe_now_ms();
    smtp_sender_free(f->snd);
    f->snd = NULL;
    assert_true(pe_now_ms() - t1 < 3000);
}

static void test_server_down_is_transient_fast(void **state)
{
    struct server s;
    struct smtp_sender *snd;
    char err[256];
    long long t0;
    (void)state;

    memset(&s, 0, sizeof s);
    s.port = pe_free_port(); /* nothing listens there */
    snd = sender_for(&s, SMTP_STARTTLS_NONE, NULL, NULL);
    t0 = pe_now_ms();
    assert_int_equal(send_to(snd, "alice@example.org", err, sizeof err), MAIL_TRANSIENT);
    assert_true(pe_now_ms() - t0 < 2000);
    assert_true(err[0] != '\0');
    smtp_sender_free(snd);
}

static void test_silent_server_times_out_transient(void **state)
{
    struct server s;
    struct smtp_sender *snd;
    char err[256];
    long long t0, took;
    (void)state;

    assert_int_equal(server_start(&s, SRV_STALL_GREETING), 0);
    snd = sender_for(&s, SMTP_STARTTLS_NONE, NULL, NULL);
    t0 = pe_now_ms();
    assert_int_equal(send_to(snd, "alice@example.org", err, sizeof err), MAIL_TRANSIENT);
    took = pe_now_ms() - t0;
    /* libcurl counts the greeting and EHLO as part of connecting: connect_timeout_ms (2 s)
     * bounds it, well before timeout_ms (5 s). */
    assert_true(took >= 1500 && took < 4500);
    assert_non_null(strstr(err, "imeout"));
    smtp_sender_free(snd);
    pe_stop(s.pid);
}

/* After a refusal libcurl says QUIT and waits for its reply: a server silent by then holds
 * the send no longer than timeout_ms (libcurl's own wait is 120 s). */
static void test_a_silent_quit_after_a_refusal_is_bounded_by_the_timeout(void **state)
{
    struct fx *f = fx_up(state, SRV_SILENT_QUIT, SMTP_STARTTLS_NONE, NULL, NULL); /* 5 s */

    long long t0 = pe_now_ms();
    assert_int_equal(send_to(f->snd, "nobody@example.org", f->err, sizeof f->err), MAIL_PERMANENT);
    long long took = pe_now_ms() - t0;
    if (took > 7000 || strncmp(f->err, "550", 3) != 0) {
        fail_msg("took %lld ms (timeout_ms 5000): %s", took, f->err);
    }
    /* the connection is gone: the next send opens a new one and delivers */
    if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send after the refusal: %s", f->err);
    }
}

/* A server that offers GSSAPI and NTLM (Exchange does): AUTH uses PLAIN or LOGIN only, not a
 * mechanism that fails without a Kerberos ticket on every send. */
static void test_auth_uses_only_the_configured_mechanisms(void **state)
{
    struct fx *f =
        fx_up(state, SRV_TLS | SRV_AUTH | SRV_OFFER_GSSAPI, SMTP_STARTTLS_REQUIRED, USER, PASSWORD);

    if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send: %s", f->err);
    }
    char *meta = saved(&f->s, 1, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "login=" USER "\n"));
    free(meta);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/mechanisms", f->s.dir);
    assert_int_equal(access(path, F_OK), -1); /* neither GSSAPI nor NTLM was tried */
}

/* EHLO names the URL's path when it has one, else ehlo_name; without either libcurl says
 * this machine's host name (in a pod not a fully qualified one, which relays may refuse). */
static void test_ehlo_is_the_urls_path_else_the_configured_name(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);
    char host[256] = "";
    static const struct {
        const char *path, *ehlo;
    } cases[] = {{"", "client.example.org"},
                 {"/", "client.example.org"},
                 {"/relay-name.example.org", "client.example.org"},
                 {"", NULL}};

    assert_int_equal(gethostname(host, sizeof host - 1), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char url[128], want[300], err[256] = "";
        snprintf(url, sizeof url, "smtp://127.0.0.1:%u%s", (unsigned)f->s.port, cases[i].path);
        struct smtp_config cfg = {.url = url,
                                  .starttls = SMTP_STARTTLS_NONE,
                                  .ehlo_name = cases[i].ehlo,
                                  .connect_timeout_ms = 2000,
                                  .timeout_ms = 5000};
        struct smtp_sender *snd = smtp_sender_new(&cfg, err, sizeof err);
        if (snd == NULL)
            fail_msg("%s: %s", url, err);
        enum mail_result r = send_to(snd, "alice@example.org", err, sizeof err);
        smtp_sender_free(snd);
        if (r != MAIL_SENT)
            fail_msg("%s: %s", url, err);
        char *meta = saved(&f->s, (int)i + 1, "meta", NULL);
        assert_non_null(meta);
        snprintf(want, sizeof want, "helo=%s\n",
                 strlen(cases[i].path) > 1 ? cases[i].path + 1
                 : cases[i].ehlo != NULL   ? cases[i].ehlo
                                           : host);
        if (strstr(meta, want) == NULL)
            fail_msg("%s (ehlo %s): want %s in %s", url, cases[i].ehlo ? cases[i].ehlo : "-", want,
                     meta);
        free(meta);
    }
}

/* Settings that would fail every send, or send the password where it can be read, are
 * refused before anything is sent. */
static void test_unsafe_or_broken_settings_are_refused(void **state)
{
    static const struct {
        const char *url;
        enum smtp_starttls tls;
        const char *user, *password, *mechs;
        enum smtp_config_field field; /* -1: accepted */
    } cases[] = {
        {"smtp://127.0.0.1:1025", SMTP_STARTTLS_NONE, NULL, NULL, NULL, -1},
        {"smtps://mail.example.org", SMTP_STARTTLS_OPPORTUNISTIC, "u", "p", NULL, -1},
        {"smtp://mail.example.org:587/client.example.org", SMTP_STARTTLS_REQUIRED, "u", "p",
         "login, cram-md5", -1},
        {"smtp://", SMTP_STARTTLS_NONE, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"smtp://mail.example.org:99999", SMTP_STARTTLS_NONE, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"smtp://exa mple.org", SMTP_STARTTLS_NONE, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"http://mail.example.org", SMTP_STARTTLS_NONE, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"mail.example.org:25", SMTP_STARTTLS_NONE, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"smtp://u:p@mail.example.org", SMTP_STARTTLS_REQUIRED, NULL, NULL, NULL, SMTP_CONFIG_URL},
        {"smtp://;AUTH=PLAIN@mail.example.org", SMTP_STARTTLS_REQUIRED, NULL, NULL, NULL,
         SMTP_CONFIG_URL},
        {"smtp://mail.example.org", SMTP_STARTTLS_OPPORTUNISTIC, "u", "p", NULL,
         SMTP_CONFIG_STARTTLS},
        {"smtp://mail.example.org", SMTP_STARTTLS_NONE, "u", "p", NULL, SMTP_CONFIG_STARTTLS},
        {"smtp://mail.example.org", SMTP_STARTTLS_REQUIRED, "u", "", NULL, SMTP_CONFIG_PASSWORD},
        {"smtp://mail.example.org", SMTP_STARTTLS_REQUIRED, NULL, "p", NULL, SMTP_CONFIG_USERNAME},
        {"smtp://mail.example.org", SMTP_STARTTLS_REQUIRED, "u", "p", "PLAIN XOAUTH2",
         SMTP_CONFIG_AUTH_MECHS},
        {"smtp://mail.example.org", SMTP_STARTTLS_REQUIRED, "u", "p", "EXTERNAL",
         SMTP_CONFIG_AUTH_MECHS},
        {"smtp://mail.example.org", SMTP_STARTTLS_REQUIRED, "u", "p", " , ",
         SMTP_CONFIG_AUTH_MECHS},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_config cfg = {
            .url = cases[i].url,
            .starttls = cases[i].tls,
            .username = cases[i].user,
            .password = cases[i].password,
            .auth_mechs = cases[i].mechs,
            .verify = true,
        };
        enum smtp_config_field field = SMTP_CONFIG_URL;
        char err[256] = "";
        int rc = smtp_config_check(&cfg, &field, err, sizeof err);
        struct smtp_sender *snd = smtp_sender_new(&cfg, err, sizeof err);
        if ((int)cases[i].field == -1) {
            if (rc != 0 || snd == NULL) {
                fail_msg("%s: refused: %s", cases[i].url, err);
            }
        } else if (rc != -1 || field != cases[i].field || snd != NULL) {
            fail_msg("case %zu (%s): rc %d field %d, want field %d", i, cases[i].url, rc,
                     (int)field, (int)cases[i].field);
        }
        smtp_sender_free(snd);
    }
}

static void test_twenty_sends_use_one_connection(void **state)
{
    struct fx *f = fx_up(state, SRV_TLS | SRV_AUTH, SMTP_STARTTLS_REQUIRED, USER, PASSWORD);
    size_t before = connections(&f->s); /* the server's own start probe */

    for (int i = 0; i < 20; i++) {
        if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
            fail_msg("send %d: %s", i, f->err);
        }
    }
    free(saved(&f->s, 20, "eml", NULL));
    assert_int_equal(connections(&f->s) - before, 1);
}

static void test_server_restart_between_sends_reconnects(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);

    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_SENT);
    pe_stop(f->s.pid);
    f->s.pid = 0;
    assert_int_equal(server_start_on(&f->s, f->s.port, 0), 0);
    if (send_to(f->snd, "alice@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send after restart: %s", f->err);
    }
    /* The new server process numbers its messages from 1 again. */
    char *got = saved(&f->s, 1, "eml", NULL);
    assert_non_null(got);
    free(got);
}

/* The gate runs once, before the end of data: the server has accepted nothing while it
 * waits, and the message arrives byte for byte after it (over STARTTLS, where the last
 * byte goes in a TLS record of its own). A gate that refuses abandons the message: the
 * server never accepts it, and the next send works on a new connection. */
static void test_gate_holds_the_end_of_data(void **state)
{
    struct fx *f = fx_up(state, SRV_TLS | SRV_AUTH, SMTP_STARTTLS_REQUIRED, USER, PASSWORD);
    struct smtp_sender *snd = f->snd;
    struct server *s = &f->s;
    char *err = f->err;
    char *got;

    struct gate_probe g = {s, 0, 0, 0};
    if (send_gated(snd, &g, err, sizeof f->err) != MAIL_SENT) {
        fail_msg("gated send: %s", err);
    }
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.accepted_before, 0);
    assert_saved(s, 1, message, sizeof message - 1);

    /* Exactly one line that starts with a dot: libcurl stuffs one byte, which must not let
     * it end the DATA before the held-back byte and the gate. */
    static const char one_dot[] = "From: <noreply@example.org>\r\nTo: <alice@example.org>\r\n"
                                  "Subject: one dot\r\n\r\nfirst\r\n.dot line\r\nlast\r\n";
    struct gate_probe g1 = {s, 0, 0, 0};
    struct mail_sender port1 = smtp_sender_port(snd);
    const struct mail_gate gate1 = {probe_ready, &g1};
    assert_int_equal(port1.ops->send(port1.self, "noreply@example.org", "carol@example.org",
                                     one_dot, sizeof one_dot - 1, &gate1, err, sizeof f->err),
                     MAIL_SENT);
    assert_int_equal(g1.calls, 1);
    assert_saved(s, 2, one_dot, sizeof one_dot - 1);

    struct gate_probe no = {s, 0, 0, -1};
    assert_int_equal(send_gated(snd, &no, err, sizeof f->err), MAIL_TRANSIENT);
    assert_int_equal(no.calls, 1);
    assert_non_null(strstr(err, "gate"));
    assert_int_equal(send_to(snd, "bob@example.org", err, sizeof f->err), MAIL_SENT);
    got = saved(s, 3, "meta", NULL); /* the refused message was never numbered */
    assert_non_null(got);
    assert_non_null(strstr(got, "to=bob@example.org\n"));
    free(got);
    usleep(200 * 1000);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/msg-4.eml", s->dir);
    assert_int_equal(access(path, F_OK), -1);
}

/* The server accepts a message and the connection drops before its reply to the end of DATA
 * comes: on a reused connection, this must not be taken for a connection that was already
 * dead (which is retried at once on a new one), or the person gets the message twice. The
 * outcome is unknown to us: transient (the caller may send it again later, with the same
 * Message-ID), and the server has it once. */
static void test_drop_after_end_of_data_is_not_resent_at_once(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);

    assert_int_equal(send_to(f->snd, "alice@example.org", f->err, sizeof f->err), MAIL_SENT);
    assert_int_equal(send_to(f->snd, "drop@example.org", f->err, sizeof f->err), MAIL_TRANSIENT);
    char *meta = saved(&f->s, 2, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "to=drop@example.org\n"));
    free(meta);
    usleep(300 * 1000);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/msg-3.eml", f->s.dir);
    assert_int_equal(access(path, F_OK), -1);
    if (send_to(f->snd, "bob@example.org", f->err, sizeof f->err) != MAIL_SENT) {
        fail_msg("send after the dropped one: %s", f->err);
    }
    meta = saved(&f->s, 3, "meta", NULL);
    assert_non_null(meta);
    assert_non_null(strstr(meta, "to=bob@example.org\n"));
    free(meta);
}

static void test_address_with_crlf_is_refused_permanently(void **state)
{
    struct fx *f = fx_up(state, 0, SMTP_STARTTLS_NONE, NULL, NULL);

    assert_int_equal(
        send_to(f->snd, "alice@example.org>\r\nRCPT TO:<eve@example.org", f->err, sizeof f->err),
        MAIL_PERMANENT);
    assert_int_equal(send_to(f->snd, "", f->err, sizeof f->err), MAIL_PERMANENT);
    assert_int_equal(connections(&f->s), 1); /* only the start probe: we never connected */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_plain_send_arrives_byte_exact, fx_down),
        cmocka_unit_test_teardown(test_starttls_required_with_auth_delivers, fx_down),
        cmocka_unit_test_teardown(test_wrong_password_is_transient, fx_down),
        cmocka_unit_test_teardown(test_starttls_required_but_not_offered_is_transient, fx_down),
        cmocka_unit_test_teardown(test_550_recipient_is_permanent_and_451_transient, fx_down),
        cmocka_unit_test_teardown(test_refused_sender_is_transient_but_552_permanent, fx_down),
        cmocka_unit_test_teardown(test_refused_client_is_transient_refused_content_permanent,
                                  fx_down),
        cmocka_unit_test(test_stop_abandons_a_stalled_send),
        cmocka_unit_test_teardown(test_end_of_data_timeout_does_not_poison_the_next_send, fx_down),
        cmocka_unit_test(test_server_down_is_transient_fast),
        cmocka_unit_test(test_silent_server_times_out_transient),
        cmocka_unit_test_teardown(test_a_silent_quit_after_a_refusal_is_bounded_by_the_timeout,
                                  fx_down),
        cmocka_unit_test_teardown(test_auth_uses_only_the_configured_mechanisms, fx_down),
        cmocka_unit_test_teardown(test_ehlo_is_the_urls_path_else_the_configured_name, fx_down),
        cmocka_unit_test(test_unsafe_or_broken_settings_are_refused),
        cmocka_unit_test_teardown(test_twenty_sends_use_one_connection, fx_down),
        cmocka_unit_test_teardown(test_server_restart_between_sends_reconnects, fx_down),
        cmocka_unit_test_teardown(test_gate_holds_the_end_of_data, fx_down),
        cmocka_unit_test_teardown(test_drop_after_end_of_data_is_not_resent_at_once, fx_down),
        cmocka_unit_test_teardown(test_address_with_crlf_is_refused_permanently, fx_down),
    };
    return cmocka_run_group_tests_name("smtp_sender", tests, group_setup, group_teardown);
}
