/* user: the person's record as userdata keeps it, and the rules a valid one obeys. */
#include "entities/user.h"

#include <stdio.h>
#include <string.h>

#include "entities/utf8.h"

/* Copies src into dst (n bytes); what does not fit is cut before the first character that
 * would not fit whole, so that a cut UTF-8 sequence never reaches a response. */
static void copy_cut(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    if (len >= n) {
        len = n - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
            len--; /* src[len] continues a character: drop that character */
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

void field_errors_add(struct field_errors *errs, const char *field, const char *message)
{
    if (errs == NULL || errs->n >= USER_FIELD_ERRORS_MAX)
        return;
    struct field_error *e = &errs->e[errs->n++];
    copy_cut(e->field, sizeof e->field, field);
    copy_cut(e->message, sizeof e->message, message);
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alnum(char c)
{
    return is_alpha(c) || is_digit(c);
}

bool user_username_valid(const char *s)
{
    size_t n = strlen(s);

    if (n < USER_USERNAME_MIN || n > USER_USERNAME_MAX || !is_alnum(s[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    }
    return true;
}

/* RFC 5322 atext, the characters of an unquoted local part besides dots. */
static bool is_atext(char c)
{
    return is_alnum(c) || (c != '\0' && strchr("!#$%&'*+/=?^_`{|}~-", c) != NULL);
}

static bool domain_valid(const char *d, size_t n)
{
    size_t labels = 0;
    size_t i = 0;
    size_t last_start = 0;

    if (n == 0 || n > 253)
        return false;
    while (i <= n) {
        size_t start = i;
        while (i < n && d[i] != '.')
            i++;
        size_t len = i - start;
        if (len == 0 || len > 63 || d[start] == '-' || d[i - 1] == '-')
            return false;
        for (size_t k = start; k < i; k++) {
            if (!is_alnum(d[k]) && d[k] != '-')
                return false;
        }
        labels++;
        last_start = start;
        i++; /* skip the dot (or step past the end) */
    }
    if (labels < 2)
        return false;
    /* The top-level label is letters, or an IDNA A-label (xn--...). */
    if (strncmp(d + last_start, "xn--", 4) == 0)
        return true;
    for (size_t k = last_start; k < n; k++) {
        if (!is_alpha(d[k]))
            return false;
    }
    return n - last_start >= 2;
}

bool user_email_valid(const char *s)
{
    size_t n = strlen(s);
    const char *at = strchr(s, '@');

    if (n > USER_EMAIL_MAX || at == NULL || strchr(at + 1, '@') != NULL)
        return false;
    size_t local = (size_t)(at - s);
    if (local == 0 || local > USER_EMAIL_LOCAL_MAX || s[0] == '.' || s[local - 1] == '.')
        return false;
    for (size_t i = 0; i < local; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (!is_atext(s[i])) {
            return false;
        }
    }
    return domain_valid(at + 1, n - local - 1);
}

int64_t user_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's days_from_civil. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t mp = (int64_t)((m + 9) % 12);
    const int64_t doy = (153 * mp + 2) / 5 + (int64_t)d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : mdays[m - 1];
}

bool user_date_valid(const char *s, int64_t today_days)
{
    if (strlen(s) != USER_DATE_LEN || s[4] != '-' || s[7] != '-')
        return false;
    for (size_t i = 0; i < USER_DATE_LEN; i++) {
        if (i != 4 && i != 7 && !is_digit(s[i]))
            return false;
    }
    int64_t y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    unsigned m = (unsigned)((s[5] - '0') * 10 + (s[6] - '0'));
    unsigned d = (unsigned)((s[8] - '0') * 10 + (s[9] - '0'));
    if (y < 1900 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return false;
    return user_days_from_civil(y, m, d) < today_days;
}

static bool subtag_all(const char *s, size_t n, bool (*pred)(char))
{
    for (size_t i = 0; i < n; i++) {
        if (!pred(s[i]))
            return false;
    }
    return true;
}

/* BCP 47 (RFC 5646) langtag, without extension or private-use subtags: language (2-3 or
 * 5-8 letters), then optional script (4 letters), region (2 letters or 3 digits) and
 * variants (5-8 alphanumerics, or a digit and 3 alphanumerics), in that order. */
bool user_locale_valid(const char *s)
{
    size_t total = strlen(s);
    int stage = 0; /* 0 language, 1 script, 2 region, 3 variants */

    if (total == 0 || total > USER_LOCALE_MAX)
        return false;
    const char *p = s;
    while (*p) {
        const char *dash = strchr(p, '-');
        size_t n = dash ? (size_t)(dash - p) : strlen(p);
        if (n == 0)
            return false;
        if (stage == 0) {
            if (!((n >= 2 && n <= 3) || (n >= 5 && n <= 8)) || !subtag_all(p, n, is_alpha))
                return false;
            stage = 1;
        } else if (stage <= 1 && n == 4 && subtag_all(p, n, is_alpha)) {
            stage = 2;
        } else if (stage <= 2 && ((n == 2 && subtag_all(p, n, is_alpha)) ||
                                  (n == 3 && subtag_all(p, n, is_digit)))) {
            stage = 3;
        } else if (((n >= 5 && n <= 8) || (n == 4 && is_digit(p[0]))) &&
                   subtag_all(p, n, is_alnum)) {
            stage = 3;
        } else {
            return false;
        }
        if (dash == NULL)
            break;
        p = dash + 1;
        if (*p == '\0')
            return false; /* trailing dash */
    }
    return true;
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool user_id_valid(const char *s)
{
    if (strlen(s) != USER_ID_LEN)
        return false;
    for (size_t i = 0; i < USER_ID_LEN; i++) {
        bool dash_pos = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_pos ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

const char *user_status_name(enum user_status s)
{
    return s == USER_STATUS_CONFIRMED ? "CONFIRMED" : "UNCONFIRMED";
}

bool user_status_parse(const char *s, enum user_status *out)
{
    if (strcmp(s, "CONFIRMED") == 0) {
        *out = USER_STATUS_CONFIRMED;
        return true;
    }
    if (strcmp(s, "UNCONFIRMED") == 0) {
        *out = USER_STATUS_UNCONFIRMED;
        return true;
    }
    return false;
}

/* Checks a free text field: not empty, UTF-8, no controls (newlines only where allowed),
 * length. "" is refused rather than stored as none: none is null, and a client that sent ""
 * would otherwise read back null. */
static void check_text(const char *field, const char *v, size_t max_cp, bool multiline,
                       struct field_errors *errs)
{
    char msg[96];

    if (v[0] == '\0') {
        field_errors_add(errs, field, "must not be empty (null means none)");
    } else if (!utf8_valid(v, strlen(v))) {
        field_errors_add(errs, field, "must be valid UTF-8");
    } else if (utf8_has_controls(v, multiline)) {
        field_errors_add(errs, field,
                         multiline ? "must not contain control characters other than newlines"
                                   : "must not contain control characters or line breaks");
    } else if (utf8_codepoints(v) > max_cp) {
        snprintf(msg, sizeof msg, "must be at most %zu characters", max_cp);
        field_errors_add(errs, field, msg);
    }
}

static void check_password(const char *v, struct field_errors *errs)
{
    char msg[96];
    size_t n = strlen(v);

    if (!utf8_valid(v, n)) {
        field_errors_add(errs, "password", "must be valid UTF-8");
    } else if (n > USER_PASSWORD_MAX) {
        snprintf(msg, sizeof msg, "must be at most %d bytes", USER_PASSWORD_MAX);
        field_errors_add(errs, "password", msg);
    } else if (utf8_codepoints(v) < USER_PASSWORD_MIN_CP) {
        snprintf(msg, sizeof msg, "must be at least %d characters", USER_PASSWORD_MIN_CP);
        field_errors_add(errs, "password", msg);
    }
}

bool user_fields_validate(const struct user_fields *f, enum user_write_mode mode,
                          int64_t today_days, struct field_errors *errs)
{
    size_t before = errs->n;
    bool need_all = mode != USER_WRITE_PATCH;
    enum user_status st;

#define GIVEN(bit)   ((f->present & (bit)) && !(f->null & (bit)))
#define IS_NULL(bit) ((f->present & (bit)) && (f->null & (bit)))

    /* username and email: required on create and replace, never null. */
    if (IS_NULL(USER_F_USERNAME) || (need_all && !(f->present & USER_F_USERNAME)))
        field_errors_add(errs, "username", "is required");
    else if (GIVEN(USER_F_USERNAME) && !user_username_valid(f->username))
        field_errors_add(errs, "username",
                         "must be 3 to 32 characters of letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit");

    if (IS_NULL(USER_F_EMAIL) || (need_all && !(f->present & USER_F_EMAIL)))
        field_errors_add(errs, "email", "is required");
    else if (GIVEN(USER_F_EMAIL) && !user_email_valid(f->email))
        field_errors_add(errs, "email", "must be a valid email address of at most 254 characters");

    /* password: required on create; optional (keep the current one) otherwise; never null. */
    if (IS_NULL(USER_F_PASSWORD) || (mode == USER_WRITE_CREATE && !(f->present & USER_F_PASSWORD)))
        field_errors_add(errs, "password", "is required");
    else if (GIVEN(USER_F_PASSWORD))
        check_password(f->password, errs);

    if (GIVEN(USER_F_FULL_NAME))
        check_text("full_name", f->full_name, USER_FULL_NAME_MAX_CP, false, errs);
    if (GIVEN(USER_F_ADDRESS))
        check_text("address", f->address, USER_ADDRESS_MAX_CP, true, errs);
    if (GIVEN(USER_F_DATE_OF_BIRTH) && !user_date_valid(f->date_of_birth, today_days))
        field_errors_add(errs, "date_of_birth",
                         "must be a real date in the past, YYYY-MM-DD, from 1900-01-01 on");
    if (GIVEN(USER_F_LOCALE) && !user_locale_valid(f->locale))
        field_errors_add(errs, "locale", "must be a BCP 47 language tag such as en or pt-BR");
    if (IS_NULL(USER_F_STATUS) || (GIVEN(USER_F_STATUS) && !user_status_parse(f->status, &st)))
        field_errors_add(errs, "status", "must be UNCONFIRMED or CONFIRMED");

#undef GIVEN
#undef IS_NULL
    return errs->n == before;
}

static void set_text(char *dst, size_t cap, const struct user_fields *f, unsigned bit,
                     const char *value, const char *def, enum user_write_mode mode)
{
    if (f->present & bit) {
        snprintf(dst, cap, "%s", (f->null & bit) ? def : value);
    } else if (mode != USER_WRITE_PATCH) {
        snprintf(dst, cap, "%s", def);
    }
}

void user_fields_apply(const struct user_fields *f, enum user_write_mode mode, struct user *u)
{
    set_text(u->username, sizeof u->username, f, USER_F_USERNAME, f->username, "", mode);
    set_text(u->email, sizeof u->email, f, USER_F_EMAIL, f->email, "", mode);
    set_text(u->full_name, sizeof u->full_name, f, USER_F_FULL_NAME, f->full_name, "", mode);
    set_text(u->address, sizeof u->address, f, USER_F_ADDRESS, f->address, "", mode);
    set_text(u->date_of_birth, sizeof u->date_of_birth, f, USER_F_DATE_OF_BIRTH, f->date_of_birth,
             "", mode);
    set_text(u->locale, sizeof u->locale, f, USER_F_LOCALE, f->locale, "en", mode);
    if ((f->present & USER_F_STATUS) && !(f->null & USER_F_STATUS))
        (void)user_status_parse(f->status, &u->status);
    else if (mode != USER_WRITE_PATCH)
        u->status = USER_STATUS_UNCONFIRMED;
}
