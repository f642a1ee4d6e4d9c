/* tools/kafka_topic.c: creates and deletes the throw-away Kafka topics of the benchmarks and
 * the e2e tests (no kafka-topics script is installed: the stack runs Kafka from its jars).
 * It refuses any topic whose name does not start with "bench." or "e2e.", so it cannot touch
 * cdc.info-user or Connect's own topics.
 *
 *   kafka_topic BROKERS create TOPIC PARTITIONS
 *   kafka_topic BROKERS delete TOPIC...
 *
 * Exit 0 when every topic was created or deleted, 1 when Kafka refused one (the reason is
 * printed), 2 on bad usage. */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TOPICS 64
#define TIMEOUT_MS 15000

static int name_ok(const char *t)
{
    return strncmp(t, "bench.", 6) == 0 || strncmp(t, "e2e.", 4) == 0;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s BROKERS create TOPIC PARTITIONS | BROKERS delete TOPIC...\n", argv0);
    return 2;
}

/* Prints each topic's outcome; 0 when all succeeded. */
static int report(const char *what, const rd_kafka_topic_result_t **tr, size_t cnt)
{
    int rc = 0;

    for (size_t i = 0; i < cnt; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
        const char *msg = rd_kafka_topic_result_error_string(tr[i]);
        printf("%s %s: %s\n", what, rd_kafka_topic_result_name(tr[i]),
               e ? (msg ? msg : rd_kafka_err2str(e)) : "ok");
        if (e)
            rc = 1;
    }
    return rc;
}

int main(int argc, char **argv)
{
    char err[512];
    int rc = 1;
    int create;

    if (argc < 4)
        return usage(argv[0]);
    create = strcmp(argv[2], "create") == 0;
    if (!create && strcmp(argv[2], "delete") != 0)
        return usage(argv[0]);
    if (create && argc != 5)
        return usage(argv[0]);
    int first = 3, last = create ? 4 : argc;
    if (last - first > MAX_TOPICS)
        return usage(argv[0]);
    for (int i = first; i < last; i++) {
        if (!name_ok(argv[i])) {
            fprintf(stderr, "refusing %s: not a bench.* or e2e.* topic\n", argv[i]);
            return 2;
        }
    }
    long partitions = create ? strtol(argv[4], NULL, 10) : 0;
    if (create && (partitions < 1 || partitions > 64))
        return usage(argv[0]);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s\n", err);
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_event_t *ev = NULL;
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_DeleteTopic_t *del[MAX_TOPICS];
    size_t n = 0;
    if (create) {
        nt = rd_kafka_NewTopic_new(argv[3], (int)partitions, 1, err, sizeof err);
        if (nt == NULL) {
            fprintf(stderr, "%s\n", err);
            goto out;
        }
        rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
    } else {
        for (int i = first; i < last; i++)
            del[n++] = rd_kafka_DeleteTopic_new(argv[i]);
        rd_kafka_DeleteTopics(rk, del, n, NULL, q);
    }
    /* One result event either way; its topics' outcomes are reported alike. */
    const char *what = create ? "create" : "delete";
    ev = rd_kafka_queue_poll(q, TIMEOUT_MS);
    const rd_kafka_topic_result_t **tr = NULL;
    size_t cnt = 0;
    if (ev != NULL && create && rd_kafka_event_CreateTopics_result(ev) != NULL)
        tr = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    else if (ev != NULL && !create && rd_kafka_event_DeleteTopics_result(ev) != NULL)
        tr = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
    if (tr != NULL)
        rc = report(what, tr, cnt);
    else
        fprintf(stderr, "no %s result within %d ms\n", what, TIMEOUT_MS);
    if (nt != NULL)
        rd_kafka_NewTopic_destroy(nt);
    rd_kafka_DeleteTopic_destroy_array(del, n);
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}
