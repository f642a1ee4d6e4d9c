/* Unit tests of the users interactor with fake ports: the rules of every use case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fake_ports.h"
#include "interactors/users.h"

#define T0 1795000000000000LL /* 2026-11-18T...Z in microseconds */

struct fixture {
    struct fake_repo repo;
    struct fake_env env;
    struct fake_hasher hasher;
    struct users *uc;
};

static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof *fx);
    if (fx == NULL)
        return -1;
    fake_repo_init(&fx->repo);
    fx->env.now_us = T0;
    fx->uc = users_new(fake_repo_port(&fx->repo), fake_hasher_port_of(&fx->hasher),
                       fake_env_port(&fx->env));
    *state = fx;
    return fx->uc == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;
    users_free(fx->uc);
    pthread_mutex_destroy(&fx->repo.lock);
    free(fx);
    return 0;
}

static struct user_fields fields(const char *username, const char *email)
{
    struct user_fields f = {0};
    f.present = USER_F_USERNAME | USER_F_EMAIL | USER_F_PASSWORD;
    f.username = username;
    f.email = email;
    f.password = "correct horse battery";
    return f;
}

static struct user create_ok(struct fixture *fx, const char *username, const char *email)
{
    struct user_fields f = fields(username, email);
    struct field_errors errs = {0};
    struct user u;
    assert_int_equal(users_create(fx->uc, &f, &u, &errs), USERS_OK);
    return u;
}

static void create_sets_server_fields_and_hashes_the_password(void **state)
{
    struct fixture *fx = *state;
    struct user u = create_ok(fx, "ana", "ana@example.com");

    assert_string_equal(u.id, "00000000-0000-4000-8000-000000000001");
    assert_int_equal(u.version, 1);
    assert_int_equal(u.created_at_us, T0);
    assert_int_equal(u.updated_at_us, T0);
    assert_int_equal(u.password_changed_at_us, T0);
    assert_string_equal(u.password_hash, "fake$correct horse battery");
    assert_string_equal(u.locale, "en");
    assert_int_equal(u.status, USER_STATUS_UNCONFIRMED);
    assert_int_equal(fx->repo.n, 1);
}

static void create_invalid_touches_nothing(void **state)
{
    struct fixture *fx = *state;
    struct user_fields f = fields("a", "not-an-email");
    struct field_errors errs = {0};
    struct user u;

    assert_int_equal(users_create(fx->uc, &f, &u, &errs), USERS_INVALID);
    assert_int_equal(errs.n, 2);
    assert_int_equal(fx->repo.inserts, 0);
}

static void create_duplicate_names_the_field(void **state)
{
    struct fixture *fx = *state;
    struct field_errors errs = {0};
    struct user u;

    create_ok(fx, "ana", "ana@example.com");
    struct user_fields f = fields("ANA", "other@example.com");
    assert_int_equal(users_create(fx->uc, &f, &u, &errs), USERS_DUPLICATE);
    assert_int_equal(errs.n, 1);
    assert_string_equal(errs.e[0].field, "username");

    memset(&errs, 0, sizeof errs);
    f = fields("bob", "ana@example.com");
    assert_int_equal(users_create(fx->uc, &f, &u, &errs), USERS_DUPLICATE);
    assert_string_equal(errs.e[0].field, "email");
}

static void get_unknown_and_malformed_ids_are_not_found(void **state)
{
    struct fixture *fx = *state;
    struct user u;

    assert_int_equal(users_get(fx->uc, "00000000-0000-4000-8000-000000000009", &u),
                     USERS_NOT_FOUND);
    unsigned finds = fx->repo.finds;
    assert_int_equal(users_get(fx->uc, "' OR '1'='1", &u), USERS_NOT_FOUND);
    assert_int_equal(fx->repo.finds, finds); /* a malformed id never reaches the store */
}

static void store_down_is_unavailable(void **state)
{
    struct fixture *fx = *state;
    struct user u;
    struct user_fields f = fields("ana", "ana@example.com");
    struct field_errors errs = {0};

    fx->repo.fail_all = USER_REPO_UNAVAILABLE;
    assert_int_equal(users_create(fx->uc, &f, &u, &errs), USERS_UNAVAILABLE);
    assert_int_equal(users_get(fx->uc, "00000000-0000-4000-8000-000000000001", &u),
                     USERS_UNAVAILABLE);
    assert_int_equal(users_ready(fx->uc), USERS_UNAVAILABLE);
    fx->repo.fail_all = USER_REPO_OK;
    assert_int_equal(users_ready(fx->uc), USERS_OK);
}

static void patch_changes_only_given_fields_and_bumps_version(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct user out;

    fx->env.now_us = T0 + 5;
    p.present = USER_F_FULL_NAME;
    p.full_name = "Ana Lima";
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
    assert_string_equal(out.full_name, "Ana Lima");
    assert_string_equal(out.email, "ana@example.com");
    assert_int_equal(out.version, 2);
    assert_int_equal(out.updated_at_us, T0 + 5);
    assert_int_equal(out.password_changed_at_us, T0); /* password untouched */
    assert_string_equal(out.password_hash, a.password_hash);
}

static void patch_password_sets_password_changed_at(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct user out;

    fx->env.now_us = T0 + 1000;
    p.present = USER_F_PASSWORD;
    p.password = "a new long password";
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
    assert_string_equal(out.password_hash, "fake$a new long password");
    assert_int_equal(out.password_changed_at_us, T0 + 1000);
    assert_int_equal(out.version, 2);
}

static void unchanged_write_does_not_touch_the_store(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct user out;

    p.present = USER_F_EMAIL;
    p.email = "ana@example.com";
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
    assert_int_equal(fx->repo.updates, 0);
    assert_int_equal(out.version, 1);
}

static void if_match_mismatch_is_precondition_failed(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct users_if_match pre = {.kind = USERS_IF_MATCH_LIST, .n = 1, .versions = {7}};
    struct user out;

    p.present = USER_F_FULL_NAME;
    p.full_name = "X";
    assert_int_equal(users_patch(fx->uc, a.id, &p, &pre, &out, &errs), USERS_PRECONDITION_FAILED);
    assert_int_equal(fx->repo.updates, 0);
    pre.versions[0] = 1;
    assert_int_equal(users_patch(fx->uc, a.id, &p, &pre, &out, &errs), USERS_OK);
    /* The same stale tag again now fails: version 2 is current. */
    assert_int_equal(users_patch(fx->uc, a.id, &p, &pre, &out, &errs), USERS_PRECONDITION_FAILED);
}

static void lost_race_retries_when_unpinned_and_fails_when_pinned(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct users_if_match pre = {.kind = USERS_IF_MATCH_LIST, .n = 1, .versions = {1}};
    struct user out;

    p.present = USER_F_FULL_NAME;
    p.full_name = "Ana";
    fx->repo.conflicts_to_inject = 2;
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
    assert_int_equal(fx->repo.updates, 3);

    p.full_name = "Ana B";
    pre.versions[0] = 2;
    fx->repo.conflicts_to_inject = 1;
    assert_int_equal(users_patch(fx->uc, a.id, &p, &pre, &out, &errs), USERS_PRECONDITION_FAILED);
}

/* argon2id costs tens of milliseconds and memory: a write bound to fail does not pay it. */
static void a_new_password_is_hashed_only_for_a_write_that_can_happen(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct users_if_match pre = {.kind = USERS_IF_MATCH_LIST, .n = 1, .versions = {7}};
    struct user out;

    assert_int_equal(fx->hasher.hashes, 1); /* the create's */
    p.present = USER_F_PASSWORD;
    p.password = "a new password";
    assert_int_equal(
        users_patch(fx->uc, "00000000-0000-4000-8000-00000000dead", &p, NULL, &out, &errs),
        USERS_NOT_FOUND);
    assert_int_equal(users_replace(fx->uc, "00000000-0000-4000-8000-00000000dead",
                                   &(struct user_fields){.present = USER_F_USERNAME | USER_F_EMAIL |
                                                                    USER_F_PASSWORD,
                                                         .username = "ana",
                                                         .email = "ana@example.com",
                                                         .password = "x y z w v"},
                                   NULL, &out, &errs),
                     USERS_NOT_FOUND);
    assert_int_equal(users_patch(fx->uc, a.id, &p, &pre, &out, &errs), USERS_PRECONDITION_FAILED);
    assert_int_equal(fx->hasher.hashes, 1);

    /* lost races re-read and retry, but hash once */
    fx->repo.conflicts_to_inject = 2;
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
    assert_int_equal(fx->hasher.hashes, 2);
    assert_string_equal(out.password_hash, "fake$a new password");
}

/* Every hashing slot stayed taken: USERS_BUSY (503, retry), and nothing is written. */
static void a_busy_hasher_is_busy_and_writes_nothing(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct user_fields f = fields("bob", "bob@example.com");
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct user out;

    fx->hasher.busy = true;
    assert_int_equal(users_create(fx->uc, &f, &out, &errs), USERS_BUSY);
    p.present = USER_F_PASSWORD;
    p.password = "a new password";
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_BUSY);
    assert_int_equal(fx->repo.inserts, 1);
    assert_int_equal(fx->repo.updates, 0);
    /* a write without a password needs no slot */
    p.present = USER_F_FULL_NAME;
    p.full_name = "Ana";
    assert_int_equal(users_patch(fx->uc, a.id, &p, NULL, &out, &errs), USERS_OK);
}

static void replace_clears_what_is_absent_and_keeps_the_password(void **state)
{
    struct fixture *fx = *state;
    struct user_fields f = fields("ana", "ana@example.com");
    struct field_errors errs = {0};
    struct user a, out;

    f.present |= USER_F_FULL_NAME | USER_F_STATUS;
    f.full_name = "Ana Lima";
    f.status = "CONFIRMED";
    assert_int_equal(users_create(fx->uc, &f, &a, &errs), USERS_OK);

    struct user_fields r = {0};
    r.present = USER_F_USERNAME | USER_F_EMAIL;
    r.username = "ana";
    r.email = "ana@example.org";
    assert_int_equal(users_replace(fx->uc, a.id, &r, NULL, &out, &errs), USERS_OK);
    assert_string_equal(out.full_name, "");
    assert_int_equal(out.status, USER_STATUS_UNCONFIRMED);
    assert_string_equal(out.password_hash, a.password_hash);
    assert_int_equal(out.password_changed_at_us, a.password_changed_at_us);
}

static void replace_into_a_taken_email_is_duplicate(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    create_ok(fx, "bob", "bob@example.com");
    struct user_fields r = fields("ana", "bob@example.com");
    struct field_errors errs = {0};
    struct user out;

    r.present &= ~(unsigned)USER_F_PASSWORD;
    assert_int_equal(users_replace(fx->uc, a.id, &r, NULL, &out, &errs), USERS_DUPLICATE);
    assert_string_equal(errs.e[0].field, "email");
}

static void write_to_missing_user_is_not_found(void **state)
{
    struct fixture *fx = *state;
    struct user_fields p = {0};
    struct field_errors errs = {0};
    struct user out;

    p.present = USER_F_FULL_NAME;
    p.full_name = "X";
    assert_int_equal(
        users_patch(fx->uc, "00000000-0000-4000-8000-000000000042", &p, NULL, &out, &errs),
        USERS_NOT_FOUND);
    assert_int_equal(users_delete(fx->uc, "00000000-0000-4000-8000-000000000042", NULL),
                     USERS_NOT_FOUND);
}

static void delete_honours_if_match(void **state)
{
    struct fixture *fx = *state;
    struct user a = create_ok(fx, "ana", "ana@example.com");
    struct users_if_match stale = {.kind = USERS_IF_MATCH_LIST, .n = 1, .versions = {9}};
    struct users_if_match any = {.kind = USERS_IF_MATCH_ANY};
    struct user out;

    assert_int_equal(users_delete(fx->uc, a.id, &stale), USERS_PRECONDITION_FAILED);
    assert_int_equal(fx->repo.n, 1);
    assert_int_equal(users_delete(fx->uc, a.id, &any), USERS_OK);
    assert_int_equal(users_get(fx->uc, a.id, &out), USERS_NOT_FOUND);
}

static void list_pages_and_tells_whether_more_exist(void **state)
{
    struct fixture *fx = *state;
    char name[16], mail[32];
    struct user page[3];
    size_t n = 0;
    bool more = false;

    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "user%d", i);
        snprintf(mail, sizeof mail, "user%d@example.com", i);
        create_ok(fx, name, mail);
    }
    assert_int_equal(users_list(fx->uc, NULL, 3, page, &n, &more), USERS_OK);
    assert_int_equal(n, 3);
    assert_true(more);
    assert_int_equal(users_list(fx->uc, page[2].id, 3, page, &n, &more), USERS_OK);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_int_equal(users_list(fx->uc, NULL, 0, page, &n, &more), USERS_INVALID);
    assert_int_equal(users_list(fx->uc, NULL, USERS_LIST_MAX + 1, page, &n, &more), USERS_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(create_sets_server_fields_and_hashes_the_password, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(create_invalid_touches_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(create_duplicate_names_the_field, setup, teardown),
        cmocka_unit_test_setup_teardown(get_unknown_and_malformed_ids_are_not_found, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(store_down_is_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(patch_changes_only_given_fields_and_bumps_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(patch_password_sets_password_changed_at, setup, teardown),
        cmocka_unit_test_setup_teardown(unchanged_write_does_not_touch_the_store, setup, teardown),
        cmocka_unit_test_setup_teardown(if_match_mismatch_is_precondition_failed, setup, teardown),
        cmocka_unit_test_setup_teardown(lost_race_retries_when_unpinned_and_fails_when_pinned,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(replace_clears_what_is_absent_and_keeps_the_password, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(replace_into_a_taken_email_is_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(write_to_missing_user_is_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_honours_if_match, setup, teardown),
        cmocka_unit_test_setup_teardown(a_new_password_is_hashed_only_for_a_write_that_can_happen,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_busy_hasher_is_busy_and_writes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(list_pages_and_tells_whether_more_exist, setup, teardown),
    };
    return cmocka_run_group_tests_name("users interactor", tests, NULL, NULL);
}
