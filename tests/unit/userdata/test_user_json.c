/* Unit tests of the request/response JSON mapping and the header parsers, with hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "transport/http_headers.h"
#include "transport/user_json.h"

static enum user_json_result parse(const char *body, size_t len, struct user_fields *f,
                                   struct field_errors *errs)
{
    cJSON *tree = NULL;
    char detail[128];
    enum user_json_result r = user_json_parse(body, len, &tree, f, errs, detail, sizeof detail);
    if (r == USER_JSON_MALFORMED)
        assert_null(tree);
    cJSON_Delete(tree);
    return r;
}

#define PARSE(lit, f, e) parse(lit, sizeof(lit) - 1, f, e)

static void well_formed_body_maps_every_field(void **state)
{
    (void)state;
    const char body[] = "{\"username\":\"ana\",\"email\":\"ana@example.com\",\"password\":\"pw "
                        "12345678\",\"full_name\":\"Ana \\u00e9\",\"address\":null,"
                        "\"date_of_birth\":\"1990-04-01\",\"locale\":\"pt-BR\",\"status\":"
                        "\"CONFIRMED\"}";
    struct field_errors errs = {0};
    struct user_fields f;
    cJSON *tree = NULL;
    char detail[128];

    assert_int_equal(
        user_json_parse(body, sizeof body - 1, &tree, &f, &errs, detail, sizeof detail),
        USER_JSON_OK);
    assert_string_equal(f.username, "ana");
    assert_string_equal(f.full_name, "Ana \xc3\xa9");
    assert_true(f.present & USER_F_ADDRESS);
    assert_true(f.null & USER_F_ADDRESS);
    assert_false(f.null & USER_F_USERNAME);
    assert_int_equal(f.present, 0xFF);
    cJSON_Delete(tree);
}

static void malformed_bodies_are_400(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;

    assert_int_equal(parse("", 0, &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"ana\"", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("[]", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("\"ana\"", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("null", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{} {}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{}x", &f, &errs), USER_JSON_MALFORMED);
    /* A raw NUL, an escaped NUL, invalid UTF-8, an unpaired surrogate escape. */
    assert_int_equal(PARSE("{\"username\":\"a\0b\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"a\\u0000b\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"\xff\xfe\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"\xc0\xaf\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"\\ud800\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(errs.n, 0);
}

static void escaped_backslash_before_u0000_text_is_fine(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;
    cJSON *tree = NULL;
    char detail[128];
    const char body[] = "{\"full_name\":\"a\\\\u0000\"}"; /* the text \u0000, not a NUL */

    assert_int_equal(
        user_json_parse(body, sizeof body - 1, &tree, &f, &errs, detail, sizeof detail),
        USER_JSON_OK);
    assert_string_equal(f.full_name, "a\\u0000");
    cJSON_Delete(tree);
}

/* RFC 8259 section 7: a control character (U+0000..U+001F) inside a string must be escaped;
 * raw, the body is not JSON, whatever cJSON tolerates. Between tokens, whitespace (tab,
 * LF, CR) is fine. */
static void raw_control_characters_in_strings_are_400(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;

    assert_int_equal(PARSE("{\"password\":\"correct\x01horse\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"address\":\"1 Main St\nSpringfield\"}", &f, &errs),
                     USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"address\":\"a\tb\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"address\":\"a\rb\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"full_name\":\"x\x1f\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"user\x02name\":\"ana\"}", &f, &errs), USER_JSON_MALFORMED);
    /* between tokens only tab, LF, CR (and space) are whitespace */
    assert_int_equal(PARSE("{\x01\"username\":\"ana\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(PARSE("{\"username\":\"ana\"}\x0b", &f, &errs), USER_JSON_MALFORMED);
    /* after an escaped quote the string goes on: still inside it */
    assert_int_equal(PARSE("{\"full_name\":\"a\\\"\x01\"}", &f, &errs), USER_JSON_MALFORMED);
    assert_int_equal(errs.n, 0);

    /* escaped, the same characters are text; whitespace between tokens is whitespace */
    assert_int_equal(
        PARSE("{\n\t\"address\" :\r\n \"1 Main St\\nSpringfield\\t\\u0001\"\n}\n", &f, &errs),
        USER_JSON_OK);
    assert_int_equal(PARSE("{\"full_name\":\"a\\\\\",\"address\":\"\\\"\"}", &f, &errs),
                     USER_JSON_OK);
    assert_int_equal(errs.n, 0);
}

/* A body's strings (the plain password among them) are zeroed before the tree is freed. */
static void wipe_zeroes_every_string_of_the_body(void **state)
{
    (void)state;
    const char body[] = "{\"username\":\"ana\",\"password\":\"correct horse\","
                        "\"password\":\"second copy\",\"x\":[\"nested secret\",{\"k\":\"v\"}]}";
    struct field_errors errs = {0};
    struct user_fields f;
    cJSON *tree = NULL;
    char detail[128];

    assert_int_equal(
        user_json_parse(body, sizeof body - 1, &tree, &f, &errs, detail, sizeof detail),
        USER_JSON_INVALID); /* the repeated password and the unknown field */
    assert_non_null(tree);
    const char *pw = f.password;
    size_t pw_len = strlen(pw);
    cJSON *second = tree->child->next->next;
    const char *pw2 = second->valuestring;
    size_t pw2_len = strlen(pw2);
    const char *nested = cJSON_GetArrayItem(cJSON_GetObjectItem(tree, "x"), 0)->valuestring;
    size_t nested_len = strlen(nested);

    user_json_wipe(tree);
    for (size_t i = 0; i < pw_len; i++)
        assert_int_equal(pw[i], 0);
    for (size_t i = 0; i < pw2_len; i++)
        assert_int_equal(pw2[i], 0);
    for (size_t i = 0; i < nested_len; i++)
        assert_int_equal(nested[i], 0);
    cJSON_Delete(tree);
    user_json_wipe(NULL); /* nothing to do */
}

static void wrong_types_unknown_and_repeated_fields_are_422(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;

    assert_int_equal(PARSE("{\"username\":1,\"email\":[\"a\"],\"locale\":{},\"status\":true,"
                           "\"isAdmin\":true,\"email\":\"x@y.zz\"}",
                           &f, &errs),
                     USER_JSON_INVALID);
    assert_int_equal(errs.n, 6); /* the repeated email is reported too */
    assert_string_equal(errs.e[0].field, "username");
    assert_string_equal(errs.e[4].field, "isAdmin");
    assert_string_equal(errs.e[4].message, "is not a known field");
}

static void read_only_fields_are_ignored(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;

    assert_int_equal(PARSE("{\"id\":\"x\",\"version\":9,\"created_at\":\"t\",\"updated_at\":1,"
                           "\"password_changed_at\":null,\"username\":\"ana\"}",
                           &f, &errs),
                     USER_JSON_OK);
    assert_int_equal(f.present, USER_F_USERNAME);
}

static void deep_nesting_does_not_crash(void **state)
{
    (void)state;
    struct field_errors errs = {0};
    struct user_fields f;
    size_t depth = 100000;
    char *body = malloc(depth * 2 + 3);
    assert_non_null(body);
    body[0] = '{';
    memcpy(body + 1, "\"a\":", 4);
    size_t n = 5;
    for (size_t i = 0; i < depth - 3; i++)
        body[n++] = '[';
    for (size_t i = 0; i < depth - 3; i++)
        body[n++] = ']';
    body[n++] = '}';
    /* cJSON refuses nesting past its limit: malformed, or an unknown field. */
    enum user_json_result r = parse(body, n, &f, &errs);
    assert_true(r == USER_JSON_MALFORMED || r == USER_JSON_INVALID);
    free(body);
}

static void response_hides_the_hash_and_shows_nulls(void **state)
{
    (void)state;
    struct user u = {0};
    snprintf(u.id, sizeof u.id, "123e4567-e89b-42d3-a456-426614174000");
    snprintf(u.username, sizeof u.username, "ana");
    snprintf(u.email, sizeof u.email, "ana@example.com");
    snprintf(u.locale, sizeof u.locale, "en");
    snprintf(u.password_hash, sizeof u.password_hash, "$argon2id$secret");
    u.created_at_us = 1795000000123456LL;
    u.updated_at_us = 1795000000123456LL;
    u.version = 3;

    cJSON *o = user_json_from_user(&u);
    assert_non_null(o);
    char *text = cJSON_PrintUnformatted(o);
    assert_non_null(text);
    assert_null(strstr(text, "argon2id"));
    assert_null(strstr(text, "password_hash"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "full_name")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "date_of_birth")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(o, "password_changed_at")));
    assert_string_equal(cJSON_GetObjectItem(o, "created_at")->valuestring,
                        "2026-11-18T11:06:40.123456Z");
    assert_string_equal(cJSON_GetObjectItem(o, "status")->valuestring, "UNCONFIRMED");
    assert_int_equal(cJSON_GetObjectItem(o, "version")->valuedouble, 3);
    free(text);
    cJSON_Delete(o);
}

static void if_match_values(void **state)
{
    (void)state;
    struct users_if_match m;

    assert_true(http_headers_parse_if_match(NULL, &m));
    assert_int_equal(m.kind, USERS_IF_MATCH_NONE);
    assert_true(http_headers_parse_if_match(" * ", &m));
    assert_int_equal(m.kind, USERS_IF_MATCH_ANY);
    assert_true(http_headers_parse_if_match("\"3\"", &m));
    assert_int_equal(m.kind, USERS_IF_MATCH_LIST);
    assert_int_equal(m.n, 1);
    assert_int_equal(m.versions[0], 3);
    assert_true(http_headers_parse_if_match("\"3\", W/\"4\" ,\"x\",\"18446744073709551615\"", &m));
    assert_int_equal(m.n, 2); /* the weak and the non-numeric tag can never match */
    assert_int_equal(m.versions[1], UINT64_MAX);
    assert_true(http_headers_parse_if_match("W/\"4\"", &m));
    assert_int_equal(m.kind, USERS_IF_MATCH_LIST);
    assert_int_equal(m.n, 0);
    assert_false(http_headers_parse_if_match("3", &m));
    assert_false(http_headers_parse_if_match("\"3", &m));
    assert_false(http_headers_parse_if_match("\"3\" \"4\"", &m));
    assert_false(http_headers_parse_if_match("*, \"3\"", &m));
    assert_false(http_headers_parse_if_match("", &m));
    assert_false(
        http_headers_parse_if_match("\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"", &m));
}

/* RFC 9110 8.8.3.2: strong comparison is byte for byte. The server's ETags are decimal
 * versions without leading zeros, so "03" or "+3" names no version the server sent. */
static void if_match_compares_tags_not_numbers(void **state)
{
    (void)state;
    struct users_if_match m;

    assert_true(http_headers_parse_if_match("\"0001\"", &m));
    assert_int_equal(m.kind, USERS_IF_MATCH_LIST);
    assert_int_equal(m.n, 0); /* well formed, matches nothing */
    assert_true(http_headers_parse_if_match("\"01\", \"00\", \"+1\", \"1.0\"", &m));
    assert_int_equal(m.n, 0);
    assert_true(http_headers_parse_if_match("\"01\", \"1\", \"10\"", &m));
    assert_int_equal(m.n, 2);
    assert_int_equal(m.versions[0], 1);
    assert_int_equal(m.versions[1], 10);
    assert_true(
        http_headers_parse_if_match("\"18446744073709551616\", \"000000000000000000001\"", &m));
    assert_int_equal(m.n, 0); /* past UINT64_MAX; 21 characters */
}

static void content_type_values(void **state)
{
    (void)state;
    assert_true(http_headers_content_type_is("application/json", "application/json"));
    assert_true(
        http_headers_content_type_is("Application/JSON; charset=UTF-8", "application/json"));
    assert_true(
        http_headers_content_type_is("application/json;charset=\"utf-8\"", "application/json"));
    assert_false(http_headers_content_type_is(NULL, "application/json"));
    assert_false(http_headers_content_type_is("text/plain", "application/json"));
    assert_false(http_headers_content_type_is("application/jsonx", "application/json"));
    assert_false(
        http_headers_content_type_is("application/json; charset=latin1", "application/json"));
    assert_false(http_headers_content_type_is("application/json; boundary=x", "application/json"));
    assert_true(http_headers_content_type_is("application/merge-patch+json",
                                             "application/merge-patch+json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(well_formed_body_maps_every_field),
        cmocka_unit_test(malformed_bodies_are_400),
        cmocka_unit_test(escaped_backslash_before_u0000_text_is_fine),
        cmocka_unit_test(raw_control_characters_in_strings_are_400),
        cmocka_unit_test(wipe_zeroes_every_string_of_the_body),
        cmocka_unit_test(wrong_types_unknown_and_repeated_fields_are_422),
        cmocka_unit_test(read_only_fields_are_ignored),
        cmocka_unit_test(deep_nesting_does_not_crash),
        cmocka_unit_test(response_hides_the_hash_and_shows_nulls),
        cmocka_unit_test(if_match_values),
        cmocka_unit_test(if_match_compares_tags_not_numbers),
        cmocka_unit_test(content_type_values),
    };
    return cmocka_run_group_tests_name("user json and headers", tests, NULL, NULL);
}
