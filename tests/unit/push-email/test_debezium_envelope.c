/* test_debezium_envelope: the Debezium envelope parser against real captured events
 * (samples/) and hostile input; position key and date formatting of user_change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "entities/user_change.h"
#include "transport/debezium_envelope.h"

#ifndef SAMPLES_DIR
#error "SAMPLES_DIR must be defined by the build"
#endif

#define JOAO_ID "82bb0044-8978-42af-bae6-944243e48e21"

/* Reads samples/<name> whole; *len gets its size. Returns malloc'd text (NUL-terminated),
 * the caller frees it. */
static char *load_sample(const char *name, size_t *len)
{
    char path[512];
    FILE *f;
    char *buf;
    long n;

    (void)snprintf(path, sizeof path, "%s/%s", SAMPLES_DIR, name);
    f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static enum envelope_result parse_text(const char *s, struct user_change *c, char *reason,
                                       size_t reason_len)
{
    return debezium_envelope_parse(s, strlen(s), c, reason, reason_len);
}

/* Parses s and checks it is MALFORMED with a reason containing want. */
static void expect_malformed_len(const char *s, size_t len, const char *want)
{
    struct user_change c;
    char reason[256] = "";
    enum envelope_result r = debezium_envelope_parse(s, len, &c, reason, sizeof reason);

    if (r != ENVELOPE_MALFORMED || strstr(reason, want) == NULL) {
        print_error("want MALFORMED with '%s', got %d '%s'\n", want, (int)r, reason);
        fail();
    }
}

static void expect_malformed(const char *s, const char *want)
{
    expect_malformed_len(s, strlen(s), want);
}

/* The sample with obj.field replaced by the JSON text value, spliced in verbatim (cJSON
 * would cut \u0000 and round big numbers; NULL deletes the member; obj "" is the envelope
 * itself). Returns malloc'd JSON, the caller frees it. */
static char *mutate(const char *sample, const char *obj, const char *field, const char *value)
{
    static const char mark[] = "\"@@VALUE@@\"";
    size_t len;
    char *text = load_sample(sample, &len);
    cJSON *root = cJSON_Parse(text);
    cJSON *target;
    char *printed, *at, *out;

    assert_non_null(root);
    target = obj[0] == '\0' ? root : cJSON_GetObjectItemCaseSensitive(root, obj);
    assert_non_null(target);
    cJSON_DeleteItemFromObjectCaseSensitive(target, field);
    if (value != NULL) {
        assert_non_null(cJSON_AddStringToObject(target, field, "@@VALUE@@"));
    }
    printed = cJSON_PrintUnformatted(root);
    assert_non_null(printed);
    cJSON_Delete(root);
    free(text);
    if (value == NULL) {
        return printed;
    }
    at = strstr(printed, mark);
    assert_non_null(at);
    out = malloc(strlen(printed) + strlen(value) + 1);
    assert_non_null(out);
    memcpy(out, printed, (size_t)(at - printed));
    memcpy(out + (at - printed), value, strlen(value));
    memcpy(out + (at - printed) + strlen(value), at + strlen(mark), strlen(at + strlen(mark)) + 1);
    cJSON_free(printed);
    return out;
}

static void expect_mutation_malformed(const char *sample, const char *obj, const char *field,
                                      const char *value, const char *want)
{
    char *s = mutate(sample, obj, field, value);
    expect_malformed(s, want);
    free(s);
}

static void expect_mutation_ok(const char *sample, const char *obj, const char *field,
                               const char *value, struct user_change *c)
{
    char reason[256] = "";
    char *s = mutate(sample, obj, field, value);
    enum envelope_result r = parse_text(s, c, reason, sizeof reason);

    if (r != ENVELOPE_OK) {
        print_error("want OK for %s.%s=%s, got %d '%s'\n", obj, field, value ? value : "(none)",
                    (int)r, reason);
        fail();
    }
    free(s);
}

static enum envelope_result parse_sample(const char *name, struct user_change *c)
{
    size_t len;
    char reason[256] = "";
    char *s = load_sample(name, &len);
    enum envelope_result r = debezium_envelope_parse(s, len, c, reason, sizeof reason);

    if (r == ENVELOPE_MALFORMED) {
        print_error("%s: %s\n", name, reason);
    }
    free(s);
    return r;
}

/* Whether the n bytes at hay hold needle anywhere (memmem without _GNU_SOURCE). */
static bool contains_bytes(const void *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    const unsigned char *h = hay;

    for (size_t i = 0; k <= n && i <= n - k; i++) {
        if (memcmp(h + i, needle, k) == 0) {
            return true;
        }
    }
    return false;
}

/* A JSON string value of n copies of unit (a UTF-8 sequence), quoted. Caller frees. */
static char *json_repeat(const char *unit, size_t n)
{
    size_t u = strlen(unit);
    char *s = malloc(n * u + 3);

    assert_non_null(s);
    s[0] = '"';
    for (size_t i = 0; i < n; i++) {
        memcpy(s + 1 + i * u, unit, u);
    }
    s[1 + n * u] = '"';
    s[2 + n * u] = '\0';
    return s;
}

/* ---- real samples ---- */

static void test_create_sample_bare_parses_every_field(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("create.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_CREATE);
    assert_false(c.has_before);
    assert_true(c.has_after);
    assert_string_equal(c.after.id, JOAO_ID);
    assert_string_equal(c.after.username, "joao_env");
    assert_string_equal(c.after.email, "joao.env@example.com");
    assert_string_equal(c.after.full_name, "Jo\xC3\xA3o \xC3\x91\xC3\xBA\xC3\xB1"
                                           "ez \xE6\x9D\x8E");
    assert_string_equal(c.after.address, "Rua das Flores, 12 \xE2\x80\x94 Lisboa");
    assert_true(c.after.has_date_of_birth);
    assert_int_equal(c.after.date_of_birth_days, 7395);
    assert_string_equal(c.after.locale, "pt-BR");
    assert_string_equal(c.after.status, "UNCONFIRMED");
    assert_true(c.after.has_password_changed_at);
    assert_true(c.after.password_changed_at_us == INT64_C(1795270581768604));
    assert_true(c.after.updated_at_us == INT64_C(1795270581768604));
    assert_int_equal(c.after.version, 1);
    assert_int_equal(c.source.server_id, 1);
    assert_string_equal(c.source.file, "mariadb-bin.000001");
    assert_int_equal(c.source.pos, 6505);
    assert_int_equal(c.source.row, 0);
    assert_string_equal(c.source.gtid, "0-1-18");
    assert_true(c.source.ts_ms == INT64_C(1795270581000));
}

static void test_create_minimal_sample_gives_nulls_as_empty(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("create_minimal.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_CREATE);
    assert_string_equal(c.after.full_name, "");
    assert_string_equal(c.after.address, "");
    assert_false(c.after.has_date_of_birth);
    assert_string_equal(c.after.locale, "en");
}

static void test_update_samples_have_both_images(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("update.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_UPDATE);
    assert_true(c.has_before && c.has_after);
    assert_string_equal(c.before.status, "UNCONFIRMED");
    assert_string_equal(c.after.status, "CONFIRMED");
    assert_int_equal(c.before.version, 1);
    assert_int_equal(c.after.version, 2);

    assert_int_equal(parse_sample("update_password.json", &c), ENVELOPE_OK);
    assert_true(c.before.password_changed_at_us < c.after.password_changed_at_us);

    assert_int_equal(parse_sample("update_email.json", &c), ENVELOPE_OK);
    assert_string_not_equal(c.before.email, c.after.email);

    assert_int_equal(parse_sample("update_email_wrapped.json", &c), ENVELOPE_OK);
    assert_string_equal(c.before.email, "wrap.env@example.com");
    assert_string_equal(c.after.email, "wrap.env2@example.com");
}

static void test_delete_samples_have_before_only(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("delete.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_DELETE);
    assert_true(c.has_before);
    assert_false(c.has_after);
    assert_string_equal(c.before.email, "min.env@example.com");

    assert_int_equal(parse_sample("delete_wrapped.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_DELETE);
    assert_true(c.has_before);
    assert_false(c.has_after);
}

static void test_snapshot_samples_are_reads(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("snapshot.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_READ);
    assert_true(c.has_after);
    assert_int_equal(c.source.server_id, 0);
    assert_string_equal(c.source.gtid, "");
    assert_int_equal(parse_sample("snapshot_wrapped.json", &c), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_READ);
}

static void test_wrapped_and_bare_give_the_same_change(void **state)
{
    static const char *const wrapped[] = {"create_wrapped.json", "update_email_wrapped.json",
                                          "delete_wrapped.json", "snapshot_wrapped.json"};
    (void)state;

    for (size_t i = 0; i < sizeof wrapped / sizeof wrapped[0]; i++) {
        struct user_change a, b;
        size_t len;
        char *text = load_sample(wrapped[i], &len);
        cJSON *root = cJSON_Parse(text);
        char *bare;

        assert_non_null(root);
        bare = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "payload"));
        assert_non_null(bare);
        assert_int_equal(debezium_envelope_parse(text, len, &a, NULL, 0), ENVELOPE_OK);
        assert_int_equal(parse_text(bare, &b, NULL, 0), ENVELOPE_OK);
        assert_memory_equal(&a, &b, sizeof a);
        free(bare);
        cJSON_Delete(root);
        free(text);
    }
}

/* ---- tombstones, op, truncate ---- */

static void test_tombstones(void **state)
{
    struct user_change c;
    (void)state;

    assert_int_equal(parse_sample("tombstone.json", &c), ENVELOPE_TOMBSTONE);
    assert_int_equal(debezium_envelope_parse(NULL, 0, &c, NULL, 0), ENVELOPE_TOMBSTONE);
    assert_int_equal(debezium_envelope_parse("", 0, &c, NULL, 0), ENVELOPE_TOMBSTONE);
    assert_int_equal(parse_text("null", &c, NULL, 0), ENVELOPE_TOMBSTONE);
    assert_int_equal(parse_text(" \r\n null \n", &c, NULL, 0), ENVELOPE_TOMBSTONE);
    assert_int_equal(parse_text("{\"schema\":{\"type\":\"struct\"},\"payload\":null}", &c, NULL, 0),
                     ENVELOPE_TOMBSTONE);
    expect_malformed("nul", "not valid JSON");
    expect_malformed("   ", "not valid JSON");
}

static void test_every_op_is_accepted(void **state)
{
    struct user_change c;
    (void)state;

    expect_mutation_ok("update.json", "", "op", "\"c\"", &c);
    assert_int_equal(c.op, CHANGE_CREATE);
    expect_mutation_ok("update.json", "", "op", "\"u\"", &c);
    assert_int_equal(c.op, CHANGE_UPDATE);
    expect_mutation_ok("update.json", "", "op", "\"d\"", &c);
    assert_int_equal(c.op, CHANGE_DELETE);
    expect_mutation_ok("update.json", "", "op", "\"r\"", &c);
    assert_int_equal(c.op, CHANGE_READ);
    expect_mutation_ok("update.json", "", "op", "\"t\"", &c);
    assert_int_equal(c.op, CHANGE_TRUNCATE);
}

static void test_truncate_without_images(void **state)
{
    struct user_change c;
    char reason[128];
    const char *t = "{\"source\":{\"version\":\"3.0.8.Final\",\"connector\":\"mariadb\",\"name\":"
                    "\"cdc\",\"ts_ms\":1700000000000,\"db\":\"userdata\",\"table\":\"users\","
                    "\"server_id\":1,\"gtid\":null,\"file\":\"mariadb-bin.000002\",\"pos\":4,"
                    "\"row\":0},\"op\":\"t\",\"ts_ms\":1700000000001}";
    (void)state;

    assert_int_equal(parse_text(t, &c, reason, sizeof reason), ENVELOPE_OK);
    assert_int_equal(c.op, CHANGE_TRUNCATE);
    assert_false(c.has_before);
    assert_false(c.has_after);
    assert_string_equal(c.source.file, "mariadb-bin.000002");
}

static void test_bad_op(void **state)
{
    (void)state;
    expect_mutation_malformed("create.json", "", "op", "\"x\"", "op: expected one of");
    expect_mutation_malformed("create.json", "", "op", "\"cu\"", "op: expected one of");
    expect_mutation_malformed("create.json", "", "op", "\"\"", "op: expected one of");
    expect_mutation_malformed("create.json", "", "op", "99", "op: expected a string");
    expect_mutation_malformed("create.json", "", "op", NULL, "op: missing");
    expect_mutation_malformed("create.json", "", "op", "null", "op: missing");
}

/* ---- required images and fields ---- */

static void test_required_images(void **state)
{
    char *s;
    (void)state;

    expect_mutation_malformed("create.json", "", "after", "null", "after: missing");
    expect_mutation_malformed("snapshot.json", "", "after", NULL, "after: missing");
    expect_mutation_malformed("update.json", "", "before", "null", "before: missing");
    expect_mutation_malformed("update.json", "", "after", NULL, "after: missing");
    expect_mutation_malformed("delete.json", "", "before", "null", "before: missing");
    /* A delete turned into a create: no after. */
    s = mutate("delete.json", "", "op", "\"c\"");
    expect_malformed(s, "after: missing");
    free(s);
}

static void test_required_fields(void **state)
{
    (void)state;
    expect_mutation_malformed("create.json", "after", "id", NULL, "after.id: missing");
    expect_mutation_malformed("create.json", "after", "id", "null", "after.id: missing");
    expect_mutation_malformed("create.json", "after", "email", NULL, "after.email: missing");
    expect_mutation_malformed("create.json", "after", "email", "\"\"", "after.email: empty");
    expect_mutation_malformed("delete.json", "before", "email", NULL, "before.email: missing");
    expect_mutation_malformed("update.json", "before", "id", NULL, "before.id: missing");
    expect_mutation_malformed("create.json", "", "source", NULL, "source: missing");
    expect_mutation_malformed("create.json", "source", "server_id", NULL,
                              "source.server_id: missing");
    expect_mutation_malformed("create.json", "source", "file", NULL, "source.file: missing");
    expect_mutation_malformed("create.json", "source", "file", "\"\"", "source.file: empty");
    expect_mutation_malformed("create.json", "source", "pos", NULL, "source.pos: missing");
}

static void test_optional_fields_may_be_null_or_absent(void **state)
{
    static const char *const fields[] = {
        "username",   "full_name",           "address", "date_of_birth", "locale", "status",
        "updated_at", "password_changed_at", "version"};
    struct user_change c;
    (void)state;

    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        expect_mutation_ok("create.json", "after", fields[i], "null", &c);
        expect_mutation_ok("create.json", "after", fields[i], NULL, &c);
    }
    expect_mutation_ok("create.json", "after", "password_changed_at", "null", &c);
    assert_false(c.after.has_password_changed_at);
    expect_mutation_ok("create.json", "after", "date_of_birth", NULL, &c);
    assert_false(c.after.has_date_of_birth);
    expect_mutation_ok("create.json", "source", "row", NULL, &c);
    assert_int_equal(c.source.row, 0);
    expect_mutation_ok("create.json", "source", "gtid", "null", &c);
    assert_string_equal(c.source.gtid, "");
    expect_mutation_ok("create.json", "source", "table", NULL, &c);
    expect_mutation_ok("create.json", "source", "db", NULL, &c);
}

/* ---- wrong types ---- */

static void test_wrong_types(void **state)
{
    (void)state;
    expect_mutation_malformed("create.json", "after", "email", "5",
                              "after.email: expected a string");
    expect_mutation_malformed("create.json", "after", "id", "12345", "after.id: expected a string");
    expect_mutation_malformed("create.json", "after", "username", "[]",
                              "after.username: expected a string");
    expect_mutation_malformed("create.json", "after", "full_name", "true",
                              "after.full_name: expected a string");
    expect_mutation_malformed("create.json", "after", "address", "{}",
                              "after.address: expected a string");
    expect_mutation_malformed("create.json", "after", "locale", "1",
                              "after.locale: expected a string");
    expect_mutation_malformed("create.json", "after", "status", "false",
                              "after.status: expected a string");
    expect_mutation_malformed("create.json", "after", "date_of_birth", "\"1990-04-01\"",
                              "after.date_of_birth: expected an integer");
    expect_mutation_malformed("create.json", "after", "date_of_birth", "7395.5",
                              "after.date_of_birth: expected an integer");
    expect_mutation_malformed("create.json", "after", "password_changed_at",
                              "\"2026-11-21T14:16:21.768604Z\"",
                              "after.password_changed_at: expected an integer");
    expect_mutation_malformed("create.json", "after", "updated_at", "1795270581768604.5",
                              "after.updated_at: expected an integer");
    expect_mutation_malformed("create.json", "after", "version", "\"1\"",
                              "after.version: expected an integer");
    expect_mutation_malformed("create.json", "source", "server_id", "\"1\"",
                              "source.server_id: expected an integer");
    expect_mutation_malformed("create.json", "source", "file", "7",
                              "source.file: expected a string");
    expect_mutation_malformed("create.json", "source", "pos", "6505.25",
                              "source.pos: expected an integer");
    expect_mutation_malformed("create.json", "source", "row", "\"0\"",
                              "source.row: expected an integer");
    expect_mutation_malformed("create.json", "source", "gtid", "{}",
                              "source.gtid: expected a string");
    expect_mutation_malformed("create.json", "source", "ts_ms", "\"x\"",
                              "source.ts_ms: expected an integer");
    expect_mutation_malformed("create.json", "source", "table", "1",
                              "source.table: expected a string");
    expect_mutation_malformed("create.json", "", "after", "[1]",
                              "after: expected an object or null");
    expect_mutation_malformed("update.json", "", "before", "\"x\"",
                              "before: expected an object or null");
    expect_mutation_malformed("create.json", "", "source", "\"x\"", "source: expected an object");
    expect_malformed("{\"schema\":{},\"payload\":[1]}", "payload: expected an object");
}

static void test_integer_ranges(void **state)
{
    struct user_change c;
    (void)state;

    expect_mutation_malformed("create.json", "after", "version", "-1",
                              "after.version: integer out of range");
    expect_mutation_malformed("create.json", "after", "date_of_birth", "2932897",
                              "after.date_of_birth: integer out of range");
    expect_mutation_malformed("create.json", "after", "date_of_birth", "-719163",
                              "after.date_of_birth: integer out of range");
    /* 2^53 and above cannot be told apart from their neighbours as doubles. */
    expect_mutation_malformed("create.json", "after", "password_changed_at", "9007199254740992",
                              "after.password_changed_at: integer out of range");
    expect_mutation_malformed("create.json", "after", "updated_at", "1e300",
                              "after.updated_at: integer out of range");
    expect_mutation_malformed("create.json", "source", "server_id", "4294967296",
                              "source.server_id: integer out of range");
    expect_mutation_malformed("create.json", "source", "pos", "-1",
                              "source.pos: integer out of range");
    expect_mutation_malformed("create.json", "source", "row", "2147483648",
                              "source.row: integer out of range");
    expect_malformed("{\"op\":\"c\",\"after\":{\"id\":\"" JOAO_ID "\",\"email\":\"a@b\","
                     "\"updated_at\":1e999},\"source\":{\"server_id\":1,\"file\":\"f\",\"pos\":1}}",
                     "after.updated_at");

    expect_mutation_ok("create.json", "after", "password_changed_at", "9007199254740991", &c);
    assert_true(c.after.password_changed_at_us == INT64_C(9007199254740991));
    /* 1900-01-01T00:00:00Z */
    expect_mutation_ok("create.json", "after", "password_changed_at", "-2208988800000000", &c);
    assert_true(c.after.password_changed_at_us == INT64_C(-2208988800000000));
    /* 0001-01-01 in microseconds is beyond 2^53: not exact in a double, so refused. */
    expect_mutation_malformed("create.json", "after", "password_changed_at", "-62135596800000000",
                              "after.password_changed_at: integer out of range");
    expect_mutation_ok("create.json", "after", "date_of_birth", "-354285", &c);
    assert_int_equal(c.after.date_of_birth_days, -354285);
    expect_mutation_ok("create.json", "source", "server_id", "4294967295", &c);
    assert_true(c.source.server_id == INT64_C(4294967295));
}

/* ---- lengths ---- */

static void test_length_limits(void **state)
{
    struct {
        const char *obj, *field, *unit;
        size_t ok_n, bad_n; /* repetitions of unit at the limit and one over */
        const char *want;
    } cases[] = {
        {"after", "email", "e", UC_EMAIL_MAX, UC_EMAIL_MAX + 1, "after.email: longer than 254"},
        {"after", "username", "u", UC_USERNAME_MAX, UC_USERNAME_MAX + 1,
         "after.username: longer than 64"},
        {"after", "full_name", "\xF0\x9F\x98\x80", UC_FULL_NAME_MAX / 4, UC_FULL_NAME_MAX / 4 + 1,
         "after.full_name: longer than 800"},
        {"after", "address", "\xC3\xA9", UC_ADDRESS_MAX / 2, UC_ADDRESS_MAX / 2 + 1,
         "after.address: longer than 2000"},
        {"after", "locale", "l", UC_LOCALE_MAX, UC_LOCALE_MAX + 1, "after.locale: longer than 35"},
        {"after", "status", "S", UC_STATUS_MAX, UC_STATUS_MAX + 1, "after.status: longer than 16"},
        {"before", "email", "e", UC_EMAIL_MAX, UC_EMAIL_MAX + 1, "before.email: longer than 254"},
        {"source", "file", "f", 127, 128, "source.file: longer than 127"},
        {"source", "gtid", "g", 127, 128, "source.gtid: longer than 127"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct user_change c;
        const char *sample = strcmp(cases[i].obj, "before") == 0 ? "update.json" : "create.json";
        char *ok = json_repeat(cases[i].unit, cases[i].ok_n);
        char *bad = json_repeat(cases[i].unit, cases[i].bad_n);

        expect_mutation_ok(sample, cases[i].obj, cases[i].field, ok, &c);
        expect_mutation_malformed(sample, cases[i].obj, cases[i].field, bad, cases[i].want);
        free(ok);
        free(bad);
    }
    expect_mutation_malformed("create.json", "after", "id",
                              "\"82bb0044-8978-42af-bae6-944243e48e2\"",
                              "after.id: expected 36 characters");
    expect_mutation_malformed("create.json", "after", "id",
                              "\"82bb0044-8978-42af-bae6-944243e48e211\"",
                              "after.id: longer than 36");
}

/* ---- hostile bytes ---- */

static void test_invalid_utf8(void **state)
{
    static const char *const bad[] = {
        "\xC3\x28",         /* bad continuation */
        "\xC0\xAF",         /* overlong '/' */
        "\xE0\x80\xAF",     /* overlong */
        "\xED\xA0\x80",     /* UTF-16 surrogate */
        "\xF4\x90\x80\x80", /* above U+10FFFF */
        "\xF5\x80\x80\x80", /* invalid lead byte */
        "\xFF",             /* never valid */
        "\x80",             /* lone continuation */
        "\xE6\x9D",         /* truncated sequence */
    };
    (void)state;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[256];
        (void)snprintf(buf, sizeof buf,
                       "{\"op\":\"c\",\"after\":{\"id\":\"" JOAO_ID "\",\"email\":\"a@b\","
                       "\"full_name\":\"x%sy\"},\"source\":{\"server_id\":1,\"file\":\"f\","
                       "\"pos\":1}}",
                       bad[i]);
        expect_malformed(buf, "invalid UTF-8");
    }
    /* Invalid UTF-8 at the very end of the value, outside any string. */
    expect_malformed("null\xC3", "invalid UTF-8");
    /* A lone surrogate written as an escape is refused by the JSON parse. */
    expect_malformed("{\"op\":\"c\",\"after\":{\"id\":\"" JOAO_ID "\",\"email\":\"a@b\","
                     "\"full_name\":\"\\ud800\"},\"source\":{\"server_id\":1,\"file\":\"f\","
                     "\"pos\":1}}",
                     "not valid JSON");
}

static void test_nul_bytes(void **state)
{
    struct user_change c;
    char reason[128];
    static const char raw[] = "{\"op\":\"c\",\"after\":{\"id\":\"" JOAO_ID "\",\"email\":\"a@b\x00"
                              "evil\"},\"source\":{\"server_id\":1,\"file\":\"f\",\"pos\":1}}";
    (void)state;

    expect_mutation_malformed("create.json", "after", "full_name", "\"Ann\\u0000\\r\\nBcc: x\"",
                              "\\u0000");
    expect_mutation_malformed("create.json", "after", "email", "\"a@b.c\\u0000.evil\"", "\\u0000");
    expect_mutation_malformed("create.json", "source", "file", "\"f\\u0000\"", "\\u0000");
    /* Anywhere in the value, not only in the fields that are read. */
    expect_malformed("{\"op\":\"c\",\"x\":\"\\u0000\"}", "\\u0000");
    expect_malformed_len(raw, sizeof raw - 1, "NUL byte");
    /* An escaped backslash followed by "u0000" is text, not a NUL. */
    assert_int_equal(parse_text("{\"op\":\"c\",\"after\":{\"id\":\"" JOAO_ID "\",\"email\":\"a@b\","
                                "\"full_name\":\"C:\\\\u0000\"},\"source\":{\"server_id\":1,"
                                "\"file\":\"f\",\"pos\":1}}",
                                &c, reason, sizeof reason),
                     ENVELOPE_OK);
    assert_string_equal(c.after.full_name, "C:\\u0000");
    /* A non-NUL escape decodes. */
    expect_mutation_ok("create.json", "after", "full_name", "\"\\u00e9\\ud83d\\ude00\"", &c);
    assert_string_equal(c.after.full_name, "\xC3\xA9\xF0\x9F\x98\x80");
}

static void test_not_an_object(void **state)
{
    (void)state;
    expect_malformed("[]", "expected a JSON object");
    expect_malformed("[{\"op\":\"c\"}]", "expected a JSON object");
    expect_malformed("\"c\"", "expected a JSON object");
    expect_malformed("42", "expected a JSON object");
    expect_malformed("true", "expected a JSON object");
    expect_malformed("{}", "op: missing");
}

static void test_truncated_and_trailing(void **state)
{
    size_t len;
    char *s = load_sample("create.json", &len);
    (void)state;

    for (size_t cut = 1; cut < len; cut += 37) {
        expect_malformed_len(s, cut, "");
    }
    expect_malformed_len(s, len - 1, "not valid JSON");
    free(s);
    s = load_sample("update.json", &len);
    {
        char *t = malloc(len + 8);
        assert_non_null(t);
        memcpy(t, s, len);
        memcpy(t + len, " {}", 4);
        expect_malformed(t, "trailing characters");
        free(t);
    }
    free(s);
    expect_malformed("{\"op\":", "not valid JSON");
    expect_malformed("{", "not valid JSON");
    expect_malformed("{\"op\":\"c\"", "not valid JSON");
}

static void test_huge_input(void **state)
{
    size_t n = 10u * 1024u * 1024u;
    char *big = malloc(n);
    (void)state;

    assert_non_null(big);
    /* A valid-looking start, then 10 MB of string. */
    memset(big, 'a', n);
    memcpy(big, "{\"op\":\"c\",\"x\":\"", 15);
    big[n - 2] = '"';
    big[n - 1] = '}';
    expect_malformed_len(big, n, "larger than");
    free(big);
}

static void test_deep_nesting(void **state)
{
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 64);
    char *objs;
    size_t k = 0;
    (void)state;

    assert_non_null(deep);
    for (size_t i = 0; i < depth; i++) {
        deep[k++] = '[';
    }
    for (size_t i = 0; i < depth; i++) {
        deep[k++] = ']';
    }
    expect_malformed_len(deep, k, "not valid JSON");

    /* Deep objects inside an otherwise fine envelope. */
    objs = malloc(6 * depth + 256);
    assert_non_null(objs);
    k = 0;
    {
        const char *head = "{\"op\":\"c\",\"x\":";
        memcpy(objs, head, strlen(head));
        k = strlen(head);
    }
    for (size_t i = 0; i < depth; i++) {
        memcpy(objs + k, "{\"a\":", 5);
        k += 5;
    }
    objs[k++] = '1';
    for (size_t i = 0; i < depth + 1; i++) {
        objs[k++] = '}';
    }
    expect_malformed_len(objs, k, "not valid JSON");
    free(objs);
    free(deep);
}

/* ---- secrets and provenance ---- */

static void test_password_hash_is_ignored_and_not_copied(void **state)
{
    static const char hash[] = "$argon2id$v=19$m=65536,t=2,p=1$U0VDUkVUU0FMVA$"
                               "SGFzaE9mVGhlUGFzc3dvcmRXZUhvcGVOb2JvZHlTZWVz";
    static const char salt[] = "U0VDUkVUU0FMVA";
    char value[256];
    struct user_change c;
    (void)state;

    (void)snprintf(value, sizeof value, "\"%s\"", hash);
    expect_mutation_ok("create.json", "after", "password_hash", value, &c);
    assert_string_equal(c.after.email, "joao.env@example.com");
    assert_false(contains_bytes(&c, sizeof c, hash));
    assert_false(contains_bytes(&c, sizeof c, salt));
    /* Also in a before image, and with a wrong type (it is not read at all). */
    expect_mutation_ok("update.json", "before", "password_hash", value, &c);
    assert_false(contains_bytes(&c, sizeof c, salt));
    expect_mutation_ok("update.json", "after", "password_hash", "12", &c);
}

static void test_unexpected_table_or_database(void **state)
{
    (void)state;
    expect_mutation_malformed("create.json", "source", "table", "\"accounts\"", "unexpected table");
    expect_mutation_malformed("create.json", "source", "table", "\"Users\"", "unexpected table");
    expect_mutation_malformed("create.json", "source", "db", "\"billing\"", "unexpected database");
}

static void test_out_is_zeroed_when_not_ok(void **state)
{
    struct user_change c, zero;
    char reason[8];
    (void)state;

    memset(&zero, 0, sizeof zero);
    memset(&c, 0xAB, sizeof c);
    assert_int_equal(parse_text("{\"op\":\"c\"}", &c, reason, sizeof reason), ENVELOPE_MALFORMED);
    assert_memory_equal(&c, &zero, sizeof c);
    /* The reason is cut to its buffer, terminated. */
    assert_int_equal(strlen(reason), sizeof reason - 1);
    memset(&c, 0xAB, sizeof c);
    assert_int_equal(parse_text("null", &c, NULL, 0), ENVELOPE_TOMBSTONE);
    assert_memory_equal(&c, &zero, sizeof c);
}

/* ---- position key and dates ---- */

static void test_position_key(void **state)
{
    struct user_change c;
    char key[UC_POSITION_KEY_MAX];
    char small[16];
    (void)state;

    assert_int_equal(parse_sample("create.json", &c), ENVELOPE_OK);
    user_change_position_key(&c, key, sizeof key);
    assert_string_equal(key, "1:mariadb-bin.000001:6505:0:0-1-18");

    assert_int_equal(parse_sample("snapshot.json", &c), ENVELOPE_OK);
    user_change_position_key(&c, key, sizeof key);
    assert_string_equal(key, "0:mariadb-bin.000001:10924:0");

    expect_mutation_ok("create.json", "source", "row", "3", &c);
    user_change_position_key(&c, key, sizeof key);
    assert_string_equal(key, "1:mariadb-bin.000001:6505:3:0-1-18");

    expect_mutation_ok("create.json", "source", "gtid", "\"\"", &c);
    user_change_position_key(&c, key, sizeof key);
    assert_string_equal(key, "1:mariadb-bin.000001:6505:0");

    /* The same change re-emitted later (other ts_ms) has the same key. */
    expect_mutation_ok("create.json", "source", "ts_ms", "1895270581000", &c);
    user_change_position_key(&c, key, sizeof key);
    assert_string_equal(key, "1:mariadb-bin.000001:6505:0:0-1-18");

    /* Too small a buffer gives an empty key, never a truncated one. */
    memset(small, 'x', sizeof small);
    user_change_position_key(&c, small, sizeof small);
    assert_string_equal(small, "");
}

static void test_format_date(void **state)
{
    static const struct {
        int32_t days;
        const char *want;
    } cases[] = {
        {0, "1970-01-01"},
        {7395, "1990-04-01"},
        {-1, "1969-12-31"},
        {59, "1970-03-01"},
        {11016, "2000-02-29"},
        {11017, "2000-03-01"},
        {-25508, "1900-03-01"},
        {-354285, "1000-01-01"},
        {-719162, "0001-01-01"},
        {-719163, "0000-12-31"},
        {2932896, "9999-12-31"},
        {19782, "2024-02-29"},
        {INT32_MIN, "-5877641-06-23"},
        {INT32_MAX, "5881580-07-11"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[16];
        memset(out, 'x', sizeof out);
        user_change_format_date(cases[i].days, out);
        assert_string_equal(out, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_sample_bare_parses_every_field),
        cmocka_unit_test(test_create_minimal_sample_gives_nulls_as_empty),
        cmocka_unit_test(test_update_samples_have_both_images),
        cmocka_unit_test(test_delete_samples_have_before_only),
        cmocka_unit_test(test_snapshot_samples_are_reads),
        cmocka_unit_test(test_wrapped_and_bare_give_the_same_change),
        cmocka_unit_test(test_tombstones),
        cmocka_unit_test(test_every_op_is_accepted),
        cmocka_unit_test(test_truncate_without_images),
        cmocka_unit_test(test_bad_op),
        cmocka_unit_test(test_required_images),
        cmocka_unit_test(test_required_fields),
        cmocka_unit_test(test_optional_fields_may_be_null_or_absent),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_integer_ranges),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_nul_bytes),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_truncated_and_trailing),
        cmocka_unit_test(test_huge_input),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_password_hash_is_ignored_and_not_copied),
        cmocka_unit_test(test_unexpected_table_or_database),
        cmocka_unit_test(test_out_is_zeroed_when_not_ok),
        cmocka_unit_test(test_position_key),
        cmocka_unit_test(test_format_date),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
