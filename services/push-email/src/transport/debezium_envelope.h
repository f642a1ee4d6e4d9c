/* debezium_envelope: Debezium change-event JSON (with or without the schema wrapper) to a
 * user_change. */
#ifndef PUSH_EMAIL_TRANSPORT_DEBEZIUM_ENVELOPE_H
#define PUSH_EMAIL_TRANSPORT_DEBEZIUM_ENVELOPE_H

#include <stddef.h>

#include "entities/user_change.h"

enum envelope_result {
    ENVELOPE_OK = 0,
    ENVELOPE_TOMBSTONE, /* null value (len 0 or "null"): skip */
    ENVELOPE_MALFORMED, /* reason says why; the event goes to the DLQ */
};

/* Parses a Kafka record value. Accepts {"schema":..,"payload":{envelope}} and the bare
 * envelope. Requires op in c/u/d/r/t, the images the op needs (after for c/r/u, before
 * for u/d), each image with id and email, and source with server_id, file, pos; checks
 * types (DATE as int days, MicroTimestamp as int64 micros) and lengths; UTF-8 only.
 * out is fully written on OK and zeroed otherwise. reason (the caller's buffer, may be NULL
 * when reason_len is 0) gets a one-line "<field>: <problem>" on MALFORMED; it names fields,
 * never values, so it is safe to log and to put in a DLQ header. Values over 1 MiB, with
 * invalid UTF-8 or with a NUL (raw or \u0000) are malformed; timestamps as strings are
 * malformed (the connector's JsonConverter sends MicroTimestamp integers); integers must be
 * exact in a double (|n| < 2^53). {"schema":..,"payload":null} is a tombstone. */
enum envelope_result debezium_envelope_parse(const char *value, size_t len, struct user_change *out,
                                             char *reason, size_t reason_len);

#endif
