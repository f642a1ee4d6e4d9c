/* kafka_consumer: reads cdc.info-user with librdkafka and hands each event to a handler,
 * storing its offset only once the handler is done with it (at least once from Kafka).
 * Malformed events and finally failed ones go to the DLQ topic; transient failures pause
 * the partition and retry the same event with backoff while polling goes on. */
#ifndef PUSH_EMAIL_TRANSPORT_KAFKA_CONSUMER_H
#define PUSH_EMAIL_TRANSPORT_KAFKA_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "interactors/notifier.h"

struct metrics;

/* What the consumer calls per parsed event; the notifier in production. */
typedef enum notify_outcome (*kafka_event_handler)(void *ctx, const struct user_change *c,
                                                   struct notify_report *report);

/* How the consumer learns that what an event's handler recorded is durable, when the
 * handler's store writes behind (the delivery log's `sent` marks). After the handler is
 * done with an event, ticket() is read; the event's offset is stored once durable() has
 * reached it (offsets of a partition stay in order). flush() waits up to timeout_ms for
 * everything ticketed (0 when done), before a revoke's commit and at close. */
struct kafka_offset_gate {
    uint64_t (*ticket)(void *ctx);
    uint64_t (*durable)(void *ctx);
    int (*flush)(void *ctx, int timeout_ms);
    void *ctx;
};

struct kafka_consumer_config {
    const char *brokers;   /* "127.0.0.1:9092" */
    const char *group_id;  /* "push-email" */
    const char *topic;     /* "cdc.info-user" */
    const char *dlq_topic; /* "cdc.info-user.dlq" */
    const char *client_id; /* may be NULL */
    uint32_t retry_base_ms;
    uint32_t retry_max_ms;
    /* How long the group waits for a member that stopped heartbeating (a crashed one)
     * before its partitions move: Kafka's default is 45 s. 0: 10 s. */
    uint32_t session_timeout_ms;
    /* Extra librdkafka properties as "key=value" strings (NULL-terminated list, may be
     * NULL): security settings, test.mock.num.brokers, ... Applied last. */
    const char *const *extra;
    /* May be NULL: a handler's effects are durable when it returns. Must outlive the
     * consumer. */
    const struct kafka_offset_gate *gate;
    /* May be NULL. Called with handler_ctx and the parsed events of a batch (the messages
     * already fetched, at most 64) before the handler sees them one by one: the notifier
     * looks up their delivery states in one round trip. */
    void (*prefetch)(void *ctx, const struct user_change *const *changes, size_t n);
    /* How long one batch may take before the rest is handed back (sought back, read
     * again after the next poll). 0: 10 s. */
    uint32_t batch_budget_ms;
    /* The longest the handler may take over one event (all its emails, each up to the
     * SMTP timeout). 0: 60 s. The loop polls between batches only, so Kafka's
     * max.poll.interval.ms is set to batch_budget_ms + event_max_ms + 60 s (at least
     * librdkafka's 300 s): a slow SMTP server then never gets this member dropped from
     * the group mid-event, which would let another member send the same email. */
    uint32_t event_max_ms;
    /* kafka_consumer_alive() turns false when the loop has neither polled nor finished an
     * event for longer than this. 0: max.poll.interval.ms as above (by then Kafka has
     * given the partitions away in any case). */
    uint32_t stall_after_ms;
};

struct kafka_consumer;

/* Creates the consumer and the DLQ producer and subscribes. handler and metrics (may be
 * NULL) must outlive the consumer. NULL with errstr filled on failure. */
struct kafka_consumer *kafka_consumer_new(const struct kafka_consumer_config *cfg,
                                          kafka_event_handler handler, void *handler_ctx,
                                          struct metrics *metrics, char *errstr, size_t errlen);

/* Polls and handles events until stop() returns true (checked between events, so the
 * event in hand is always finished). Returns 0. */
int kafka_consumer_run(struct kafka_consumer *kc, bool (*stop)(void));

/* Waits up to timeout_ms for an event, then handles it and the events already fetched
 * behind it (a batch of at most 64): for tests and for callers with their own loop. */
void kafka_consumer_poll_once(struct kafka_consumer *kc, int timeout_ms);

/* The liveness check (push-email's /healthz): false, with the reason in why, when the loop
 * has been stuck for longer than stall_after_ms, when a partition it cannot track (1024
 * or above) was assigned to it, or when the DLQ producer hit a fatal error; a restart
 * is the cure for each. Thread-safe. */
bool kafka_consumer_alive(const struct kafka_consumer *kc, char *why, size_t whylen);

/* Commits the stored offsets, leaves the group, flushes the DLQ producer and frees. */
void kafka_consumer_free(struct kafka_consumer *kc);

/* The max.poll.interval.ms the consumer sets (see event_max_ms), for the start-up log. */
uint32_t kafka_consumer_max_poll_interval_ms(const struct kafka_consumer *kc);

#endif
