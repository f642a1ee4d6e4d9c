/* Unit tests of the user entity: field rules and how each write mode applies fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "entities/user.h"
#include "entities/utf8.h"

/* 2026-11-21 as days since the epoch. */
static int64_t today(void)
{
    return user_days_from_civil(2026, 11, 21);
}

static void username_rules(void **state)
{
    (void)state;
    assert_true(user_username_valid("ana"));
    assert_true(user_username_valid("Ana.Lima_2-x"));
    assert_true(user_username_valid("a2345678901234567890123456789012")); /* 32 */
    assert_false(user_username_valid("ab"));
    assert_false(user_username_valid("a23456789012345678901234567890123")); /* 33 */
    assert_false(user_username_valid("_ana"));
    assert_false(user_username_valid("ana lima"));
    assert_false(user_username_valid("ana'--"));
    assert_false(user_username_valid("jos\xc3\xa9"));
    assert_false(user_username_valid(""));
}

static void email_rules(void **state)
{
    (void)state;
    assert_true(user_email_valid("ana@example.com"));
    assert_true(user_email_valid("ana.lima+tag@mail.example.co.uk"));
    assert_true(user_email_valid("x@xn--bcher-kva.xn--p1ai"));
    assert_false(user_email_valid("ana"));
    assert_false(user_email_valid("ana@"));
    assert_false(user_email_valid("@example.com"));
    assert_false(user_email_valid("ana@localhost"));
    assert_false(user_email_valid("ana@@example.com"));
    assert_false(user_email_valid("a@b@example.com"));
    assert_false(user_email_valid(".ana@example.com"));
    assert_false(user_email_valid("ana.@example.com"));
    assert_false(user_email_valid("an..a@example.com"));
    assert_false(user_email_valid("ana@-example.com"));
    assert_false(user_email_valid("ana@example..com"));
    assert_false(user_email_valid("ana@example.c0m"));
    assert_false(user_email_valid("ana lima@example.com"));
    assert_false(user_email_valid("ana@example.com\r\nBcc: x@y.z"));
    assert_false(user_email_valid("ana@ex\xc3\xa4mple.com"));

    char local[65];
    char addr[100];
    memset(local, 'a', 64);
    local[64] = '\0';
    snprintf(addr, sizeof addr, "%s@example.com", local); /* 64: the most allowed */
    assert_true(user_email_valid(addr));
    snprintf(addr, sizeof addr, "%sa@example.com", local); /* 65 */
    assert_false(user_email_valid(addr));

    /* 255 characters in all: over the limit even though each part is fine. */
    char longest[300];
    const char *label = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    snprintf(longest, sizeof longest, "a@%s.%s.%s.%s.com", label, label, label, label);
    assert_true(strlen(longest) > 254);
    assert_false(user_email_valid(longest));
}

static void date_rules(void **state)
{
    (void)state;
    assert_true(user_date_valid("1990-04-01", today()));
    assert_true(user_date_valid("2000-02-29", today()));
    assert_true(user_date_valid("2026-11-20", today()));
    assert_false(user_date_valid("2026-11-21", today())); /* today is not in the past */
    assert_false(user_date_valid("2030-01-01", today()));
    assert_false(user_date_valid("1900-02-29", today())); /* 1900 was no leap year */
    assert_false(user_date_valid("2023-02-29", today()));
    assert_false(user_date_valid("1999-04-31", today()));
    assert_false(user_date_valid("1899-12-31", today()));
    assert_false(user_date_valid("1990-13-01", today()));
    assert_false(user_date_valid("1990-00-10", today()));
    assert_false(user_date_valid("1990-1-01", today()));
    assert_false(user_date_valid("1990/01/01", today()));
    assert_false(user_date_valid("19900101", today()));
    assert_false(user_date_valid("", today()));
    assert_int_equal(user_days_from_civil(1970, 1, 1), 0);
    assert_int_equal(user_days_from_civil(2000, 3, 1), 11017);
}

static void locale_rules(void **state)
{
    (void)state;
    assert_true(user_locale_valid("en"));
    assert_true(user_locale_valid("pt-BR"));
    assert_true(user_locale_valid("es-419"));
    assert_true(user_locale_valid("zh-Hant-TW"));
    assert_true(user_locale_valid("sl-rozaj-biske"));
    assert_true(user_locale_valid("de-CH-1996"));
    assert_false(user_locale_valid(""));
    assert_false(user_locale_valid("e"));
    assert_false(user_locale_valid("englishes")); /* 9 letters */
    assert_false(user_locale_valid("e1"));
    assert_false(user_locale_valid("pt_BR"));
    assert_false(user_locale_valid("pt-"));
    assert_false(user_locale_valid("-pt"));
    assert_false(user_locale_valid("pt--BR"));
    assert_false(user_locale_valid("pt-BR-Latn")); /* script after region */
    assert_false(user_locale_valid("en-US-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}

static void id_rules(void **state)
{
    (void)state;
    assert_true(user_id_valid("123e4567-e89b-42d3-a456-426614174000"));
    assert_true(user_id_valid("123E4567-E89B-42D3-A456-426614174000"));
    assert_false(user_id_valid("123e4567e89b42d3a456426614174000"));
    assert_false(user_id_valid("123e4567-e89b-42d3-a456-42661417400"));
    assert_false(user_id_valid("123e4567-e89b-42d3-a456-42661417400g"));
    assert_false(user_id_valid("' OR 1=1 --"));
}

static void utf8_rules(void **state)
{
    (void)state;
    assert_true(utf8_valid("Jos\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", 17));
    assert_false(utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(utf8_valid("\xed\xa0\x80", 3));     /* surrogate U+D800 */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(utf8_valid("\xc3", 1));             /* truncated */
    assert_false(utf8_valid("\x80", 1));             /* lone continuation */
    assert_false(utf8_valid("a\0b", 3));             /* NUL */
    assert_false(utf8_valid("\xff", 1));
    assert_int_equal(utf8_codepoints("J\xc3\xa9\xf0\x9f\x98\x80"), 3);
    assert_true(utf8_has_controls("a\x01", false));
    assert_true(utf8_has_controls("a\nb", false));
    assert_false(utf8_has_controls("a\nb", true));
    assert_true(utf8_has_controls("a\xc2\x85", true));   /* NEL, a C1 control */
    assert_false(utf8_has_controls("a\xc2\xa0", false)); /* NBSP is text */
}

static struct user_fields full_create(void)
{
    struct user_fields f = {0};
    f.present = USER_F_USERNAME | USER_F_EMAIL | USER_F_PASSWORD | USER_F_FULL_NAME |
                USER_F_ADDRESS | USER_F_DATE_OF_BIRTH | USER_F_LOCALE | USER_F_STATUS;
    f.username = "ana";
    f.email = "ana@example.com";
    f.password = "correct horse";
    f.full_name = "Ana Lima";
    f.address = "Rua A, 1\nSao Paulo";
    f.date_of_birth = "1990-04-01";
    f.locale = "pt-BR";
    f.status = "CONFIRMED";
    return f;
}

static bool has_error(const struct field_errors *e, const char *field)
{
    for (size_t i = 0; i < e->n; i++) {
        if (strcmp(e->e[i].field, field) == 0)
            return true;
    }
    return false;
}

static void create_needs_username_email_password(void **state)
{
    (void)state;
    struct user_fields f = {0};
    struct field_errors errs = {0};

    assert_false(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
    assert_int_equal(errs.n, 3);
    assert_true(has_error(&errs, "username"));
    assert_true(has_error(&errs, "email"));
    assert_true(has_error(&errs, "password"));

    f = full_create();
    memset(&errs, 0, sizeof errs);
    assert_true(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
    assert_int_equal(errs.n, 0);
}

static void every_bad_field_is_reported(void **state)
{
    (void)state;
    struct user_fields f = full_create();
    struct field_errors errs = {0};
    char name201[260];
    memset(name201, 'x', 201);
    name201[201] = '\0';

    f.username = "a b";
    f.email = "nope";
    f.password = "short";
    f.full_name = name201;
    f.address = "line\x01";
    f.date_of_birth = "2099-01-01";
    f.locale = "pt_BR";
    f.status = "ACTIVE";
    assert_false(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
    assert_int_equal(errs.n, 8);
    const char *fields[] = {"username", "email",         "password", "full_name",
                            "address",  "date_of_birth", "locale",   "status"};
    for (size_t i = 0; i < 8; i++)
        assert_true(has_error(&errs, fields[i]));
}

static void full_name_refuses_header_injection(void **state)
{
    (void)state;
    struct user_fields f = full_create();
    struct field_errors errs = {0};

    f.full_name = "x\r\nBcc: y@z.com";
    assert_false(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
    assert_true(has_error(&errs, "full_name"));
}

static void full_name_counts_characters_not_bytes(void **state)
{
    (void)state;
    struct user_fields f = full_create();
    struct field_errors errs = {0};
    char name[200 * 2 + 1]; /* 200 x U+00E9: 400 bytes, 200 characters */
    for (int i = 0; i < 200; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[400] = '\0';
    f.full_name = name;
    assert_true(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
}

/* "" is neither a name nor an address: none is said with null (openapi.yaml: minLength 1),
 * so that a client never sends "" and reads back null. */
static void empty_full_name_and_address_are_refused(void **state)
{
    (void)state;
    struct user_fields f = full_create();
    struct field_errors errs = {0};

    f.full_name = "";
    f.address = "";
    assert_false(user_fields_validate(&f, USER_WRITE_CREATE, today(), &errs));
    assert_int_equal(errs.n, 2);
    assert_true(has_error(&errs, "full_name"));
    assert_true(has_error(&errs, "address"));

    memset(&f, 0, sizeof f);
    memset(&errs, 0, sizeof errs);
    f.present = USER_F_ADDRESS;
    f.address = "";
    assert_false(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
    assert_true(has_error(&errs, "address"));

    /* null clears them; one space is text */
    memset(&errs, 0, sizeof errs);
    f.present = f.null = USER_F_FULL_NAME | USER_F_ADDRESS;
    assert_true(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
    f.null = 0;
    f.full_name = " ";
    f.address = " ";
    assert_true(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
}

static void patch_null_rules(void **state)
{
    (void)state;
    struct user_fields f = {0};
    struct field_errors errs = {0};

    /* Nothing given: a valid (empty) patch. */
    assert_true(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
    /* Nullable fields may be cleared; username/email/password/status may not. */
    f.present = f.null = USER_F_FULL_NAME | USER_F_ADDRESS | USER_F_DATE_OF_BIRTH | USER_F_LOCALE;
    assert_true(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
    f.present = f.null = USER_F_USERNAME | USER_F_EMAIL | USER_F_PASSWORD | USER_F_STATUS;
    assert_false(user_fields_validate(&f, USER_WRITE_PATCH, today(), &errs));
    assert_int_equal(errs.n, 4);
}

static void replace_without_password_is_valid(void **state)
{
    (void)state;
    struct user_fields f = full_create();
    struct field_errors errs = {0};

    f.present &= ~(unsigned)USER_F_PASSWORD;
    assert_true(user_fields_validate(&f, USER_WRITE_REPLACE, today(), &errs));
    f.present &= ~(unsigned)USER_F_EMAIL;
    assert_false(user_fields_validate(&f, USER_WRITE_REPLACE, today(), &errs));
    assert_true(has_error(&errs, "email"));
}

/* An error names a field the client sent (an unknown one may be long and non-ASCII): a
 * name too long for the buffer is cut between characters, never inside one. */
static void a_long_field_name_is_cut_between_characters(void **state)
{
    struct field_errors errs = {0};
    char name[64];
    (void)state;

    /* 30 ASCII bytes, then two 2-byte characters: the first straddles byte 31 */
    snprintf(name, sizeof name, "%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\xc3\xa9");
    field_errors_add(&errs, name, "is not a known field");
    assert_int_equal(errs.n, 1);
    assert_int_equal(strlen(errs.e[0].field), 30);
    assert_true(utf8_valid(errs.e[0].field, strlen(errs.e[0].field)));

    /* 29 ASCII bytes + a 2-byte character fit exactly (31 bytes) and are kept whole */
    snprintf(name, sizeof name, "%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\xc3\xa9");
    field_errors_add(&errs, name, "is not a known field");
    assert_string_equal(errs.e[1].field, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9");

    /* a 4-byte character across the end goes whole */
    snprintf(name, sizeof name, "%s", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xf0\x9f\x90\xb4");
    field_errors_add(&errs, name, "x");
    assert_string_equal(errs.e[2].field, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

static void apply_follows_the_write_mode(void **state)
{
    (void)state;
    struct user u = {0};
    struct user_fields f = full_create();

    user_fields_apply(&f, USER_WRITE_CREATE, &u);
    assert_string_equal(u.username, "ana");
    assert_string_equal(u.full_name, "Ana Lima");
    assert_string_equal(u.locale, "pt-BR");
    assert_int_equal(u.status, USER_STATUS_CONFIRMED);
    assert_string_equal(u.password_hash, ""); /* never copied: the caller hashes */

    /* Patch: only what is given changes; null clears; null locale goes back to en. */
    struct user_fields p = {0};
    p.present = USER_F_FULL_NAME | USER_F_LOCALE | USER_F_EMAIL;
    p.null = USER_F_FULL_NAME | USER_F_LOCALE;
    p.email = "new@example.com";
    user_fields_apply(&p, USER_WRITE_PATCH, &u);
    assert_string_equal(u.full_name, "");
    assert_string_equal(u.locale, "en");
    assert_string_equal(u.email, "new@example.com");
    assert_string_equal(u.address, "Rua A, 1\nSao Paulo");
    assert_int_equal(u.status, USER_STATUS_CONFIRMED);

    /* Replace: absent optional fields are cleared or defaulted. */
    struct user_fields r = {0};
    r.present = USER_F_USERNAME | USER_F_EMAIL;
    r.username = "ana2";
    r.email = "ana2@example.com";
    user_fields_apply(&r, USER_WRITE_REPLACE, &u);
    assert_string_equal(u.username, "ana2");
    assert_string_equal(u.address, "");
    assert_string_equal(u.date_of_birth, "");
    assert_string_equal(u.locale, "en");
    assert_int_equal(u.status, USER_STATUS_UNCONFIRMED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(username_rules),
        cmocka_unit_test(email_rules),
        cmocka_unit_test(date_rules),
        cmocka_unit_test(locale_rules),
        cmocka_unit_test(id_rules),
        cmocka_unit_test(utf8_rules),
        cmocka_unit_test(create_needs_username_email_password),
        cmocka_unit_test(every_bad_field_is_reported),
        cmocka_unit_test(full_name_refuses_header_injection),
        cmocka_unit_test(full_name_counts_characters_not_bytes),
        cmocka_unit_test(empty_full_name_and_address_are_refused),
        cmocka_unit_test(patch_null_rules),
        cmocka_unit_test(replace_without_password_is_valid),
        cmocka_unit_test(apply_follows_the_write_mode),
        cmocka_unit_test(a_long_field_name_is_cut_between_characters),
    };
    return cmocka_run_group_tests_name("user entity", tests, NULL, NULL);
}
