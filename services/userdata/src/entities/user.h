/* user: the person's record as userdata keeps it, and the rules a valid one obeys. */
#ifndef USERDATA_ENTITIES_USER_H
#define USERDATA_ENTITIES_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits, in bytes unless said otherwise. Buffers hold the limit plus the NUL. */
#define USER_ID_LEN            36 /* canonical lower-case UUID text */
#define USER_USERNAME_MIN      3  /* characters (ASCII only) */
#define USER_USERNAME_MAX      32
#define USER_EMAIL_MAX         254 /* RFC 5321 path limit */
#define USER_EMAIL_LOCAL_MAX   64
#define USER_FULL_NAME_MAX_CP  200 /* code points */
#define USER_ADDRESS_MAX_CP    500 /* code points */
#define USER_LOCALE_MAX        35  /* BCP 47 tags in practice */
#define USER_PASSWORD_MIN_CP   8   /* code points */
#define USER_PASSWORD_MAX      1024
#define USER_PASSWORD_HASH_MAX 128 /* libsodium crypto_pwhash_STRBYTES */
#define USER_DATE_LEN          10  /* YYYY-MM-DD */

enum user_status { USER_STATUS_UNCONFIRMED = 0, USER_STATUS_CONFIRMED = 1 };

/* One stored user. Plain value: copy with =, nothing to free. Empty string = SQL NULL
 * for full_name, address, date_of_birth. Timestamps are microseconds since the Unix
 * epoch, UTC; password_changed_at_us == 0 means never changed. */
struct user {
    char id[USER_ID_LEN + 1];
    char username[USER_USERNAME_MAX + 1];
    char email[USER_EMAIL_MAX + 1];
    char full_name[USER_FULL_NAME_MAX_CP * 4 + 1];
    char address[USER_ADDRESS_MAX_CP * 4 + 1];
    char date_of_birth[USER_DATE_LEN + 1];
    char locale[USER_LOCALE_MAX + 1];
    enum user_status status;
    char password_hash[USER_PASSWORD_HASH_MAX + 1];
    int64_t password_changed_at_us;
    int64_t created_at_us;
    int64_t updated_at_us;
    uint64_t version;
};

/* The fields a client may write, as the client gave them. Pointers are borrowed from
 * the caller (e.g. a parsed JSON tree) and must outlive the call they are passed to. */
enum user_field {
    USER_F_USERNAME = 1u << 0,
    USER_F_EMAIL = 1u << 1,
    USER_F_FULL_NAME = 1u << 2,
    USER_F_ADDRESS = 1u << 3,
    USER_F_DATE_OF_BIRTH = 1u << 4,
    USER_F_LOCALE = 1u << 5,
    USER_F_STATUS = 1u << 6,
    USER_F_PASSWORD = 1u << 7,
};
struct user_fields {
    unsigned present; /* USER_F_* bits the client sent */
    unsigned null;    /* USER_F_* bits the client sent as null (subset of present) */
    const char *username, *email, *full_name, *address, *date_of_birth, *locale, *status, *password;
};

/* How the fields are to be applied: create (required fields must be there), replace
 * (a full PUT: absent optional fields are cleared), patch (RFC 7396: absent = keep,
 * null = clear). */
enum user_write_mode { USER_WRITE_CREATE, USER_WRITE_REPLACE, USER_WRITE_PATCH };

#define USER_FIELD_ERRORS_MAX 16
struct field_error {
    char field[32];
    char message[160];
};
/* A list of per-field problems, reported to clients as problem+json "errors". */
struct field_errors {
    size_t n;
    struct field_error e[USER_FIELD_ERRORS_MAX];
};
void field_errors_add(struct field_errors *errs, const char *field, const char *message);

/* Checks every given field against the rules for the write mode; appends one entry per
 * problem to errs. Returns true when there is none. today_days = days since epoch (UTC)
 * of "now", so that dates of birth can be checked to lie in the past. */
bool user_fields_validate(const struct user_fields *f, enum user_write_mode mode,
                          int64_t today_days, struct field_errors *errs);

/* Copies validated fields into u following the write mode (password is not copied: the
 * caller hashes it). Call only after user_fields_validate returned true. */
void user_fields_apply(const struct user_fields *f, enum user_write_mode mode, struct user *u);

/* True when username (resp. email, date, locale) is well formed by the rules above. */
bool user_username_valid(const char *s);
bool user_email_valid(const char *s);
bool user_date_valid(const char *s, int64_t today_days);
bool user_locale_valid(const char *s);
bool user_id_valid(const char *s); /* canonical UUID text (any version, lower or upper hex) */

const char *user_status_name(enum user_status s);
bool user_status_parse(const char *s, enum user_status *out);

/* Days since 1970-01-01 of a proleptic Gregorian date; no range checks. */
int64_t user_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
