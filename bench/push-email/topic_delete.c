/* bench/push-email/topic_delete.c: deletes the bench's own Kafka topics (kafka-topics is not
 * installed on the bench box). Refuses any name not starting with "bench.".
 *
 *   push_email_topic_delete BROKERS TOPIC... */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    char err[512];
    int rc = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: %s BROKERS TOPIC...\n", argv[0]);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "bench.", 6) != 0) {
            fprintf(stderr, "refusing to delete %s: not a bench.* topic\n", argv[i]);
            return 2;
        }
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof err) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (rk == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteTopic_t *del[64];
    int n = 0;
    for (int i = 2; i < argc && n < 64; i++)
        del[n++] = rd_kafka_DeleteTopic_new(argv[i]);
    rd_kafka_DeleteTopics(rk, del, (size_t)n, NULL, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    const rd_kafka_DeleteTopics_result_t *res = ev ? rd_kafka_event_DeleteTopics_result(ev) : NULL;
    if (res == NULL) {
        fprintf(stderr, "no DeleteTopics result\n");
        rc = 1;
    } else {
        size_t cnt = 0;
        const rd_kafka_topic_result_t **tr = rd_kafka_DeleteTopics_result_topics(res, &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
            printf("delete %s: %s\n", rd_kafka_topic_result_name(tr[i]),
                   e ? rd_kafka_err2str(e) : "ok");
            if (e)
                rc = 1;
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_DeleteTopic_destroy_array(del, (size_t)n);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}
