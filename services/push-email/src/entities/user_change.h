/* user_change: one change of a userdata.users row, as Debezium reported it. */
#ifndef PUSH_EMAIL_ENTITIES_USER_CHANGE_H
#define PUSH_EMAIL_ENTITIES_USER_CHANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Buffer sizes hold the userdata limits with room; longer values make an event malformed. */
#define UC_ID_MAX        36
#define UC_USERNAME_MAX  64
#define UC_EMAIL_MAX     254
#define UC_FULL_NAME_MAX 800  /* bytes: 200 code points of up to 4 bytes */
#define UC_ADDRESS_MAX   2000 /* bytes: 500 code points */
#define UC_LOCALE_MAX    35
#define UC_STATUS_MAX    16

/* A row image (Debezium "before" or "after"). Empty strings are SQL NULL. */
struct user_image {
    char id[UC_ID_MAX + 1];
    char username[UC_USERNAME_MAX + 1];
    char email[UC_EMAIL_MAX + 1];
    char full_name[UC_FULL_NAME_MAX + 1];
    char address[UC_ADDRESS_MAX + 1];
    bool has_date_of_birth;
    int32_t date_of_birth_days; /* days since 1970-01-01 (Debezium io.debezium.time.Date) */
    char locale[UC_LOCALE_MAX + 1];
    char status[UC_STATUS_MAX + 1];
    bool has_password_changed_at;
    int64_t password_changed_at_us; /* microseconds since the epoch (MicroTimestamp) */
    int64_t updated_at_us;
    uint64_t version;
};

enum change_op {
    CHANGE_CREATE = 'c',
    CHANGE_UPDATE = 'u',
    CHANGE_DELETE = 'd',
    CHANGE_READ = 'r', /* snapshot */
    CHANGE_TRUNCATE = 't',
};

/* Where in the binlog the change sits: what makes it unique and re-emittable. */
struct change_position {
    int64_t server_id;
    char file[128];
    int64_t pos;
    int32_t row;
    char gtid[128]; /* empty when the source has none */
    int64_t ts_ms;  /* source.ts_ms */
};

struct user_change {
    enum change_op op;
    bool has_before;
    bool has_after;
    struct user_image before;
    struct user_image after;
    struct change_position source;
};

/* Room for any position key: 20 + 127 + 20 + 11 + 127 bytes of fields, 4 colons, NUL. */
#define UC_POSITION_KEY_MAX 320

/* The binlog position as text, the same for every re-emission of this change:
 * "<server_id>:<file>:<pos>:<row>" (with ":<gtid>" when there is one). out is the
 * caller's, at least UC_POSITION_KEY_MAX bytes; a key that does not fit gives "" (never a
 * truncated key, which could equal another change's key). */
void user_change_position_key(const struct user_change *c, char *out, size_t outlen);

/* YYYY-MM-DD of days since the epoch (proleptic Gregorian; any int32, negative included;
 * years outside 0..9999 get a sign or more digits). */
void user_change_format_date(int32_t days, char out[16]);

#endif
