/* user_change: the binlog position key and date formatting of a Debezium users change. */
#include "entities/user_change.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void user_change_position_key(const struct user_change *c, char *out, size_t outlen)
{
    int n;

    if (out == NULL || outlen == 0) {
        return;
    }
    /* Every field comes from the event's source block, so a re-emission of the same change
     * (Debezium restarting from an earlier offset) gives the same key. */
    if (c->source.gtid[0] != '\0') {
        n = snprintf(out, outlen, "%" PRId64 ":%s:%" PRId64 ":%" PRId32 ":%s", c->source.server_id,
                     c->source.file, c->source.pos, c->source.row, c->source.gtid);
    } else {
        n = snprintf(out, outlen, "%" PRId64 ":%s:%" PRId64 ":%" PRId32, c->source.server_id,
                     c->source.file, c->source.pos, c->source.row);
    }
    /* A truncated key could equal another change's key and suppress its email: give an
     * empty key instead, which the caller can see. */
    if (n < 0 || (size_t)n >= outlen) {
        out[0] = '\0';
    }
}

void user_change_format_date(int32_t days, char out[16])
{
    /* civil_from_days (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms"): exact for
     * every int32 day count, negative (before 1970) included. */
    int64_t z = (int64_t)days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                      /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100); /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                      /* [0, 11] */
    int64_t d = doy - (153 * mp + 2) / 5 + 1;              /* [1, 31] */
    int64_t m = mp < 10 ? mp + 3 : mp - 9;                 /* [1, 12] */

    if (m <= 2) {
        y += 1;
    }
    /* The widest result, "-5877641-06-23", is 14 characters: 16 always holds it. The
     * compiler cannot see that, so format into room it can see and copy. */
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRId64 "-%02" PRId64, y, m, d);
    size_t len = n < 0 ? 0 : (size_t)n;

    if (len > 15) {
        len = 15;
    }
    memcpy(out, buf, len);
    out[len] = '\0';
}
