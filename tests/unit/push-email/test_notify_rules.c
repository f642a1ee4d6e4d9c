/* Unit tests of notify_rules: which emails each kind of user change deserves
 * (DESIGN.md section 6), what they list, and their dedupe keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "entities/notification.h"
#include "entities/user_change.h"
#include "interactors/notify_rules.h"

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

static void ana(struct user_image *u)
{
    memset(u, 0, sizeof *u);
    copy(u->id, sizeof u->id, "6f1c2a9e-8a4b-4c7e-9a55-0d6f0b1e2c3d");
    copy(u->username, sizeof u->username, "ana");
    copy(u->email, sizeof u->email, "ana@example.com");
    copy(u->full_name, sizeof u->full_name, "Ana Lima");
    copy(u->address, sizeof u->address, "Rua A, 1");
    u->has_date_of_birth = true;
    u->date_of_birth_days = 11323; /* 2001-01-01 */
    copy(u->locale, sizeof u->locale, "pt-BR");
    copy(u->status, sizeof u->status, "CONFIRMED");
    u->has_password_changed_at = true;
    u->password_changed_at_us = 1700000000000000;
    u->updated_at_us = 1700000000000000;
    u->version = 3;
}

static void change(struct user_change *c, enum change_op op)
{
    memset(c, 0, sizeof *c);
    c->op = op;
    c->source.server_id = 1;
    copy(c->source.file, sizeof c->source.file, "mysql-bin.000003");
    c->source.pos = 4711;
    c->source.row = 0;
    c->source.ts_ms = 1700000000000;
    if (op != CHANGE_CREATE) {
        c->has_before = true;
        ana(&c->before);
    }
    if (op != CHANGE_DELETE) {
        c->has_after = true;
        ana(&c->after);
    }
}

/* An update whose after image differs from before only in the housekeeping fields. */
static void update(struct user_change *c)
{
    change(c, CHANGE_UPDATE);
    c->after.updated_at_us += 1000;
    c->after.version++;
}

static const struct field_change *find_change(const struct notification *n, enum user_field_id f)
{
    for (size_t i = 0; i < n->n_changes; i++) {
        if (n->changes[i].field == f)
            return &n->changes[i];
    }
    return NULL;
}

static void kind_and_field_names(void **state)
{
    (void)state;
    assert_string_equal(notification_kind_name(NOTIFY_WELCOME), "welcome");
    assert_string_equal(notification_kind_name(NOTIFY_PROFILE_CHANGED), "profile_changed");
    assert_string_equal(notification_kind_name(NOTIFY_EMAIL_CHANGED_OLD), "email_changed_old");
    assert_string_equal(notification_kind_name(NOTIFY_EMAIL_CHANGED_NEW), "email_changed_new");
    assert_string_equal(notification_kind_name(NOTIFY_PASSWORD_CHANGED), "password_changed");
    assert_string_equal(notification_kind_name(NOTIFY_ACCOUNT_DELETED), "account_deleted");
    assert_string_equal(user_field_name(UF_USERNAME), "username");
    assert_string_equal(user_field_name(UF_EMAIL), "email");
    assert_string_equal(user_field_name(UF_FULL_NAME), "full_name");
    assert_string_equal(user_field_name(UF_ADDRESS), "address");
    assert_string_equal(user_field_name(UF_DATE_OF_BIRTH), "date_of_birth");
    assert_string_equal(user_field_name(UF_STATUS), "status");
    assert_string_equal(user_field_name(UF_LOCALE), "locale");
    assert_string_equal(user_field_name(UF_PASSWORD_CHANGED_AT), "password_changed_at");
}

static void create_sends_welcome_to_after_email(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_CREATE);
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_WELCOME);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_string_equal(out[0].locale, "pt-BR");
    assert_string_equal(out[0].user.username, "ana");
    assert_int_equal(out[0].n_changes, 0);
}

static void delete_sends_account_deleted_to_before_email(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_DELETE);
    copy(c.before.locale, sizeof c.before.locale, "es");
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_ACCOUNT_DELETED);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_string_equal(out[0].locale, "es"); /* before.locale on delete */
    assert_string_equal(out[0].user.full_name, "Ana Lima");
}

static void snapshot_and_truncate_send_nothing(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_READ);
    assert_int_equal(notify_rules(&c, out), 0);
    change(&c, CHANGE_TRUNCATE);
    c.has_after = false;
    c.has_before = false;
    assert_int_equal(notify_rules(&c, out), 0);
}

/* Without an address there is nobody to write to: a create with an empty after.email and a
 * delete with an empty before.email send nothing. */
static void create_or_delete_without_email_sends_nothing(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_CREATE);
    c.after.email[0] = '\0';
    assert_int_equal(notify_rules(&c, out), 0);

    change(&c, CHANGE_DELETE);
    c.before.email[0] = '\0';
    assert_int_equal(notify_rules(&c, out), 0);

    /* A create without after image, a delete without before image: nothing either. */
    change(&c, CHANGE_CREATE);
    c.has_after = false;
    assert_int_equal(notify_rules(&c, out), 0);
    change(&c, CHANGE_DELETE);
    c.has_before = false;
    assert_int_equal(notify_rules(&c, out), 0);
}

/* An update needs both images to compare: without either image, nothing, whatever the
 * images hold (with both, this change sends four emails). */
static void update_without_both_images_sends_nothing(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    copy(c.after.email, sizeof c.after.email, "ana.new@example.org");
    copy(c.after.full_name, sizeof c.after.full_name, "Ana Souza");
    c.after.password_changed_at_us += 5000000;
    assert_int_equal(notify_rules(&c, out), 4); /* the premise: with both, four emails */

    c.has_before = false;
    assert_int_equal(notify_rules(&c, out), 0);
    c.has_before = true;
    c.has_after = false;
    assert_int_equal(notify_rules(&c, out), 0);
    c.has_before = false;
    assert_int_equal(notify_rules(&c, out), 0);
}

/* An email change to an empty address (the column cleared): only the notice to the old
 * address, for the owner as they were, naming the changed field without its values. No
 * profile email and nothing to the empty new address. */
static void email_cleared_notifies_only_the_old_address(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    c.after.email[0] = '\0';
    copy(c.after.locale, sizeof c.after.locale, "es");
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_EMAIL_CHANGED_OLD);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_string_equal(out[0].locale, "pt-BR"); /* before.locale */
    assert_string_equal(out[0].user.email, "ana@example.com");
    assert_int_equal(out[0].n_changes, 2); /* the email and the locale */
    assert_int_equal(out[0].changes[0].field, UF_EMAIL);
    assert_int_equal(out[0].changes[1].field, UF_LOCALE);
    for (size_t k = 0; k < out[0].n_changes; k++) {
        assert_string_equal(out[0].changes[k].old_value, "");
        assert_string_equal(out[0].changes[k].new_value, "");
    }

    /* With the password changed too: the old address also hears of the password; the
     * empty new one still gets nothing. */
    c.after.password_changed_at_us += 5000000;
    assert_int_equal(notify_rules(&c, out), 2);
    assert_int_equal(out[0].kind, NOTIFY_EMAIL_CHANGED_OLD);
    assert_int_equal(out[1].kind, NOTIFY_PASSWORD_CHANGED);
    assert_string_equal(out[1].recipient, "ana@example.com");
    assert_string_equal(out[1].locale, "pt-BR");
}

static void update_without_visible_change_sends_nothing(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c); /* only updated_at and version moved */
    assert_int_equal(notify_rules(&c, out), 0);
}

/* An address whose lines only went from CRLF to LF ends reads the same: no email. A real
 * change of a multi-line address is listed with LF line ends. */
static void address_line_ends_alone_are_no_change(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    copy(c.before.address, sizeof c.before.address, "1 Main St\r\nFlat 2");
    copy(c.after.address, sizeof c.after.address, "1 Main St\nFlat 2");
    assert_int_equal(notify_rules(&c, out), 0);

    copy(c.after.address, sizeof c.after.address, "1 Main St\nFlat 3");
    assert_int_equal(notify_rules(&c, out), 1);
    const struct field_change *fc = find_change(&out[0], UF_ADDRESS);
    assert_non_null(fc);
    assert_string_equal(fc->old_value, "1 Main St\nFlat 2");
    assert_string_equal(fc->new_value, "1 Main St\nFlat 3");
}

/* Each visible field other than email and password, changed alone: one profile email to
 * after.email listing exactly that field with its old and new display values. */
static void each_single_field_change_lists_it(void **state)
{
    struct {
        enum user_field_id field;
        const char *old_value, *new_value;
    } cases[] = {
        {UF_USERNAME, "ana", "ana.lima"},        {UF_FULL_NAME, "Ana Lima", "Ana Souza"},
        {UF_ADDRESS, "Rua A, 1", "Rua B, 2"},    {UF_DATE_OF_BIRTH, "2001-01-01", "2000-02-29"},
        {UF_STATUS, "CONFIRMED", "UNCONFIRMED"}, {UF_LOCALE, "pt-BR", "es"},
    };
    (void)state;

    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        struct user_change c;
        struct notification out[NOTIFY_MAX_PER_CHANGE];
        update(&c);
        switch (cases[k].field) {
        case UF_USERNAME:
            copy(c.after.username, sizeof c.after.username, cases[k].new_value);
            break;
        case UF_FULL_NAME:
            copy(c.after.full_name, sizeof c.after.full_name, cases[k].new_value);
            break;
        case UF_ADDRESS:
            copy(c.after.address, sizeof c.after.address, cases[k].new_value);
            break;
        case UF_DATE_OF_BIRTH:
            c.after.date_of_birth_days = 11016; /* 2000-02-29 */
            break;
        case UF_STATUS:
            copy(c.after.status, sizeof c.after.status, cases[k].new_value);
            break;
        case UF_LOCALE:
            copy(c.after.locale, sizeof c.after.locale, cases[k].new_value);
            break;
        default:
            fail();
        }
        assert_int_equal(notify_rules(&c, out), 1);
        assert_int_equal(out[0].kind, NOTIFY_PROFILE_CHANGED);
        assert_string_equal(out[0].recipient, "ana@example.com");
        assert_int_equal(out[0].n_changes, 1);
        assert_int_equal(out[0].changes[0].field, cases[k].field);
        assert_string_equal(out[0].changes[0].old_value, cases[k].old_value);
        assert_string_equal(out[0].changes[0].new_value, cases[k].new_value);
    }
}

static void set_and_cleared_values_display_empty(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    c.before.address[0] = '\0';        /* was not set */
    c.after.has_date_of_birth = false; /* now cleared */
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].n_changes, 2);
    assert_int_equal(out[0].changes[0].field, UF_ADDRESS); /* listed in field order */
    assert_string_equal(out[0].changes[0].old_value, "");
    assert_string_equal(out[0].changes[0].new_value, "Rua A, 1");
    assert_int_equal(out[0].changes[1].field, UF_DATE_OF_BIRTH);
    assert_string_equal(out[0].changes[1].old_value, "2001-01-01");
    assert_string_equal(out[0].changes[1].new_value, "");
}

static void email_change_notifies_old_and_new_address(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    copy(c.after.email, sizeof c.after.email, "ana.new@example.org");
    copy(c.after.full_name, sizeof c.after.full_name, "Ana Souza");
    assert_int_equal(notify_rules(&c, out), 2);
    assert_int_equal(out[0].kind, NOTIFY_EMAIL_CHANGED_OLD);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_int_equal(out[1].kind, NOTIFY_EMAIL_CHANGED_NEW);
    assert_string_equal(out[1].recipient, "ana.new@example.org");
    for (int i = 0; i < 2; i++) {
        const struct field_change *e = find_change(&out[i], UF_EMAIL);
        const struct field_change *f = find_change(&out[i], UF_FULL_NAME);
        assert_int_equal(out[i].n_changes, 2);
        assert_non_null(e);
        assert_non_null(f);
    }
    /* The new address hears the values; the old one, which may not be the owner's any
     * more, only which fields changed. */
    assert_string_equal(find_change(&out[1], UF_EMAIL)->old_value, "ana@example.com");
    assert_string_equal(find_change(&out[1], UF_EMAIL)->new_value, "ana.new@example.org");
    assert_string_equal(find_change(&out[1], UF_FULL_NAME)->new_value, "Ana Souza");
    for (size_t k = 0; k < out[0].n_changes; k++) {
        assert_string_equal(out[0].changes[k].old_value, "");
        assert_string_equal(out[0].changes[k].new_value, "");
    }
    /* The old address's notice addresses the owner as they were; the new one as they are. */
    assert_string_equal(out[0].user.email, "ana@example.com");
    assert_string_equal(out[0].user.full_name, "Ana Lima");
    assert_string_equal(out[1].user.email, "ana.new@example.org");
    assert_string_equal(out[1].user.full_name, "Ana Souza");
}

static void password_change_alone_sends_one(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    c.after.password_changed_at_us += 5000000;
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_PASSWORD_CHANGED);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_int_equal(out[0].n_changes, 0);

    update(&c); /* the first password ever set counts as a change too */
    c.before.has_password_changed_at = false;
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_PASSWORD_CHANGED);
}

static void password_and_full_name_send_two(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    c.after.password_changed_at_us += 5000000;
    copy(c.after.full_name, sizeof c.after.full_name, "Ana Souza");
    assert_int_equal(notify_rules(&c, out), 2);
    assert_int_equal(out[0].kind, NOTIFY_PROFILE_CHANGED);
    assert_int_equal(out[0].n_changes, 1); /* password_changed_at is not listed */
    assert_int_equal(out[0].changes[0].field, UF_FULL_NAME);
    assert_null(find_change(&out[0], UF_PASSWORD_CHANGED_AT));
    assert_int_equal(out[1].kind, NOTIFY_PASSWORD_CHANGED);
}

/* Email and password at once (an account takeover looks like this): the old address gets
 * the email notice AND the password notice, in the owner's language as it was. */
static void email_and_password_send_four(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    copy(c.before.locale, sizeof c.before.locale, "pt-BR");
    c.after.password_changed_at_us += 5000000;
    copy(c.after.email, sizeof c.after.email, "ana.new@example.org");
    copy(c.after.locale, sizeof c.after.locale, "en");
    assert_int_equal(notify_rules(&c, out), 4);
    assert_int_equal(out[0].kind, NOTIFY_EMAIL_CHANGED_OLD);
    assert_string_equal(out[0].recipient, "ana@example.com");
    assert_string_equal(out[0].locale, "pt-BR");
    assert_int_equal(out[1].kind, NOTIFY_EMAIL_CHANGED_NEW);
    assert_string_equal(out[1].recipient, "ana.new@example.org");
    assert_string_equal(out[1].locale, "en");
    assert_int_equal(out[2].kind, NOTIFY_PASSWORD_CHANGED);
    assert_string_equal(out[2].recipient, "ana.new@example.org");
    assert_int_equal(out[3].kind, NOTIFY_PASSWORD_CHANGED);
    assert_string_equal(out[3].recipient, "ana@example.com");
    assert_string_equal(out[3].locale, "pt-BR");
    assert_string_not_equal(out[2].dedupe_key, out[3].dedupe_key);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(out[i].n_changes, 2); /* the email and the locale */
        assert_non_null(find_change(&out[i], UF_EMAIL));
        assert_non_null(find_change(&out[i], UF_LOCALE));
    }
}

static void email_case_only_change_is_a_profile_change(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    copy(c.after.email, sizeof c.after.email, "Ana@Example.com");
    assert_int_equal(notify_rules(&c, out), 1);
    assert_int_equal(out[0].kind, NOTIFY_PROFILE_CHANGED);
    assert_string_equal(out[0].recipient, "Ana@Example.com");
    assert_int_equal(out[0].changes[0].field, UF_EMAIL);
}

static void locale_defaults_to_en(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_CREATE);
    c.after.locale[0] = '\0';
    assert_int_equal(notify_rules(&c, out), 1);
    assert_string_equal(out[0].locale, "en");

    update(&c); /* an update uses the after locale */
    copy(c.after.locale, sizeof c.after.locale, "es");
    assert_int_equal(notify_rules(&c, out), 1);
    assert_string_equal(out[0].locale, "es");
}

/* The address is used as stored (a local part may be case-sensitive); the dedupe key has
 * it lower-cased, so a re-emission in another case is still the same email. */
static void uppercase_recipient_is_kept_and_its_key_normalised(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE], again[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    change(&c, CHANGE_CREATE);
    copy(c.after.email, sizeof c.after.email, "Ana.LIMA@Example.COM");
    assert_int_equal(notify_rules(&c, out), 1);
    assert_string_equal(out[0].recipient, "Ana.LIMA@Example.COM");
    assert_non_null(strstr(out[0].dedupe_key, ":welcome:ana.lima@example.com"));
    copy(c.after.email, sizeof c.after.email, "ana.lima@example.com");
    assert_int_equal(notify_rules(&c, again), 1);
    assert_string_equal(out[0].dedupe_key, again[0].dedupe_key);
}

static void dedupe_keys_distinct_and_stable(void **state)
{
    struct user_change c;
    struct notification a[NOTIFY_MAX_PER_CHANGE], b[NOTIFY_MAX_PER_CHANGE];
    char pos[400], want[600];
    (void)state;

    update(&c);
    c.after.password_changed_at_us += 5000000;
    copy(c.after.email, sizeof c.after.email, "ana.new@example.org");
    assert_int_equal(notify_rules(&c, a), 4);
    assert_int_equal(notify_rules(&c, b), 4);

    user_change_position_key(&c, pos, sizeof pos);
    snprintf(want, sizeof want, "%s:email_changed_old:ana@example.com", pos);
    assert_string_equal(a[0].dedupe_key, want);
    snprintf(want, sizeof want, "%s:email_changed_new:ana.new@example.org", pos);
    assert_string_equal(a[1].dedupe_key, want);
    snprintf(want, sizeof want, "%s:password_changed:ana.new@example.org", pos);
    assert_string_equal(a[2].dedupe_key, want);
    snprintf(want, sizeof want, "%s:password_changed:ana@example.com", pos);
    assert_string_equal(a[3].dedupe_key, want);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(a[i].dedupe_key, b[i].dedupe_key); /* re-emission: same keys */
        for (int j = i + 1; j < 4; j++)
            assert_string_not_equal(a[i].dedupe_key, a[j].dedupe_key);
    }

    /* Another binlog position: other keys. */
    c.source.pos++;
    assert_int_equal(notify_rules(&c, b), 4);
    assert_string_not_equal(a[0].dedupe_key, b[0].dedupe_key);
}

static void absurd_position_still_gives_distinct_keys(void **state)
{
    struct user_change c;
    struct notification out[NOTIFY_MAX_PER_CHANGE];
    (void)state;

    update(&c);
    memset(c.source.file, 'f', sizeof c.source.file - 1);
    c.source.file[sizeof c.source.file - 1] = '\0';
    memset(c.source.gtid, 'g', sizeof c.source.gtid - 1);
    c.source.gtid[sizeof c.source.gtid - 1] = '\0';
    memset(c.after.email, 'a', 236);
    memcpy(c.after.email + 236, "@example.com", 13);
    memcpy(c.before.email, c.after.email, sizeof c.before.email);
    c.after.password_changed_at_us += 1;
    copy(c.after.full_name, sizeof c.after.full_name, "Ana Souza");
    assert_int_equal(notify_rules(&c, out), 2);
    assert_string_not_equal(out[0].dedupe_key, out[1].dedupe_key);
    assert_true(strlen(out[0].dedupe_key) < sizeof out[0].dedupe_key);
    assert_int_equal(out[0].dedupe_key[0], 'h'); /* the hashed position */
    assert_non_null(strstr(out[0].dedupe_key, ":profile_changed:aaaa"));
    assert_non_null(strstr(out[1].dedupe_key, ":password_changed:aaaa"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kind_and_field_names),
        cmocka_unit_test(create_sends_welcome_to_after_email),
        cmocka_unit_test(delete_sends_account_deleted_to_before_email),
        cmocka_unit_test(snapshot_and_truncate_send_nothing),
        cmocka_unit_test(create_or_delete_without_email_sends_nothing),
        cmocka_unit_test(update_without_both_images_sends_nothing),
        cmocka_unit_test(email_cleared_notifies_only_the_old_address),
        cmocka_unit_test(update_without_visible_change_sends_nothing),
        cmocka_unit_test(address_line_ends_alone_are_no_change),
        cmocka_unit_test(each_single_field_change_lists_it),
        cmocka_unit_test(set_and_cleared_values_display_empty),
        cmocka_unit_test(email_change_notifies_old_and_new_address),
        cmocka_unit_test(password_change_alone_sends_one),
        cmocka_unit_test(password_and_full_name_send_two),
        cmocka_unit_test(email_and_password_send_four),
        cmocka_unit_test(email_case_only_change_is_a_profile_change),
        cmocka_unit_test(locale_defaults_to_en),
        cmocka_unit_test(uppercase_recipient_is_kept_and_its_key_normalised),
        cmocka_unit_test(dedupe_keys_distinct_and_stable),
        cmocka_unit_test(absurd_position_still_gives_distinct_keys),
    };
    return cmocka_run_group_tests_name("notify_rules", tests, NULL, NULL);
}
