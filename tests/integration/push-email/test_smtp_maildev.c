/* Integration test of smtp_sender against maildev (the local stack's SMTP sink): a message
 * sent through the adapter is read back through maildev's HTTP API (GET /email). Skips
 * (exit 77) when scripts/stack has not installed maildev under .cache/stack. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datasources/smtp_sender.h"
#include "pe_test_util.h"
#include "tests/lib/ci.h"

#ifndef MAILDEV_BIN
#error "MAILDEV_BIN must be defined by the build"
#endif

static pid_t maildev_pid;
static unsigned short smtp_port, web_port;

struct buf {
    char *p;
    size_t n;
};

static size_t write_cb(char *data, size_t size, size_t nitems, void *arg)
{
    struct buf *b = arg;
    size_t n = size * nitems;
    char *np = realloc(b->p, b->n + n + 1);
    if (np == NULL) {
        return 0;
    }
    memcpy(np + b->n, data, n);
    b->p = np;
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

/* GET http://127.0.0.1:<web_port><path>; the body (caller frees) or NULL. */
static char *http_get(const char *path, long *status)
{
    char url[128];
    struct buf b = {NULL, 0};
    CURL *c = curl_easy_init();
    CURLcode rc;

    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)web_port, path);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 3000L);
    rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.p);
        return NULL;
    }
    return b.p != NULL ? b.p : strdup("");
}

static int group_setup(void **state)
{
    char sp[16], wp[16];
    char *argv[] = {MAILDEV_BIN, "--smtp", sp, "--web", wp, "--ip", "127.0.0.1", NULL};
    long long deadline;
    (void)state;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    smtp_port = pe_free_port();
    web_port = pe_free_port();
    snprintf(sp, sizeof sp, "%u", (unsigned)smtp_port);
    snprintf(wp, sizeof wp, "%u", (unsigned)web_port);
    maildev_pid = pe_spawn(argv, "maildev-test.log");
    deadline = pe_now_ms() + 20000;
    while (pe_now_ms() < deadline) {
        long status = 0;
        char *body = http_get("/email", &status);
        free(body);
        if (status == 200) {
            return 0;
        }
        pe_sleep_ms(200);
    }
    fprintf(stderr, "maildev did not answer on :%u (see maildev-test.log)\n", (unsigned)web_port);
    return -1;
}

static int group_teardown(void **state)
{
    (void)state;
    pe_stop(maildev_pid);
    curl_global_cleanup();
    return 0;
}

static void test_message_arrives_in_maildev(void **state)
{
    static const char msg[] = "From: <noreply@example.org>\r\n"
                              "To: <bob@example.org>\r\n"
                              "Subject: maildev-check-42\r\n"
                              "Message-ID: <m42@example.org>\r\n"
                              "MIME-Version: 1.0\r\n"
                              "Content-Type: text/plain; charset=UTF-8\r\n"
                              "\r\n"
                              "hello from the smtp adapter\r\n";
    char url[64], err[256] = "";
    struct smtp_config cfg = {
        .url = url, .starttls = SMTP_STARTTLS_NONE, .connect_timeout_ms = 2000, .timeout_ms = 5000};
    struct smtp_sender *snd;
    struct mail_sender port;
    long status = 0;
    char *body = NULL;
    cJSON *arr = NULL, *item;
    int found = 0;
    long long deadline;
    (void)state;

    snprintf(url, sizeof url, "smtp://127.0.0.1:%u", (unsigned)smtp_port);
    snd = smtp_sender_new(&cfg, err, sizeof err);
    assert_non_null(snd);
    port = smtp_sender_port(snd);
    if (port.ops->send(port.self, "noreply@example.org", "bob@example.org", msg, sizeof msg - 1,
                       NULL, err, sizeof err) != MAIL_SENT) {
        fail_msg("send: %s", err);
    }
    deadline = pe_now_ms() + 5000;
    while (!found && pe_now_ms() < deadline) {
        body = http_get("/email", &status);
        assert_int_equal(status, 200);
        arr = cJSON_Parse(body);
        assert_true(cJSON_IsArray(arr));
        cJSON_ArrayForEach(item, arr)
        {
            const cJSON *subj = cJSON_GetObjectItemCaseSensitive(item, "subject");
            const cJSON *to = cJSON_GetObjectItemCaseSensitive(item, "to");
            const cJSON *to0 = cJSON_GetArrayItem(to, 0);
            const cJSON *addr = cJSON_GetObjectItemCaseSensitive(to0, "address");
            if (cJSON_IsString(subj) && strcmp(subj->valuestring, "maildev-check-42") == 0 &&
                cJSON_IsString(addr) && strcmp(addr->valuestring, "bob@example.org") == 0) {
                found = 1;
            }
        }
        cJSON_Delete(arr);
        free(body);
        if (!found) {
            pe_sleep_ms(100);
        }
    }
    assert_true(found);
    smtp_sender_free(snd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_arrives_in_maildev),
    };
    if (access(MAILDEV_BIN, X_OK) != 0) {
        /* In CI scripts/test has run `scripts/stack fetch`: a missing maildev is a failure. */
        bool in_ci = test_in_ci();
        printf("%s: maildev is not installed at %s (./scripts/stack fetch installs it)\n",
               in_ci ? "FAIL" : "SKIP", MAILDEV_BIN);
        return in_ci ? 1 : 77;
    }
    return cmocka_run_group_tests_name("smtp_maildev", tests, group_setup, group_teardown);
}
