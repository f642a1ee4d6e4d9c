/* kafka_consumer: reads cdc.info-user with librdkafka and hands each event to a handler,
 * storing its offset only once the handler is done with it.
 *
 * Offsets: enable.auto.offset.store=false; an event's offset + 1 is stored after its
 * emails are sent, deduped or finally failed (and, when needed, after its DLQ copy is
 * acknowledged by the brokers); auto commit then commits what is stored, and close
 * commits the rest. A crash re-delivers at most the events after the last commit; the
 * delivery log makes those send nothing twice.
 *
 * The handler may record its effects behind (the delivery log commits `sent` marks on its
 * own thread): with a gate, an event's offset waits in a FIFO with the gate's ticket until
 * the gate says that ticket is durable, so a stored offset never relies on a mark a crash
 * could lose. Before a revoke's commit and at close the gate is flushed first.
 *
 * Retry: a transient failure pauses the event's partition and seeks it back to the event
 * (the seek purges anything prefetched after it), so nothing behind it overtakes it; the
 * partition resumes after an exponential backoff with jitter, and polling (heartbeats,
 * other partitions) goes on meanwhile. */
#include "transport/kafka_consumer.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "interactors/retry_policy.h"
#include "shared/log.h"
#include "shared/metrics.h"
#include "transport/debezium_envelope.h"

#define MAX_PARTITIONS       1024
#define STR_(x)              #x
#define STR(x)               STR_(x)
#define SEEK_TIMEOUT_MS      5000
#define SEEK_RETRY_MS        1000 /* a failed seek back: when to try again */
#define LAG_QUERY_MS         1000 /* the paused partitions' end offsets: how long to wait in all */
#define DLQ_FLUSH_MS         10000
#define DLQ_CUT_BYTES        4096 /* a value too large for the DLQ: what of it goes there */
#define EVENT_MAX_MS         60000
#define POLL_MARGIN_MS       60000    /* the gate's and the DLQ's flushes around the events */
#define POLL_MIN_MS          300000   /* librdkafka's default max.poll.interval.ms */
#define POLL_MAX_MS          86400000 /* librdkafka's maximum */
#define WAITING_MAX          8192     /* events done whose offsets wait for the gate */
#define FIRST_ASSIGN_WAIT_MS 5000  /* close before the first assignment: see kafka_consumer_free */
#define GATE_FLUSH_MS        10000 /* revoke, close: how long to wait for the gate */
#define GATE_FULL_MS         1000  /* a full FIFO: how long to wait before pausing instead */
#define BATCH_MAX            64    /* events taken from librdkafka's queue at once */
/* A batch whose events take longer than this (a stalled SMTP server and many partitions)
 * hands the rest back: each partition is sought back to its first unhandled event, and
 * the loop polls again (heartbeats, rebalances, max.poll.interval.ms). */
#define BATCH_BUDGET_MS 10000

/* One fetched message, parsed. */
struct parsed_event {
    enum envelope_result result;
    char reason[256];
    struct user_change change;
};

/* An event done whose offset is stored once the gate has reached its ticket. */
struct waiting_offset {
    int32_t partition;
    int64_t next_offset; /* the event's offset + 1 */
    uint64_t ticket;
};

/* Retry state of one partition of the topic. */
struct partition_state {
    bool assigned; /* ours now: messages of a partition revoked meanwhile are dropped */
    bool paused;
    bool need_seek;          /* the seek back to want_offset failed: resume_due tries again */
    bool resought;           /* read past want_offset once and sought back again */
    int64_t want_offset;     /* while recovering: the offset that must come next, else -1 */
    uint64_t seek_batch;     /* the batch in which the partition was sought back */
    int64_t stats_committed; /* paused: its committed offset in the last statistics */
    int64_t resume_at_ms;
    unsigned attempt;
};

struct kafka_consumer {
    rd_kafka_t *rk;  /* consumer */
    rd_kafka_t *dlq; /* producer */
    char *topic;
    char *dlq_topic;
    uint32_t retry_base_ms;
    uint32_t retry_max_ms;
    kafka_event_handler handler;
    void *handler_ctx;
    void (*prefetch)(void *ctx, const struct user_change *const *changes, size_t n);
    bool (*stop)(void); /* kafka_consumer_run's: checked between events */
    int64_t batch_budget_ms;
    struct parsed_event *parsed; /* BATCH_MAX, reused */
    uint64_t batch_no;           /* batches taken so far */
    long long lag_fetched;       /* on_stats: the lag of the partitions being fetched */
    bool lag_due;                /* on_stats saw paused partitions: lag_of_paused() */
    struct partition_state parts[MAX_PARTITIONS];
    struct kafka_offset_gate gate;  /* all NULL without a gate */
    struct waiting_offset *waiting; /* ring of WAITING_MAX, oldest at waiting_head */
    size_t waiting_head, waiting_len;
    atomic_llong last_poll_ms; /* now_ms() when the loop last polled or finished an event */
    int64_t stall_after_ms;
    bool assigned_once; /* a rebalance callback assigned partitions (maybe none) */
    uint32_t max_poll_interval_ms;
    atomic_int unsupported_partition; /* one assigned beyond MAX_PARTITIONS, else -1 */
    atomic_bool dlq_fatal;            /* the DLQ producer hit a fatal error */
    /* DLQ delivery report of the message in flight */
    /* The DLQ message in hand: its sequence number (the message's opaque), and its report.
     * An earlier message that timed out here may still be delivered later: its report
     * must not answer for this one. */
    uintptr_t dlq_seq;
    bool closing; /* free() has flushed the gate: the close's revoke need not wait again */
    int dlq_done;
    rd_kafka_resp_err_t dlq_err;
    struct metric_counter *m_events_done, *m_events_failed, *m_events_malformed,
        *m_events_tombstone, *m_events_retry;
    struct metric_counter *m_sent, *m_deduped, *m_failed, *m_retries, *m_dlq, *m_commit_failed;
    struct metric_gauge *m_lag, *m_paused, *m_waiting;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t random_u32(void)
{
    static _Thread_local unsigned seed;
    if (seed == 0)
        seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)&seed;
    return (uint32_t)rand_r(&seed) << 16 ^ (uint32_t)rand_r(&seed);
}

static struct partition_state *part(struct kafka_consumer *kc, int32_t p)
{
    return p >= 0 && p < MAX_PARTITIONS ? &kc->parts[p] : NULL;
}

static void reset_partitions(struct kafka_consumer *kc, const rd_kafka_topic_partition_list_t *list)
{
    for (int i = 0; list != NULL && i < list->cnt; i++) {
        struct partition_state *ps = part(kc, list->elems[i].partition);
        if (ps != NULL) {
            if (ps->paused)
                metric_gauge_add(kc->m_paused, -1);
            memset(ps, 0, sizeof *ps);
            ps->want_offset = -1;
            ps->stats_committed = -1;
        }
    }
}

static int flush_waiting(struct kafka_consumer *kc, int timeout_ms);
static void drop_waiting(struct kafka_consumer *kc, const rd_kafka_topic_partition_list_t *list);

/* Cooperative-sticky when configured (incremental), eager otherwise. */
/* rd_kafka_rebalance_protocol(), which is NULL when librdkafka cannot tell (its group
 * handle is terminating, after a close). */
static const char *protocol_of(rd_kafka_t *rk)
{
    const char *p = rd_kafka_rebalance_protocol(rk);
    return p != NULL ? p : "UNKNOWN";
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions, void *opaque)
{
    struct kafka_consumer *kc = opaque;
    bool cooperative = strcmp(protocol_of(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t ret = RD_KAFKA_RESP_ERR_NO_ERROR;
    char n[16];

    snprintf(n, sizeof n, "%d", partitions->cnt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kc->assigned_once = true;
        reset_partitions(kc, partitions);
        for (int i = 0; i < partitions->cnt; i++) {
            struct partition_state *ps = part(kc, partitions->elems[i].partition);
            if (ps != NULL) {
                ps->assigned = true;
            } else if (atomic_load(&kc->unsupported_partition) < 0) {
                atomic_store(&kc->unsupported_partition, partitions->elems[i].partition);
                log_write(LOG_ERROR,
                          "partition number beyond what push-email handles: its events are "
                          "not read (not lost); /healthz fails",
                          "max", STR(MAX_PARTITIONS), NULL);
            }
        }
        log_write(LOG_INFO, "partitions assigned", "count", n, "protocol", protocol_of(rk), NULL);
        if (cooperative)
            error = rd_kafka_incremental_assign(rk, partitions);
        else
            ret = rd_kafka_assign(rk, partitions);
        /* librdkafka keeps a pause of ours across unassign and assign: a partition paused
         * for a retry, taken away and given back would never be fetched again. */
        if (error == NULL && ret == RD_KAFKA_RESP_ERR_NO_ERROR)
            (void)rd_kafka_resume_partitions(rk, partitions);
    } else {
        log_write(LOG_INFO, "partitions revoked", "count", n, NULL);
        /* Store what is durable (waiting for the delivery log first) and commit it before
         * another member takes these partitions over. */
        /* At close the gate was flushed just before: waiting again only slows the exit. */
        if (flush_waiting(kc, kc->closing ? 0 : GATE_FLUSH_MS) != 0)
            log_write(LOG_WARN, "revoke: some offsets still wait for the delivery log", NULL);
        drop_waiting(kc, partitions);
        /* The commit can be refused, e.g. REBALANCE_IN_PROGRESS when another member's
         * join starts a new rebalance meanwhile. The next owner then reads these events
         * again from the last commit; the marks flushed above make it skip their emails. */
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
        if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET) {
            metric_counter_add(kc->m_commit_failed, 1);
            log_write(LOG_WARN,
                      "revoke: offsets not committed, the next owner reads those events again",
                      "error", rd_kafka_err2str(cerr), NULL);
        }
        reset_partitions(kc, partitions);
        if (cooperative)
            error = rd_kafka_incremental_unassign(rk, partitions);
        else
            ret = rd_kafka_assign(rk, NULL);
    }
    if (error != NULL) {
        log_write(LOG_ERROR, "rebalance failed", "error", rd_kafka_error_string(error), NULL);
        rd_kafka_error_destroy(error);
    } else if (ret != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_write(LOG_ERROR, "rebalance failed", "error", rd_kafka_err2str(ret), NULL);
    }
}

static void on_dlq_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kafka_consumer *kc = opaque;
    (void)rk;
    if ((uintptr_t)m->_private != kc->dlq_seq)
        return; /* an earlier message, given up on already */
    kc->dlq_err = m->err;
    kc->dlq_done = 1;
}

/* Consumer lag from librdkafka's statistics: the sum over the partitions of our topic that
 * are assigned to us now. librdkafka keeps reporting a partition after a rebalance took it
 * away, with its last figures: counted, they would stay in this member's sum and be
 * counted twice across the group. Served by the consumer's poll (rd_kafka_poll_set_consumer),
 * so on the thread that owns parts[]. */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct kafka_consumer *kc = opaque;
    (void)rk;
    cJSON *root = cJSON_ParseWithLength(json, len);
    const cJSON *topic = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "topics"), kc->topic);
    const cJSON *p;
    long long lag = 0;
    bool paused = false;

    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(topic, "partitions"))
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(p, "partition");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, "consumer_lag"); /* -1: unknown */
        const cJSON *committed = cJSON_GetObjectItemCaseSensitive(p, "committed_offset");
        if (!cJSON_IsNumber(id))
            continue;
        struct partition_state *ps = part(kc, (int32_t)id->valuedouble);
        if (ps == NULL || !ps->assigned)
            continue;
        if (ps->paused) {
            /* Not fetched while paused, so librdkafka's end offset for it stands still:
             * during an SMTP outage the lag would look flat. The loop asks the broker. */
            ps->stats_committed = cJSON_IsNumber(committed) ? (int64_t)committed->valuedouble : -1;
            paused = true;
        } else if (cJSON_IsNumber(v) && v->valuedouble > 0) {
            lag += (long long)v->valuedouble;
        }
    }
    cJSON_Delete(root);
    if (paused) {
        kc->lag_fetched = lag;
        kc->lag_due = true; /* lag_of_paused() adds the paused partitions' */
    } else {
        metric_gauge_set(kc->m_lag, lag);
    }
    return 0; /* librdkafka frees json */
}

/* Completes the lag gauge after statistics with paused partitions: their end offsets from
 * the broker (a ListOffsets round trip each, at most every statistics.interval.ms and only
 * while partitions are paused) minus what is committed. The round trips block the loop, so
 * all of them together get LAG_QUERY_MS: when the broker is slow or away the gauge keeps
 * its last value rather than the loop stalling a second per paused partition. */
static void lag_of_paused(struct kafka_consumer *kc)
{
    long long lag = kc->lag_fetched;

    if (!kc->lag_due)
        return;
    kc->lag_due = false;
    if (kc->stop != NULL && kc->stop())
        return;
    int64_t deadline = now_ms() + LAG_QUERY_MS;
    for (int32_t p = 0; p < MAX_PARTITIONS; p++) {
        const struct partition_state *ps = &kc->parts[p];
        int64_t lo = -1, hi = -1;
        if (!ps->assigned || !ps->paused || ps->stats_committed < 0)
            continue;
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(kc->rk, kc->topic, p, &lo, &hi, (int)left);
        if (e == RD_KAFKA_RESP_ERR__TIMED_OUT)
            return;
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR && hi > ps->stats_committed)
            lag += hi - ps->stats_committed;
    }
    metric_gauge_set(kc->m_lag, lag);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    log_write(level <= 3   ? LOG_ERROR
              : level <= 4 ? LOG_WARN
                           : LOG_INFO,
              "librdkafka", "facility", fac, "detail", buf, NULL);
}

static int set_conf(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                    size_t errlen)
{
    char err[256];
    if (rd_kafka_conf_set(conf, key, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errlen, "kafka setting %s: %s", key, err);
        return -1;
    }
    return 0;
}

static int set_extra(rd_kafka_conf_t *conf, const char *const *extra, char *errstr, size_t errlen)
{
    char key[128];
    for (const char *const *e = extra; e != NULL && *e != NULL; e++) {
        const char *eq = strchr(*e, '=');
        if (eq == NULL || (size_t)(eq - *e) >= sizeof key) {
            snprintf(errstr, errlen, "kafka setting '%s': expected key=value", *e);
            return -1;
        }
        snprintf(key, sizeof key, "%.*s", (int)(eq - *e), *e);
        if (set_conf(conf, key, eq + 1, errstr, errlen) != 0)
            return -1;
    }
    return 0;
}

static void register_metrics(struct kafka_consumer *kc, struct metrics *m)
{
    if (m == NULL)
        return;
    const char *ev = "push_email_events_total";
    const char *evh = "Events read from the topic, by how they ended";
    kc->m_events_done = metrics_counter(m, ev, evh, "result=\"done\"");
    kc->m_events_failed = metrics_counter(m, ev, evh, "result=\"failed\"");
    kc->m_events_malformed = metrics_counter(m, ev, evh, "result=\"malformed\"");
    kc->m_events_tombstone = metrics_counter(m, ev, evh, "result=\"tombstone\"");
    kc->m_events_retry = metrics_counter(m, ev, evh, "result=\"retry\"");
    kc->m_sent =
        metrics_counter(m, "push_email_emails_sent_total", "Emails accepted by SMTP", NULL);
    kc->m_deduped = metrics_counter(m, "push_email_emails_deduped_total",
                                    "Emails skipped because the delivery log had them", NULL);
    kc->m_failed = metrics_counter(m, "push_email_emails_failed_total",
                                   "Emails that failed permanently", NULL);
    kc->m_retries = metrics_counter(m, "push_email_retries_total",
                                    "Transient failures that paused a partition", NULL);
    kc->m_dlq = metrics_counter(m, "push_email_dlq_total", "Events written to the DLQ", NULL);
    kc->m_commit_failed = metrics_counter(m, "push_email_revoke_commit_failures_total",
                                          "Revoked partitions whose offsets the group refused "
                                          "to commit (their events are read again)",
                                          NULL);
    kc->m_lag = metrics_gauge(m, "push_email_consumer_lag",
                              "Messages behind the end of the assigned partitions", NULL);
    kc->m_paused = metrics_gauge(m, "push_email_paused_partitions",
                                 "Partitions paused waiting to retry", NULL);
    kc->m_waiting = metrics_gauge(m, "push_email_offsets_waiting",
                                  "Events done whose offsets wait for their delivery-log "
                                  "marks to be committed",
                                  NULL);
}

struct kafka_consumer *kafka_consumer_new(const struct kafka_consumer_config *cfg,
                                          kafka_event_handler handler, void *handler_ctx,
                                          struct metrics *metrics, char *errstr, size_t errlen)
{
    struct kafka_consumer *kc = calloc(1, sizeof *kc);
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_conf_t *pconf = NULL;
    rd_kafka_topic_partition_list_t *sub = NULL;
    char err[512];

    if (kc == NULL) {
        snprintf(errstr, errlen, "out of memory");
        return NULL;
    }
    kc->topic = strdup(cfg->topic);
    kc->dlq_topic = strdup(cfg->dlq_topic);
    kc->retry_base_ms = cfg->retry_base_ms ? cfg->retry_base_ms : 500;
    kc->retry_max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : 60000;
    kc->handler = handler;
    kc->handler_ctx = handler_ctx;
    if (cfg->gate != NULL)
        kc->gate = *cfg->gate;
    kc->prefetch = cfg->prefetch;
    kc->batch_budget_ms = cfg->batch_budget_ms ? cfg->batch_budget_ms : BATCH_BUDGET_MS;
    kc->waiting = calloc(WAITING_MAX, sizeof *kc->waiting);
    kc->parsed = calloc(BATCH_MAX, sizeof *kc->parsed);
    for (size_t i = 0; i < MAX_PARTITIONS; i++)
        kc->parts[i].want_offset = -1;
    uint64_t poll_ms = (uint64_t)kc->batch_budget_ms +
                       (cfg->event_max_ms ? cfg->event_max_ms : EVENT_MAX_MS) + POLL_MARGIN_MS;
    kc->max_poll_interval_ms = (uint32_t)(poll_ms < POLL_MIN_MS   ? POLL_MIN_MS
                                          : poll_ms > POLL_MAX_MS ? POLL_MAX_MS
                                                                  : poll_ms);
    atomic_store(&kc->last_poll_ms, (long long)now_ms());
    atomic_store(&kc->unsupported_partition, -1);
    atomic_store(&kc->dlq_fatal, false);
    register_metrics(kc, metrics);
    if (kc->topic == NULL || kc->dlq_topic == NULL || kc->waiting == NULL || kc->parsed == NULL) {
        snprintf(errstr, errlen, "out of memory");
        goto fail;
    }

    char session_ms[16], heartbeat_ms[16], max_poll_ms[16];
    snprintf(max_poll_ms, sizeof max_poll_ms, "%u", kc->max_poll_interval_ms);
    uint32_t session = cfg->session_timeout_ms ? cfg->session_timeout_ms : 10000;
    snprintf(session_ms, sizeof session_ms, "%u", session);
    snprintf(heartbeat_ms, sizeof heartbeat_ms, "%u", session / 3 ? session / 3 : 1);
    conf = rd_kafka_conf_new();
    if (set_conf(conf, "bootstrap.servers", cfg->brokers, errstr, errlen) ||
        set_conf(conf, "group.id", cfg->group_id, errstr, errlen) ||
        set_conf(conf, "client.id", cfg->client_id ? cfg->client_id : "push-email", errstr,
                 errlen) ||
        set_conf(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
        set_conf(conf, "enable.auto.commit", "true", errstr, errlen) ||
        set_conf(conf, "auto.commit.interval.ms", "1000", errstr, errlen) ||
        set_conf(conf, "auto.offset.reset", "earliest", errstr, errlen) ||
        set_conf(conf, "partition.assignment.strategy", "cooperative-sticky", errstr, errlen) ||
        set_conf(conf, "statistics.interval.ms", "5000", errstr, errlen) ||
        set_conf(conf, "session.timeout.ms", session_ms, errstr, errlen) ||
        set_conf(conf, "heartbeat.interval.ms", heartbeat_ms, errstr, errlen) ||
        set_conf(conf, "max.poll.interval.ms", max_poll_ms, errstr, errlen) ||
        set_extra(conf, cfg->extra, errstr, errlen))
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_opaque(conf, kc);

    pconf = rd_kafka_conf_new();
    if (set_conf(pconf, "bootstrap.servers", cfg->brokers, errstr, errlen) ||
        set_conf(pconf, "client.id", "push-email-dlq", errstr, errlen) ||
        set_conf(pconf, "enable.idempotence", "true", errstr, errlen) ||
        set_conf(pconf, "acks", "all", errstr, errlen) ||
        set_conf(pconf, "linger.ms", "0", errstr, errlen) ||
        set_extra(pconf, cfg->extra, errstr, errlen))
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(pconf, on_dlq_delivery);
    rd_kafka_conf_set_log_cb(pconf, on_log);
    rd_kafka_conf_set_opaque(pconf, kc);

    kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (kc->rk == NULL) {
        snprintf(errstr, errlen, "kafka consumer: %s", err);
        goto fail;
    }
    conf = NULL; /* rd_kafka_new() took ownership of conf */
    {
        /* What librdkafka runs with (the extra properties may have set it). */
        char v[24];
        size_t vlen = sizeof v;
        if (rd_kafka_conf_get(rd_kafka_conf(kc->rk), "max.poll.interval.ms", v, &vlen) ==
            RD_KAFKA_CONF_OK)
            kc->max_poll_interval_ms = (uint32_t)strtoul(v, NULL, 10);
        kc->stall_after_ms = cfg->stall_after_ms ? cfg->stall_after_ms : kc->max_poll_interval_ms;
    }
    kc->dlq = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof err);
    if (kc->dlq == NULL) {
        snprintf(errstr, errlen, "kafka DLQ producer: %s", err);
        goto fail;
    }
    pconf = NULL; /* likewise */
    rd_kafka_poll_set_consumer(kc->rk);

    sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, kc->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(kc->rk, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(errstr, errlen, "kafka subscribe %s: %s", kc->topic, rd_kafka_err2str(e));
        goto fail;
    }
    return kc;
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    if (pconf != NULL)
        rd_kafka_conf_destroy(pconf);
    if (kc->rk != NULL)
        rd_kafka_destroy(kc->rk);
    if (kc->dlq != NULL)
        rd_kafka_destroy(kc->dlq);
    free(kc->parsed);
    free(kc->waiting);
    free(kc->topic);
    free(kc->dlq_topic);
    free(kc);
    return NULL;
}

static void store_now(struct kafka_consumer *kc, int32_t partition, int64_t next_offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, kc->topic, partition)->offset = next_offset;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(kc->rk, l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_write(LOG_WARN, "offset not stored (partition revoked?)", "error", rd_kafka_err2str(e),
                  NULL);
    rd_kafka_topic_partition_list_destroy(l);
}

static uint64_t gate_durable(struct kafka_consumer *kc)
{
    return kc->gate.durable != NULL ? kc->gate.durable(kc->gate.ctx) : UINT64_MAX;
}

/* Stores the waiting offsets whose tickets are durable, oldest first. */
static void drain_waiting(struct kafka_consumer *kc)
{
    if (kc->waiting_len == 0)
        return;
    uint64_t durable = gate_durable(kc);
    while (kc->waiting_len > 0) {
        struct waiting_offset *w = &kc->waiting[kc->waiting_head];
        if (w->ticket > durable)
            break;
        store_now(kc, w->partition, w->next_offset);
        kc->waiting_head = (kc->waiting_head + 1) % WAITING_MAX;
        kc->waiting_len--;
    }
    metric_gauge_set(kc->m_waiting, (long long)kc->waiting_len);
}

/* Waits up to timeout_ms for the gate, then stores what is durable. 0 when nothing waits.
 * It waits also when no offset does: an event being retried may have had an email sent
 * whose mark is not durable yet, and the next owner (or run) must find that mark. */
static int flush_waiting(struct kafka_consumer *kc, int timeout_ms)
{
    uint64_t ticket = kc->gate.ticket != NULL ? kc->gate.ticket(kc->gate.ctx) : 0;

    if (kc->gate.flush != NULL && (kc->waiting_len > 0 || ticket > gate_durable(kc)))
        (void)kc->gate.flush(kc->gate.ctx, timeout_ms);
    drain_waiting(kc);
    return kc->waiting_len == 0 ? 0 : -1;
}

/* Forgets the waiting offsets of the given partitions (revoked: the next owner reads
 * those events again). */
static void drop_waiting(struct kafka_consumer *kc, const rd_kafka_topic_partition_list_t *list)
{
    size_t kept = 0;
    for (size_t i = 0; i < kc->waiting_len; i++) {
        struct waiting_offset w = kc->waiting[(kc->waiting_head + i) % WAITING_MAX];
        bool revoked = false;
        for (int k = 0; list != NULL && k < list->cnt; k++)
            revoked = revoked || list->elems[k].partition == w.partition;
        if (!revoked)
            kc->waiting[(kc->waiting_head + kept++) % WAITING_MAX] = w;
    }
    kc->waiting_len = kept;
    metric_gauge_set(kc->m_waiting, (long long)kc->waiting_len);
}

/* The handler is done with m: store its offset now, or once the gate's ticket for what the
 * handler recorded is durable (after the offsets waiting before it). */
static void offset_done(struct kafka_consumer *kc, const rd_kafka_message_t *m)
{
    uint64_t ticket = kc->gate.ticket != NULL ? kc->gate.ticket(kc->gate.ctx) : 0;

    if (kc->waiting_len == 0 && ticket <= gate_durable(kc)) {
        store_now(kc, m->partition, m->offset + 1);
        return;
    }
    if (kc->waiting_len == WAITING_MAX) {
        /* handle() keeps a slot free; this is a last resort that keeps the order. */
        (void)flush_waiting(kc, GATE_FLUSH_MS);
        if (kc->waiting_len == WAITING_MAX) {
            log_write(LOG_ERROR, "offset not stored: delivery log far behind", NULL);
            return; /* the event is read again after a restart; its emails are deduped */
        }
    }
    struct waiting_offset *w = &kc->waiting[(kc->waiting_head + kc->waiting_len) % WAITING_MAX];
    w->partition = m->partition;
    w->next_offset = m->offset + 1;
    w->ticket = ticket;
    kc->waiting_len++;
    metric_gauge_set(kc->m_waiting, (long long)kc->waiting_len);
}

/* An idempotent producer's fatal error (e.g. out-of-order sequence) fails every later
 * produce: the event stays unhandled (paused and retried, nothing lost), and /healthz
 * fails so that a restart makes a new producer. */
static void dlq_check_fatal(struct kafka_consumer *kc)
{
    char why[256];
    if (atomic_load(&kc->dlq_fatal) ||
        rd_kafka_fatal_error(kc->dlq, why, sizeof why) == RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    atomic_store(&kc->dlq_fatal, true);
    log_write(LOG_ERROR, "DLQ producer: fatal error; /healthz fails until a restart", "error", why,
              NULL);
}

static bool too_large(rd_kafka_resp_err_t e)
{
    return e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
           e == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE;
}

/* Writes a copy of m (its value cut to len bytes; cut_from: the whole value's length, or
 * NULL when whole) to the DLQ with the reason and its origin in headers, and waits for the
 * brokers to acknowledge it. */
static rd_kafka_resp_err_t dlq_produce(struct kafka_consumer *kc, const rd_kafka_message_t *m,
                                       const char *reason, size_t len, const char *cut_from)
{
    char partition[16], offset[24];
    const char *origin_topic = rd_kafka_topic_name(m->rkt);

    snprintf(partition, sizeof partition, "%d", m->partition);
    snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
    kc->dlq_seq++;
    kc->dlq_done = 0;
    kc->dlq_err = RD_KAFKA_RESP_ERR_NO_ERROR;
    /* The array form of produce: the RD_KAFKA_V_* macros are GNU statement expressions. */
    rd_kafka_vu_t vu[11];
    memset(vu, 0, sizeof vu);
    vu[0].vtype = RD_KAFKA_VTYPE_TOPIC;
    vu[0].u.cstr = kc->dlq_topic;
    vu[1].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vu[1].u.i = RD_KAFKA_MSG_F_COPY;
    vu[2].vtype = RD_KAFKA_VTYPE_KEY;
    vu[2].u.mem.ptr = m->key;
    vu[2].u.mem.size = m->key_len;
    vu[3].vtype = RD_KAFKA_VTYPE_VALUE;
    vu[3].u.mem.ptr = m->payload;
    vu[3].u.mem.size = len;
    const char *const names[5] = {"dlq.reason", "dlq.origin.topic", "dlq.origin.partition",
                                  "dlq.origin.offset", "dlq.service"};
    const char *const values[5] = {reason, origin_topic, partition, offset, "push-email"};
    for (size_t i = 0; i < 5; i++) {
        vu[4 + i].vtype = RD_KAFKA_VTYPE_HEADER;
        vu[4 + i].u.header.name = names[i];
        vu[4 + i].u.header.val = values[i];
        vu[4 + i].u.header.size = -1;
    }
    vu[9].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vu[9].u.ptr = (void *)kc->dlq_seq;
    size_t nvu = 10;
    if (cut_from != NULL) {
        vu[10].vtype = RD_KAFKA_VTYPE_HEADER;
        vu[10].u.header.name = "dlq.value.truncated.from";
        vu[10].u.header.val = cut_from;
        vu[10].u.header.size = -1;
        nvu = 11;
    }
    rd_kafka_error_t *error = rd_kafka_produceva(kc->dlq, vu, nvu);
    if (error != NULL) {
        rd_kafka_resp_err_t e = rd_kafka_error_code(error);
        log_write(LOG_ERROR, "DLQ produce failed", "error", rd_kafka_error_string(error), NULL);
        rd_kafka_error_destroy(error);
        dlq_check_fatal(kc);
        return e;
    }
    rd_kafka_flush(kc->dlq, DLQ_FLUSH_MS);
    if (!kc->dlq_done || kc->dlq_err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_write(LOG_ERROR, "DLQ delivery not confirmed", "error",
                  kc->dlq_done ? rd_kafka_err2str(kc->dlq_err) : "timed out", NULL);
        dlq_check_fatal(kc);
        return kc->dlq_done ? kc->dlq_err : RD_KAFKA_RESP_ERR__TIMED_OUT;
    }
    metric_counter_add(kc->m_dlq, 1);
    log_write(LOG_WARN, "event sent to the DLQ", "reason", reason, "partition", partition, "offset",
              offset, cut_from != NULL ? "value_truncated_from" : NULL, cut_from, NULL);
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Writes a copy of m to the DLQ (dlq_produce) and returns 0 once it is safely there. A
 * value too large for the DLQ (the copy's headers on top of a record near the source's
 * size limit, or a DLQ topic with a lower max.message.bytes) would be refused forever and
 * hold its partition: the DLQ then gets its first DLQ_CUT_BYTES with the whole length in
 * header dlq.value.truncated.from; the whole record stays in the source topic, at the
 * origin headers' partition and offset, until its retention. */
static int send_to_dlq(struct kafka_consumer *kc, const rd_kafka_message_t *m, const char *reason)
{
    rd_kafka_resp_err_t e = dlq_produce(kc, m, reason, m->len, NULL);
    if (too_large(e) && m->len > DLQ_CUT_BYTES) {
        char whole[24];
        snprintf(whole, sizeof whole, "%zu", m->len);
        e = dlq_produce(kc, m, reason, DLQ_CUT_BYTES, whole);
    }
    return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

/* Seeks partition back to offset: 0 when done. librdkafka drops what it had fetched
 * before, so the partition's messages of later batches come from offset on; those of the
 * batch in hand are stale (handle() skips them). */
static int seek_back(struct kafka_consumer *kc, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, kc->topic, partition)->offset = offset;
    rd_kafka_error_t *err = rd_kafka_seek_partitions(kc->rk, l, SEEK_TIMEOUT_MS);
    int rc = 0;
    if (err == NULL && l->elems[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_write(LOG_ERROR, "seek failed", "error", rd_kafka_err2str(l->elems[0].err), NULL);
        rc = -1;
    } else if (err != NULL) {
        log_write(LOG_ERROR, "seek failed", "error", rd_kafka_error_string(err), NULL);
        rd_kafka_error_destroy(err);
        rc = -1;
    }
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* Pauses partition (no-op when it is paused already). */
static void pause_partition(struct kafka_consumer *kc, struct partition_state *ps,
                            int32_t partition)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, kc->topic, partition);
    rd_kafka_resp_err_t e = rd_kafka_pause_partitions(kc->rk, l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_write(LOG_ERROR, "pause failed", "error", rd_kafka_err2str(e), NULL);
    rd_kafka_topic_partition_list_destroy(l);
    if (ps != NULL && !ps->paused) {
        metric_gauge_add(kc->m_paused, 1);
        /* Its committed offset comes with the next statistics that see it paused; until
         * then its lag is in what the last ones reported as fetched. */
        ps->stats_committed = -1;
    }
    if (ps != NULL)
        ps->paused = true;
}

/* Pauses m's partition and seeks it back to m, to be retried after a backoff. */
static void retry_later(struct kafka_consumer *kc, const rd_kafka_message_t *m, const char *reason)
{
    struct partition_state *ps = part(kc, m->partition);
    char delay_s[16], offset[24];

    pause_partition(kc, ps, m->partition);
    int sought = seek_back(kc, m->partition, m->offset);

    uint32_t delay =
        retry_delay_ms(ps ? ps->attempt : 0, kc->retry_base_ms, kc->retry_max_ms, random_u32());
    if (ps != NULL) {
        ps->need_seek = sought != 0;
        ps->seek_batch = kc->batch_no;
        ps->want_offset = m->offset;
        ps->resought = false;
        ps->resume_at_ms = now_ms() + delay;
        ps->attempt++;
    }
    metric_counter_add(kc->m_retries, 1);
    snprintf(delay_s, sizeof delay_s, "%.1f", delay / 1000.0);
    snprintf(offset, sizeof offset, "%lld", (long long)m->offset);
    log_write(LOG_WARN, "transient failure: partition paused", "reason", reason, "retry_in_s",
              delay_s, "offset", offset, NULL);
}

/* Hands m back unhandled: its partition is sought back to it (no pause, no backoff), once
 * per partition and batch; the events behind it follow in order. The first event of a
 * partition in a batch may be one handed back in the batch before (want_offset still
 * set): it is sought back again. When the seek fails the partition is paused and
 * resume_due seeks again before it resumes: a partition is never read past an event that
 * was not handled. */
static void requeue(struct kafka_consumer *kc, const rd_kafka_message_t *m)
{
    struct partition_state *ps = part(kc, m->partition);

    if (ps == NULL || !ps->assigned || ps->paused)
        return; /* not ours any more, or waiting for its retry (sought back already) */
    if (ps->want_offset >= 0 && ps->seek_batch == kc->batch_no)
        return; /* sought back to an earlier event of this batch */
    if (ps->want_offset < 0) {
        ps->want_offset = m->offset;
        ps->resought = false;
    } /* else nothing from want_offset on was handled yet: back to it */
    ps->seek_batch = kc->batch_no;
    if (seek_back(kc, m->partition, ps->want_offset) != 0) {
        pause_partition(kc, ps, m->partition);
        ps->need_seek = true;
        ps->resume_at_ms = now_ms() + SEEK_RETRY_MS;
    }
}

static void resume_due(struct kafka_consumer *kc)
{
    int64_t now = now_ms();
    for (int32_t p = 0; p < MAX_PARTITIONS; p++) {
        struct partition_state *ps = &kc->parts[p];
        if (!ps->paused || ps->resume_at_ms > now)
            continue;
        if (ps->need_seek) {
            /* Resumed without it, the partition would be read past want_offset. */
            if (seek_back(kc, p, ps->want_offset) != 0) {
                ps->resume_at_ms = now + SEEK_RETRY_MS;
                continue;
            }
            ps->need_seek = false;
            ps->seek_batch = kc->batch_no;
        }
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, kc->topic, p);
        rd_kafka_resp_err_t e = rd_kafka_resume_partitions(kc->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
            log_write(LOG_ERROR, "resume failed", "error", rd_kafka_err2str(e), NULL);
            continue;
        }
        ps->paused = false; /* want_offset stays until the retried event arrives */
        metric_gauge_add(kc->m_paused, -1);
    }
}

/* Handles m, whose value was parsed into *pe. */
static void handle(struct kafka_consumer *kc, const rd_kafka_message_t *m,
                   const struct parsed_event *pe)
{
    struct notify_report rep;
    struct partition_state *ps = part(kc, m->partition);

    if (ps == NULL) {
        /* Beyond MAX_PARTITIONS: refused at assignment (kafka_consumer_alive says why).
         * Nothing of it is handled or stored, so nothing of it is lost. */
        return;
    }
    if (!ps->assigned)
        return; /* revoked while the batch was in hand: its next owner reads it */
    if (ps->want_offset >= 0) {
        if (ps->paused || ps->seek_batch == kc->batch_no)
            return; /* in hand from before the seek: it will come again in order */
        /* The first event after the seek: librdkafka dropped what it had fetched before, so
         * this is want_offset. Anything else is not handled: an earlier offset is stale; a
         * later one is sought back once more, and only when it comes again (want_offset
         * was deleted by retention meanwhile: auto.offset.reset) does the partition go on
         * from there. */
        if (m->offset < ps->want_offset)
            return;
        if (m->offset > ps->want_offset) {
            char want[24], got[24];
            snprintf(want, sizeof want, "%lld", (long long)ps->want_offset);
            snprintf(got, sizeof got, "%lld", (long long)m->offset);
            if (!ps->resought) {
                log_write(LOG_WARN, "partition read past the sought offset: seeking back again",
                          "sought", want, "got", got, NULL);
                ps->resought = true;
                ps->seek_batch = kc->batch_no;
                if (seek_back(kc, m->partition, ps->want_offset) != 0) {
                    pause_partition(kc, ps, m->partition);
                    ps->need_seek = true;
                    ps->resume_at_ms = now_ms() + SEEK_RETRY_MS;
                }
                return;
            }
            log_write(LOG_WARN, "the sought offset is gone (retention?): going on from the next",
                      "sought", want, "got", got, NULL);
        }
        ps->want_offset = -1;
        ps->resought = false;
    }
    if (kc->waiting_len >= WAITING_MAX - 1) {
        /* The delivery log is far behind (its database slow or down): wait a little, then
         * hold this partition back rather than pile up offsets. Nothing is sent yet. */
        (void)flush_waiting(kc, GATE_FULL_MS);
        if (kc->waiting_len >= WAITING_MAX - 1) {
            retry_later(kc, m, "delivery log writes are behind");
            return;
        }
    }
    if (pe->result == ENVELOPE_TOMBSTONE) {
        metric_counter_add(kc->m_events_tombstone, 1);
        goto done;
    }
    if (pe->result == ENVELOPE_MALFORMED) {
        char why[300];
        snprintf(why, sizeof why, "malformed event: %s", pe->reason);
        if (send_to_dlq(kc, m, why) != 0) {
            retry_later(kc, m, "DLQ unavailable");
            return;
        }
        metric_counter_add(kc->m_events_malformed, 1);
        goto done;
    }

    enum notify_outcome o = kc->handler(kc->handler_ctx, &pe->change, &rep);
    metric_counter_add(kc->m_sent, rep.sent);
    metric_counter_add(kc->m_deduped, rep.deduped);
    if (o == NOTIFY_RETRY) {
        metric_counter_add(kc->m_events_retry, 1);
        retry_later(kc, m, rep.reason);
        return;
    }
    if (o == NOTIFY_FAILED) {
        if (send_to_dlq(kc, m, rep.reason) != 0) {
            retry_later(kc, m, "DLQ unavailable");
            return;
        }
        metric_counter_add(kc->m_failed, rep.failed);
        metric_counter_add(kc->m_events_failed, 1);
        goto done;
    }
    metric_counter_add(kc->m_events_done, 1);
done:
    if (ps != NULL)
        ps->attempt = 0;
    offset_done(kc, m);
}

void kafka_consumer_poll_once(struct kafka_consumer *kc, int timeout_ms)
{
    rd_kafka_message_t *batch[BATCH_MAX];
    const struct user_change *ok[BATCH_MAX];
    size_t n = 0, nok = 0;

    atomic_store(&kc->last_poll_ms, (long long)now_ms());
    drain_waiting(kc);
    resume_due(kc);
    lag_of_paused(kc);
    rd_kafka_poll(kc->dlq, 0);
    rd_kafka_message_t *m = rd_kafka_consumer_poll(kc->rk, timeout_ms);
    if (m == NULL)
        return;
    kc->batch_no++;
    /* What librdkafka has already fetched behind it: one batch, so that the delivery log
     * is asked about all of its emails in one round trip. */
    batch[n++] = m;
    while (n < BATCH_MAX && (m = rd_kafka_consumer_poll(kc->rk, 0)) != NULL)
        batch[n++] = m;
    for (size_t i = 0; i < n; i++) {
        struct parsed_event *pe = &kc->parsed[i];
        if (batch[i]->err != RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        pe->reason[0] = '\0';
        if (batch[i]->payload == NULL || batch[i]->len == 0)
            pe->result = ENVELOPE_TOMBSTONE;
        else
            pe->result = debezium_envelope_parse(batch[i]->payload, batch[i]->len, &pe->change,
                                                 pe->reason, sizeof pe->reason);
        if (pe->result == ENVELOPE_OK)
            ok[nok++] = &pe->change;
    }
    if (kc->prefetch != NULL && nok > 0)
        kc->prefetch(kc->handler_ctx, ok, nok);
    int64_t started = now_ms();
    for (size_t i = 0; i < n; i++) {
        m = batch[i];
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* A stop leaves the rest unhandled: their offsets are not stored. */
            bool stopping = kc->stop != NULL && kc->stop();
            if (!stopping && now_ms() - started > kc->batch_budget_ms)
                requeue(kc, m);
            else if (!stopping)
                handle(kc, m, &kc->parsed[i]);
            atomic_store(&kc->last_poll_ms, (long long)now_ms());
        } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            log_write(LOG_WARN, "consumer error", "error", rd_kafka_message_errstr(m), NULL);
        }
        rd_kafka_message_destroy(m);
    }
}

int kafka_consumer_run(struct kafka_consumer *kc, bool (*stop)(void))
{
    kc->stop = stop;
    while (!stop())
        kafka_consumer_poll_once(kc, 200);
    return 0;
}

bool kafka_consumer_alive(const struct kafka_consumer *kc, char *why, size_t whylen)
{
    int unsupported = atomic_load(&((struct kafka_consumer *)kc)->unsupported_partition);
    if (unsupported >= 0) {
        snprintf(why, whylen, "partition %d assigned: push-email handles partitions 0-%d only",
                 unsupported, MAX_PARTITIONS - 1);
        return false;
    }
    if (atomic_load(&((struct kafka_consumer *)kc)->dlq_fatal)) {
        snprintf(why, whylen, "the DLQ producer hit a fatal error (a restart makes a new one)");
        return false;
    }
    long long idle_ms =
        (long long)now_ms() - atomic_load(&((struct kafka_consumer *)kc)->last_poll_ms);
    if (idle_ms > kc->stall_after_ms) {
        snprintf(why, whylen, "the consumer loop has not polled for %lld ms (limit %lld ms)",
                 idle_ms, (long long)kc->stall_after_ms);
        return false;
    }
    return true;
}

uint32_t kafka_consumer_max_poll_interval_ms(const struct kafka_consumer *kc)
{
    return kc->max_poll_interval_ms;
}

/* librdkafka before 2.3.0 aborts in rd_kafka_destroy() ("rd_kafka_sticky_assignor_state_
 * destroy: Assertion `assignor_state' failed", librdkafka#4312) when the group had chosen
 * cooperative-sticky (a JoinGroup was answered) but no assignment had come yet: a SIGTERM
 * during the first join would end in SIGABRT instead of exit 0. So a consumer that never
 * had an assignment waits up to FIRST_ASSIGN_WAIT_MS for it, handling nothing (offsets of
 * what it fetches are not stored: read again later). Returns false when the group chose
 * cooperative-sticky and still no assignment came: then the handle must not be destroyed.
 * (Asked before the close: after it librdkafka no longer tells, and returns NULL.) */
static bool settle_first_assignment(struct kafka_consumer *kc)
{
    if (kc->assigned_once || rd_kafka_version() >= 0x020300ff)
        return true;
    int64_t until = now_ms() + FIRST_ASSIGN_WAIT_MS;
    while (!kc->assigned_once && now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(kc->rk, 100);
        if (m != NULL)
            rd_kafka_message_destroy(m);
    }
    return kc->assigned_once || strcmp(protocol_of(kc->rk), "COOPERATIVE") != 0;
}

void kafka_consumer_free(struct kafka_consumer *kc)
{
    if (kc == NULL)
        return;
    bool destroyable = settle_first_assignment(kc);
    int flushed = flush_waiting(kc, GATE_FLUSH_MS);
    kc->closing = true;
    if (flushed != 0) {
        char n[24];
        snprintf(n, sizeof n, "%zu", kc->waiting_len);
        log_write(LOG_WARN, "close: offsets not stored, their events will be read again", "events",
                  n, NULL);
    }
    rd_kafka_resp_err_t e = rd_kafka_consumer_close(kc->rk); /* commits stored offsets */
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_write(LOG_WARN, "consumer close", "error", rd_kafka_err2str(e), NULL);
    if (destroyable)
        rd_kafka_destroy(kc->rk);
    else /* left the group above; the process exits next, which frees it */
        log_write(LOG_WARN,
                  "consumer closed before its first assignment: not destroyed (librdkafka "
                  "#4312 would abort)",
                  NULL);
    rd_kafka_flush(kc->dlq, DLQ_FLUSH_MS);
    rd_kafka_destroy(kc->dlq);
    /* The final totals: /metrics is gone by now, and a scrape just before a stop misses
     * what the last batch sent while the stop was on its way. */
    char sent[24], deduped[24], failed[24], done[24];
    snprintf(sent, sizeof sent, "%" PRIu64, metric_counter_value(kc->m_sent));
    snprintf(deduped, sizeof deduped, "%" PRIu64, metric_counter_value(kc->m_deduped));
    snprintf(failed, sizeof failed, "%" PRIu64, metric_counter_value(kc->m_failed));
    snprintf(done, sizeof done, "%" PRIu64, metric_counter_value(kc->m_events_done));
    log_write(LOG_INFO, "consumer closed", "emails_sent", sent, "emails_deduped", deduped,
              "emails_failed", failed, "events_done", done, NULL);
    free(kc->parsed);
    free(kc->waiting);
    free(kc->topic);
    free(kc->dlq_topic);
    free(kc);
}
