/* metrics: a small thread-safe Prometheus registry (counters, gauges, histograms). */
#ifndef SHARED_METRICS_H
#define SHARED_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct metrics;
struct metric_counter;
struct metric_gauge;
struct metric_histogram;

/* Returns NULL when out of memory. metrics_free frees every metric it made. */
struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Registration is not thread-safe (do it at start); updates are (C11 atomics).
 * name must match [a-zA-Z_:][a-zA-Z0-9_:]*; labels is NULL or a fixed label set written
 * as Prometheus text, e.g. "method=\"GET\",code=\"200\"". Registering the same name twice
 * with different labels makes one family with several series (HELP/TYPE written once).
 * The returned pointers are owned by m. NULL on invalid input or out of memory. */
struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels);
struct metric_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                   const char *labels);
/* bounds: n ascending upper bounds (seconds or whatever unit the name says); +Inf is added. */
struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                           const char *labels, const double *bounds, size_t n);

void metric_counter_add(struct metric_counter *c, uint64_t v);
void metric_gauge_set(struct metric_gauge *g, int64_t v);
void metric_gauge_add(struct metric_gauge *g, int64_t v);
void metric_histogram_observe(struct metric_histogram *h, double v);
/* The counter's current value (0 for NULL). */
uint64_t metric_counter_value(const struct metric_counter *c);

/* Renders the Prometheus text exposition format (version 0.0.4) into a malloc'd string
 * the caller frees. NULL when out of memory. */
char *metrics_render(const struct metrics *m);

#endif
