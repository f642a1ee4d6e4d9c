/* bench/push-email/baseline.c: the bare libcurl SMTP send loop push-email is compared with.
 *
 * ONE easy handle for the whole run (so libcurl keeps one SMTP connection and every message
 * after the first goes out with MAIL FROM on it), the same options push-email's
 * smtp_sender.c sets (UPLOAD, read callback, USE_SSL try, NOSIGNAL, TCP keepalive,
 * timeouts), and a per-message recipient list, as push-email builds one per send. It sends
 * the same message bytes (a file, normally a message push-email itself produced) N times,
 * to a distinct recipient each time, and prints emails/s and per-send latency.
 *
 *   push_email_baseline --url smtp://127.0.0.1:2525 --file msg.eml --count 5000
 *
 * Not a test: nothing registers it with ctest. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct upload {
    const char *p;
    size_t left;
};

static size_t read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    struct upload *u = arg;
    size_t n = size * nitems;
    if (n > u->left)
        n = u->left;
    memcpy(buf, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (buf = malloc((size_t)n + 1)) == NULL ||
        fread(buf, 1, (size_t)n, f) != (size_t)n) {
        if (f)
            fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *url = "smtp://127.0.0.1:2525", *file = NULL, *from = "no-reply@cdc-notify.local";
    long count = 5000;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0)
            url = argv[i + 1];
        else if (strcmp(argv[i], "--file") == 0)
            file = argv[i + 1];
        else if (strcmp(argv[i], "--count") == 0)
            count = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--from") == 0)
            from = argv[i + 1];
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    size_t len = 0;
    char *data = file ? read_file(file, &len) : NULL;
    if (data == NULL || count <= 0) {
        fprintf(stderr, "usage: %s --file MESSAGE [--url smtp://h:p] [--count N] [--from A]\n",
                argv[0]);
        return 2;
    }
    double *lat = calloc((size_t)count, sizeof *lat);
    if (lat == NULL || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    CURL *c = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE], from_arg[300], to_arg[300];
    snprintf(from_arg, sizeof from_arg, "<%s>", from);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from_arg);

    long failures = 0, connects = 0;
    double t0 = now_s();
    for (long i = 0; i < count; i++) {
        struct upload up = {data, len};
        snprintf(to_arg, sizeof to_arg, "<baseline-%ld@example.org>", i);
        struct curl_slist *rcpt = curl_slist_append(NULL, to_arg);
        curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
        double s = now_s();
        errbuf[0] = '\0';
        CURLcode rc = curl_easy_perform(c);
        lat[i] = now_s() - s;
        long nc = 0;
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &nc);
        connects += nc;
        if (rc != CURLE_OK) {
            failures++;
            if (failures < 5)
                fprintf(stderr, "send %ld: %s %s\n", i, curl_easy_strerror(rc), errbuf);
        }
        curl_easy_setopt(c, CURLOPT_MAIL_RCPT, (struct curl_slist *)NULL);
        curl_slist_free_all(rcpt);
    }
    double el = now_s() - t0;
    qsort(lat, (size_t)count, sizeof *lat, cmp_double);
    printf("baseline: %ld messages of %zu bytes in %.3f s = %.1f emails/s; connections %ld; "
           "failures %ld; send p50 %.3f ms p99 %.3f ms\n",
           count, len, el, (double)count / el, connects, failures, lat[count / 2] * 1e3,
           lat[(size_t)((double)count * 0.99)] * 1e3);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    free(lat);
    free(data);
    return failures == 0 ? 0 : 1;
}
