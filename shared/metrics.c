/* metrics: a Prometheus registry of families (one name, one type) holding labelled series. */
#include "shared/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric_counter {
    atomic_uint_least64_t value;
};

struct metric_gauge {
    atomic_int_least64_t value;
};

struct metric_histogram {
    double *bounds; /* n ascending upper bounds; +Inf is implicit */
    size_t n;
    atomic_uint_least64_t *buckets; /* n + 1 non-cumulative counts, the last is +Inf */
    atomic_uint_least64_t sum_bits; /* the sum as the bits of a double, updated by CAS */
};

/* One label set of a family. Only the member matching the family's type is used. */
struct metric_series {
    char *labels; /* NULL or the label text as given */
    struct metric_series *next;
    struct metric_counter counter;
    struct metric_gauge gauge;
    struct metric_histogram hist;
};

struct metric_family {
    char *name;
    char *help;
    enum metric_type type;
    struct metric_series *series; /* in registration order */
    struct metric_series *last;
    struct metric_family *next;
};

struct metrics {
    struct metric_family *families; /* in registration order */
    struct metric_family *last;
};

struct metrics *metrics_new(void)
{
    return calloc(1, sizeof(struct metrics));
}

static void metrics_series_free(struct metric_series *s)
{
    free(s->hist.bounds);
    free(s->hist.buckets);
    free(s->labels);
    free(s);
}

void metrics_free(struct metrics *m)
{
    struct metric_family *f;

    if (m == NULL)
        return;
    f = m->families;
    while (f != NULL) {
        struct metric_family *next_family = f->next;
        struct metric_series *s = f->series;

        while (s != NULL) {
            struct metric_series *next_series = s->next;

            metrics_series_free(s);
            s = next_series;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = next_family;
    }
    free(m);
}

static bool metrics_name_char(char c, bool first, bool colon_ok)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
        return true;
    if (c == ':')
        return colon_ok;
    return !first && c >= '0' && c <= '9';
}

/* Metric names: [a-zA-Z_:][a-zA-Z0-9_:]*. */
static bool metrics_valid_name(const char *name)
{
    size_t i;

    if (name == NULL || name[0] == '\0')
        return false;
    for (i = 0; name[i] != '\0'; i++) {
        if (!metrics_name_char(name[i], i == 0, true))
            return false;
    }
    return true;
}

/* Label text: name="value"(,name="value")*, names [a-zA-Z_][a-zA-Z0-9_]*, values with
 * only \\, \" and \n escapes and no raw newline. A histogram may not use "le" itself. */
static bool metrics_valid_labels(const char *labels, bool histogram)
{
    const char *p = labels;

    for (;;) {
        const char *start = p;

        if (!metrics_name_char(*p, true, false))
            return false;
        while (metrics_name_char(*p, false, false))
            p++;
        if (histogram && p - start == 2 && start[0] == 'l' && start[1] == 'e')
            return false;
        if (p[0] != '=' || p[1] != '"')
            return false;
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return false;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return false;
                p++;
            }
            p++;
        }
        p++;
        if (*p == '\0')
            return true;
        if (*p != ',')
            return false;
        p++;
    }
}

static char *metrics_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

static bool metrics_same_labels(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Finds or creates the family `name` of `type` and the series `labels` in it.
 * *created says whether the series is new (the caller then fills its type part).
 * Returns NULL on invalid input, a type clash or out of memory. Owned by m. */
static struct metric_series *metrics_series(struct metrics *m, const char *name, const char *help,
                                            const char *labels, enum metric_type type,
                                            bool *created)
{
    struct metric_series *result = NULL;
    struct metric_family *f;
    struct metric_family *new_family = NULL;
    struct metric_series *s = NULL;

    *created = false;
    if (m == NULL || !metrics_valid_name(name))
        goto out;
    if (labels != NULL && labels[0] == '\0')
        labels = NULL;
    if (labels != NULL && !metrics_valid_labels(labels, type == METRIC_HISTOGRAM))
        goto out;
    for (f = m->families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0)
            break;
    }
    if (f != NULL && f->type != type)
        goto out;
    if (f != NULL) {
        for (s = f->series; s != NULL; s = s->next) {
            if (metrics_same_labels(s->labels, labels)) {
                result = s;
                s = NULL;
                goto out;
            }
        }
    }
    if (f == NULL) {
        new_family = calloc(1, sizeof(*new_family));
        if (new_family == NULL)
            goto out;
        new_family->type = type;
        new_family->name = metrics_strdup(name);
        new_family->help = metrics_strdup(help == NULL ? "" : help);
        if (new_family->name == NULL || new_family->help == NULL)
            goto out;
        f = new_family;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto out;
    if (labels != NULL) {
        s->labels = metrics_strdup(labels);
        if (s->labels == NULL)
            goto out;
    }
    if (f->last != NULL)
        f->last->next = s;
    else
        f->series = s;
    f->last = s;
    if (new_family != NULL) {
        if (m->last != NULL)
            m->last->next = new_family;
        else
            m->families = new_family;
        m->last = new_family;
        new_family = NULL;
    }
    result = s;
    s = NULL;
    *created = true;
out:
    if (s != NULL)
        metrics_series_free(s);
    if (new_family != NULL) {
        free(new_family->name);
        free(new_family->help);
        free(new_family);
    }
    return result;
}

struct metric_counter *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels)
{
    bool created;
    struct metric_series *s = metrics_series(m, name, help, labels, METRIC_COUNTER, &created);

    if (s == NULL)
        return NULL;
    if (created)
        atomic_init(&s->counter.value, 0);
    return &s->counter;
}

struct metric_gauge *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                   const char *labels)
{
    bool created;
    struct metric_series *s = metrics_series(m, name, help, labels, METRIC_GAUGE, &created);

    if (s == NULL)
        return NULL;
    if (created)
        atomic_init(&s->gauge.value, 0);
    return &s->gauge;
}

static uint64_t metrics_double_bits(double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    return bits;
}

static double metrics_bits_double(uint64_t bits)
{
    double v;

    memcpy(&v, &bits, sizeof(v));
    return v;
}

static bool metrics_same_bounds(const struct metric_histogram *h, const double *bounds, size_t n)
{
    return h->n == n && (n == 0 || memcmp(h->bounds, bounds, n * sizeof(double)) == 0);
}

struct metric_histogram *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                           const char *labels, const double *bounds, size_t n)
{
    struct metric_histogram *result = NULL;
    struct metric_series *s;
    bool created;
    size_t i;

    if (n > 0 && bounds == NULL)
        goto out;
    if (n > 1024)
        goto out;
    for (i = 0; i < n; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            goto out;
    }
    s = metrics_series(m, name, help, labels, METRIC_HISTOGRAM, &created);
    if (s == NULL)
        goto out;
    if (!created) {
        /* The same series asked for again must mean the same buckets. */
        if (s->hist.buckets != NULL && metrics_same_bounds(&s->hist, bounds, n))
            result = &s->hist;
        goto out;
    }
    /* The series is linked in already: on failure it stays without buckets; NULL is
     * returned for it now and later, and render skips it. */
    s->hist.buckets = calloc(n + 1, sizeof(*s->hist.buckets));
    if (n > 0)
        s->hist.bounds = malloc(n * sizeof(double));
    if (s->hist.buckets == NULL || (n > 0 && s->hist.bounds == NULL)) {
        free(s->hist.buckets);
        free(s->hist.bounds);
        s->hist.buckets = NULL;
        s->hist.bounds = NULL;
        goto out;
    }
    if (n > 0)
        memcpy(s->hist.bounds, bounds, n * sizeof(double));
    s->hist.n = n;
    for (i = 0; i <= n; i++)
        atomic_init(&s->hist.buckets[i], 0);
    atomic_init(&s->hist.sum_bits, metrics_double_bits(0.0));
    result = &s->hist;
out:
    return result;
}

void metric_counter_add(struct metric_counter *c, uint64_t v)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->value, v, memory_order_relaxed);
}

uint64_t metric_counter_value(const struct metric_counter *c)
{
    return c == NULL ? 0 : atomic_load_explicit(&c->value, memory_order_relaxed);
}

void metric_gauge_set(struct metric_gauge *g, int64_t v)
{
    if (g != NULL)
        atomic_store_explicit(&g->value, v, memory_order_relaxed);
}

void metric_gauge_add(struct metric_gauge *g, int64_t v)
{
    if (g != NULL)
        atomic_fetch_add_explicit(&g->value, v, memory_order_relaxed);
}

void metric_histogram_observe(struct metric_histogram *h, double v)
{
    size_t i = 0;
    uint64_t old_bits;
    uint64_t new_bits;

    if (h == NULL || h->buckets == NULL)
        return;
    /* Few buckets: a linear scan beats a binary search. NaN lands in +Inf. */
    while (i < h->n && !(v <= h->bounds[i]))
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    old_bits = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    do {
        new_bits = metrics_double_bits(metrics_bits_double(old_bits) + v);
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old_bits, new_bits,
                                                    memory_order_relaxed, memory_order_relaxed));
}

/* A growing output string. A failed append sets failed; the rest are then ignored. */
struct metrics_buf {
    char *data;
    size_t len;
    size_t cap;
    bool failed;
};

static void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        {
            size_t want = b->cap * 2;
            char *grown;

            while (want - b->len <= (size_t)n)
                want *= 2;
            grown = realloc(b->data, want);
            if (grown == NULL) {
                b->failed = true;
                return;
            }
            b->data = grown;
            b->cap = want;
        }
    }
}

/* Prometheus floats: whole numbers as integers, others the shortest text that reads back
 * as the same double; +Inf/-Inf/NaN as Prometheus spells them. */
static void metrics_format_double(char *out, size_t outlen, double v)
{
    int prec;

    if (isnan(v)) {
        (void)snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        (void)snprintf(out, outlen, "%s", v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        /* Whole numbers (counts, sums of whole units) read better without an exponent. */
        (void)snprintf(out, outlen, "%.0f", v);
        return;
    }
    for (prec = 1; prec <= 17; prec++) {
        (void)snprintf(out, outlen, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* HELP text escapes only backslash and newline. */
static void metrics_render_help(struct metrics_buf *b, const char *help)
{
    const char *p;

    for (p = help; *p != '\0'; p++) {
        if (*p == '\\')
            metrics_buf_printf(b, "\\\\");
        else if (*p == '\n')
            metrics_buf_printf(b, "\\n");
        else
            metrics_buf_printf(b, "%c", *p);
    }
}

static void metrics_render_histogram(struct metrics_buf *b, const char *name,
                                     const struct metric_series *s)
{
    const struct metric_histogram *h = &s->hist;
    const char *labels = s->labels;
    const char *sep = labels != NULL ? "," : "";
    uint64_t cumulative = 0;
    char num[64];
    size_t i;

    if (labels == NULL)
        labels = "";
    for (i = 0; i <= h->n; i++) {
        /* Reads race with observers; _count is the +Inf bucket so the two always agree. */
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        if (i < h->n)
            metrics_format_double(num, sizeof(num), h->bounds[i]);
        else
            (void)snprintf(num, sizeof(num), "+Inf");
        metrics_buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, num,
                           (unsigned long long)cumulative);
    }
    metrics_format_double(
        num, sizeof(num),
        metrics_bits_double(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
    if (s->labels != NULL) {
        metrics_buf_printf(b, "%s_sum{%s} %s\n", name, labels, num);
        metrics_buf_printf(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cumulative);
    } else {
        metrics_buf_printf(b, "%s_sum %s\n", name, num);
        metrics_buf_printf(b, "%s_count %llu\n", name, (unsigned long long)cumulative);
    }
}

static void metrics_render_series(struct metrics_buf *b, const struct metric_family *f,
                                  const struct metric_series *s)
{
    const char *name = f->name;

    if (f->type == METRIC_HISTOGRAM) {
        if (s->hist.buckets != NULL)
            metrics_render_histogram(b, name, s);
        return;
    }
    if (s->labels != NULL) {
        metrics_buf_printf(b, "%s{%s} ", name, s->labels);
    } else {
        metrics_buf_printf(b, "%s ", name);
    }
    if (f->type == METRIC_COUNTER)
        metrics_buf_printf(
            b, "%llu\n",
            (unsigned long long)atomic_load_explicit(&s->counter.value, memory_order_relaxed));
    else
        metrics_buf_printf(b, "%lld\n",
                           (long long)atomic_load_explicit(&s->gauge.value, memory_order_relaxed));
}

char *metrics_render(const struct metrics *m)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    struct metrics_buf b = {NULL, 0, 0, false};
    const struct metric_family *f;
    const struct metric_series *s;
    char *result = NULL;

    b.cap = 4096;
    b.data = malloc(b.cap);
    if (b.data == NULL)
        goto out;
    b.data[0] = '\0';
    for (f = m != NULL ? m->families : NULL; f != NULL; f = f->next) {
        metrics_buf_printf(&b, "# HELP %s ", f->name);
        metrics_render_help(&b, f->help);
        metrics_buf_printf(&b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
        for (s = f->series; s != NULL; s = s->next)
            metrics_render_series(&b, f, s);
    }
    if (b.failed)
        goto out;
    result = b.data;
    b.data = NULL;
out:
    free(b.data);
    return result;
}
