/* Unit tests of shared/metrics: exact exposition text, validation, concurrent updates. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shared/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void small_registry_renders_exactly(void **state)
{
    static const double bounds[] = {0.1, 0.5, 1};
    struct metrics *m = metrics_new();
    struct metric_counter *get200;
    struct metric_counter *post500;
    struct metric_gauge *inflight;
    struct metric_histogram *lat;
    struct metric_histogram *plain;
    char *text;

    (void)state;
    assert_non_null(m);
    get200 = metrics_counter(m, "http_requests_total", "Requests served.",
                             "method=\"GET\",code=\"200\"");
    inflight = metrics_gauge(m, "in_flight", "Requests in progress.", NULL);
    post500 = metrics_counter(m, "http_requests_total", "ignored: first help wins",
                              "method=\"POST\",code=\"500\"");
    lat = metrics_histogram(m, "req_seconds", "Latency.", "route=\"/u\"", bounds, 3);
    plain = metrics_histogram(m, "job_seconds", "Job time.\nSecond \\ line.", NULL, bounds, 2);
    assert_non_null(get200);
    assert_non_null(post500);
    assert_non_null(inflight);
    assert_non_null(lat);
    assert_non_null(plain);
    metric_counter_add(get200, 3);
    metric_counter_add(get200, 2);
    metric_counter_add(post500, 1);
    assert_int_equal(metric_counter_value(get200), 5);
    assert_int_equal(metric_counter_value(NULL), 0);
    metric_gauge_set(inflight, 10);
    metric_gauge_add(inflight, -12);
    metric_histogram_observe(lat, 0.05);
    metric_histogram_observe(lat, 0.1); /* le is inclusive */
    metric_histogram_observe(lat, 0.3);
    metric_histogram_observe(lat, 2);
    metric_histogram_observe(plain, 0.75);
    text = metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "# HELP http_requests_total Requests served.\n"
                              "# TYPE http_requests_total counter\n"
                              "http_requests_total{method=\"GET\",code=\"200\"} 5\n"
                              "http_requests_total{method=\"POST\",code=\"500\"} 1\n"
                              "# HELP in_flight Requests in progress.\n"
                              "# TYPE in_flight gauge\n"
                              "in_flight -2\n"
                              "# HELP req_seconds Latency.\n"
                              "# TYPE req_seconds histogram\n"
                              "req_seconds_bucket{route=\"/u\",le=\"0.1\"} 2\n"
                              "req_seconds_bucket{route=\"/u\",le=\"0.5\"} 3\n"
                              "req_seconds_bucket{route=\"/u\",le=\"1\"} 3\n"
                              "req_seconds_bucket{route=\"/u\",le=\"+Inf\"} 4\n"
                              "req_seconds_sum{route=\"/u\"} 2.45\n"
                              "req_seconds_count{route=\"/u\"} 4\n"
                              "# HELP job_seconds Job time.\\nSecond \\\\ line.\n"
                              "# TYPE job_seconds histogram\n"
                              "job_seconds_bucket{le=\"0.1\"} 0\n"
                              "job_seconds_bucket{le=\"0.5\"} 0\n"
                              "job_seconds_bucket{le=\"+Inf\"} 1\n"
                              "job_seconds_sum 0.75\n"
                              "job_seconds_count 1\n");
    free(text);
    metrics_free(m);
}

static void empty_registry_renders_empty(void **state)
{
    struct metrics *m = metrics_new();
    char *text;

    (void)state;
    text = metrics_render(m);
    assert_non_null(text);
    assert_string_equal(text, "");
    free(text);
    metrics_free(m);
    metrics_free(NULL);
}

static void invalid_names_rejected(void **state)
{
    static const char *const bad[] = {"", "1abc", "a-b", "a b", "é", "a.b"};
    struct metrics *m = metrics_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(metrics_counter(m, bad[i], "h", NULL));
        assert_null(metrics_gauge(m, bad[i], "h", NULL));
    }
    assert_null(metrics_counter(m, NULL, "h", NULL));
    assert_null(metrics_counter(NULL, "ok", "h", NULL));
    assert_non_null(metrics_counter(m, "ns:sub_total", "h", NULL));
    assert_non_null(metrics_counter(m, "_x9", "h", NULL));
    metrics_free(m);
}

static void invalid_labels_rejected(void **state)
{
    static const char *const bad[] = {
        "a",        "a=b",        "a=\"b",     "a=\"b\",", "1a=\"b\"",
        "a=\"b\"c", "a=\"x\ny\"", "a=\"\\t\"", ",a=\"b\"", "a=\"b\" ,c=\"d\""};
    static const double bounds[] = {1};
    struct metrics *m = metrics_new();
    size_t i;
    char *text;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_null(metrics_counter(m, "c_total", "h", bad[i]));
    assert_non_null(metrics_counter(m, "c_total", "h", "a=\"q\\\"\\\\\\n\",b=\"\""));
    /* le belongs to the histogram itself. */
    assert_null(metrics_histogram(m, "h_seconds", "h", "le=\"1\"", bounds, 1));
    assert_non_null(metrics_histogram(m, "h_seconds", "h", "lex=\"1\"", bounds, 1));
    text = metrics_render(m);
    assert_non_null(text);
    assert_non_null(strstr(text, "\nc_total{a=\"q\\\"\\\\\\n\",b=\"\"} 0\n"));
    free(text);
    metrics_free(m);
}

static void same_series_returned_and_type_clash_rejected(void **state)
{
    static const double bounds[] = {1, 2};
    static const double other[] = {1, 3};
    struct metrics *m = metrics_new();
    struct metric_counter *a;
    struct metric_histogram *h;

    (void)state;
    a = metrics_counter(m, "x_total", "h", "k=\"v\"");
    assert_non_null(a);
    assert_ptr_equal(metrics_counter(m, "x_total", "h", "k=\"v\""), a);
    assert_ptr_not_equal(metrics_counter(m, "x_total", "h", NULL), a);
    assert_ptr_equal(metrics_counter(m, "x_total", "h", ""),
                     metrics_counter(m, "x_total", "h", NULL));
    assert_null(metrics_gauge(m, "x_total", "h", "k=\"v\""));
    h = metrics_histogram(m, "y_seconds", "h", NULL, bounds, 2);
    assert_non_null(h);
    assert_ptr_equal(metrics_histogram(m, "y_seconds", "h", NULL, bounds, 2), h);
    assert_null(metrics_histogram(m, "y_seconds", "h", NULL, other, 2));
    assert_null(metrics_counter(m, "y_seconds", "h", NULL));
    metrics_free(m);
}

static void histogram_bounds_validated(void **state)
{
    static const double descending[] = {2, 1};
    static const double repeated[] = {1, 1};
    double with_nan[] = {1, 0};
    double with_inf[] = {1, 0};
    struct metrics *m = metrics_new();
    struct metric_histogram *h;
    char *text;

    (void)state;
    with_nan[1] = NAN;
    with_inf[1] = INFINITY;
    assert_null(metrics_histogram(m, "a", "h", NULL, descending, 2));
    assert_null(metrics_histogram(m, "a", "h", NULL, repeated, 2));
    assert_null(metrics_histogram(m, "a", "h", NULL, with_nan, 2));
    assert_null(metrics_histogram(m, "a", "h", NULL, with_inf, 2));
    assert_null(metrics_histogram(m, "a", "h", NULL, NULL, 2));
    h = metrics_histogram(m, "only_inf", "h", NULL, NULL, 0);
    assert_non_null(h);
    metric_histogram_observe(h, -1.5);
    metric_histogram_observe(h, 1e300);
    text = metrics_render(m);
    assert_string_equal(text, "# HELP only_inf h\n"
                              "# TYPE only_inf histogram\n"
                              "only_inf_bucket{le=\"+Inf\"} 2\n"
                              "only_inf_sum 1e+300\n"
                              "only_inf_count 2\n");
    free(text);
    metrics_free(m);
}

static void gauge_extremes_and_null_updates(void **state)
{
    struct metrics *m = metrics_new();
    struct metric_gauge *g = metrics_gauge(m, "g", "", NULL);
    struct metric_counter *c = metrics_counter(m, "c_total", NULL, NULL);
    char *text;

    (void)state;
    metric_gauge_set(g, INT64_MIN);
    metric_counter_add(c, UINT64_MAX);
    metric_counter_add(NULL, 1);
    metric_gauge_add(NULL, 1);
    metric_gauge_set(NULL, 1);
    metric_histogram_observe(NULL, 1);
    text = metrics_render(m);
    assert_string_equal(text, "# HELP g \n# TYPE g gauge\ng -9223372036854775808\n"
                              "# HELP c_total \n# TYPE c_total counter\n"
                              "c_total 18446744073709551615\n");
    free(text);
    metrics_free(m);
}

#define THREADS 4
#define ROUNDS  100000

struct shared_metrics {
    struct metric_counter *c;
    struct metric_gauge *g;
    struct metric_histogram *h;
};

static void *hammer(void *arg)
{
    struct shared_metrics *s = arg;
    int i;

    /* Tight separate loops make lost updates likely if an update were not atomic. */
    for (i = 0; i < ROUNDS; i++)
        metric_counter_add(s->c, 1);
    for (i = 0; i < ROUNDS; i++)
        metric_gauge_add(s->g, (i % 2) ? -1 : 3);
    for (i = 0; i < ROUNDS; i++)
        metric_histogram_observe(s->h, (i % 2) ? 0.25 : 4.0);
    return NULL;
}

static void concurrent_updates_are_exact(void **state)
{
    static const double bounds[] = {1};
    struct metrics *m = metrics_new();
    struct shared_metrics s;
    pthread_t t[THREADS];
    char *text;
    int i;

    (void)state;
    s.c = metrics_counter(m, "ops_total", "Ops.", NULL);
    s.g = metrics_gauge(m, "level", "Level.", NULL);
    s.h = metrics_histogram(m, "op_seconds", "Op time.", NULL, bounds, 1);
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &s), 0);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    text = metrics_render(m);
    /* 4 x 50000 x 0.25 + 4 x 50000 x 4.0 = 850000, exact in binary floating point. */
    assert_string_equal(text, "# HELP ops_total Ops.\n# TYPE ops_total counter\n"
                              "ops_total 400000\n"
                              "# HELP level Level.\n# TYPE level gauge\n"
                              "level 400000\n"
                              "# HELP op_seconds Op time.\n# TYPE op_seconds histogram\n"
                              "op_seconds_bucket{le=\"1\"} 200000\n"
                              "op_seconds_bucket{le=\"+Inf\"} 400000\n"
                              "op_seconds_sum 850000\n"
                              "op_seconds_count 400000\n");
    free(text);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_registry_renders_exactly),
        cmocka_unit_test(empty_registry_renders_empty),
        cmocka_unit_test(invalid_names_rejected),
        cmocka_unit_test(invalid_labels_rejected),
        cmocka_unit_test(same_series_returned_and_type_clash_rejected),
        cmocka_unit_test(histogram_bounds_validated),
        cmocka_unit_test(gauge_extremes_and_null_updates),
        cmocka_unit_test(concurrent_updates_are_exact),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
