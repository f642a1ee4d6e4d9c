/* Unit tests of shared/log: exact line format, escaping of hostile text, truncation, threads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shared/log.h"
#include "tests/lib/stdout_capture.h"

#include <cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int setup(void **state)
{
    (void)state;
    log_init("svc", LOG_INFO);
    return 0;
}

/* Checks `{"ts":"YYYY-MM-DDTHH:MM:SS.uuuuuuZ",` near now; returns the text after it. */
static const char *skip_ts(const char *line)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    struct tm tm;
    size_t i;
    time_t when;

    assert_int_equal(strncmp(line, "{\"ts\":\"", 7), 0);
    line += 7;
    for (i = 0; i < sizeof(shape) - 1; i++) {
        if (shape[i] == 'd')
            assert_true(line[i] >= '0' && line[i] <= '9');
        else
            assert_int_equal(line[i], shape[i]);
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = atoi(line) - 1900;
    tm.tm_mon = atoi(line + 5) - 1;
    tm.tm_mday = atoi(line + 8);
    tm.tm_hour = atoi(line + 11);
    tm.tm_min = atoi(line + 14);
    tm.tm_sec = atoi(line + 17);
    when = timegm(&tm);
    assert_true(llabs((long long)(when - time(NULL))) <= 5);
    assert_int_equal(line[sizeof(shape) - 1], '"');
    return line + sizeof(shape);
}

static size_t count_char(const char *s, char c)
{
    size_t n = 0;

    for (; *s != '\0'; s++)
        n += *s == c;
    return n;
}

static void line_has_exact_shape(void **state)
{
    char *out;

    (void)state;
    capture_begin();
    log_write(LOG_INFO, "started", "port", "8080", "mode", "fast", NULL);
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out), ",\"level\":\"info\",\"service\":\"svc\",\"msg\":\"started\","
                                      "\"port\":\"8080\",\"mode\":\"fast\"}\n");
    free(out);
}

static void hostile_value_is_escaped(void **state)
{
    char *out;
    cJSON *obj;

    (void)state;
    capture_begin();
    log_write(LOG_WARN, "m\"\n", "v", "a\"b\\c\nd\r\x01\x1f\x7f/", "forge", "x\",\"level\":\"error",
              "k\"\n\x02", "v2", NULL);
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out),
                        ",\"level\":\"warn\",\"service\":\"svc\",\"msg\":\"m\\\"\\u000a\","
                        "\"v\":\"a\\\"b\\\\c\\u000ad\\u000d\\u0001\\u001f\\u007f/\","
                        "\"forge\":\"x\\\",\\\"level\\\":\\\"error\","
                        "\"k\\\"\\u000a\\u0002\":\"v2\"}\n");
    assert_int_equal(count_char(out, '\n'), 1);
    obj = cJSON_Parse(out);
    assert_non_null(obj);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "v")->valuestring,
                        "a\"b\\c\nd\r\x01\x1f\x7f/");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "forge")->valuestring,
                        "x\",\"level\":\"error");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "level")->valuestring, "warn");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "k\"\n\x02")->valuestring, "v2");
    cJSON_Delete(obj);
    free(out);
}

#define FFFD "\xEF\xBF\xBD"

static void invalid_utf8_replaced(void **state)
{
    char *out;
    cJSON *obj;
    /* lone 0xFF; cut 2-byte; overlong '/'; surrogate U+D800; above U+10FFFF; valid é € 😀;
     * U+2028; a 3-byte sequence cut by the end of the string. */
    const char *in = "\xff|\xc3(|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xc3\xa9\xe2\x82\xac"
                     "\xf0\x9f\x98\x80|\xe2\x80\xa8|\xe2\x82";
    const char *want_json = FFFD "|" FFFD "(|" FFFD FFFD "|" FFFD FFFD FFFD "|" FFFD FFFD FFFD FFFD
                                 "|\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\\u2028|" FFFD FFFD;
    const char *want_value = FFFD "|" FFFD "(|" FFFD FFFD "|" FFFD FFFD FFFD "|" FFFD FFFD FFFD FFFD
                                  "|\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80|\xe2\x80\xa8|" FFFD FFFD;
    char expect[512];

    (void)state;
    capture_begin();
    log_write(LOG_ERROR, "bad", "v", in, NULL);
    out = capture_end(NULL);
    snprintf(expect, sizeof(expect),
             ",\"level\":\"error\",\"service\":\"svc\",\"msg\":\"bad\",\"v\":\"%s\"}\n", want_json);
    assert_string_equal(skip_ts(out), expect);
    obj = cJSON_Parse(out);
    assert_non_null(obj);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "v")->valuestring, want_value);
    cJSON_Delete(obj);
    free(out);
}

static void null_value_written_as_json_null(void **state)
{
    char *out;

    (void)state;
    capture_begin();
    log_write(LOG_INFO, NULL, "user", NULL, "id", "7", NULL);
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out), ",\"level\":\"info\",\"service\":\"svc\",\"msg\":\"\","
                                      "\"user\":null,\"id\":\"7\"}\n");
    free(out);
}

static void levels_below_minimum_are_dropped(void **state)
{
    char *out;

    (void)state;
    log_init("svc", LOG_WARN);
    assert_false(log_enabled(LOG_DEBUG));
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_WARN));
    assert_true(log_enabled(LOG_ERROR));
    capture_begin();
    log_write(LOG_INFO, "dropped", NULL);
    LOG_INFO_F("dropped %d", 1);
    LOG_DEBUG_F("dropped %d", 2);
    LOG_ERROR_F("kept %d", 3);
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out),
                        ",\"level\":\"error\",\"service\":\"svc\",\"msg\":\"kept 3\"}\n");
    free(out);
    log_init("svc", LOG_DEBUG);
    assert_true(log_enabled(LOG_DEBUG));
    capture_begin();
    LOG_DEBUG_F("dbg");
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out),
                        ",\"level\":\"debug\",\"service\":\"svc\",\"msg\":\"dbg\"}\n");
    free(out);
}

static void level_names_parse(void **state)
{
    enum log_level l = LOG_ERROR;

    (void)state;
    assert_true(log_level_parse("debug", &l));
    assert_int_equal(l, LOG_DEBUG);
    assert_true(log_level_parse("INFO", &l));
    assert_int_equal(l, LOG_INFO);
    assert_true(log_level_parse("Warn", &l));
    assert_int_equal(l, LOG_WARN);
    assert_true(log_level_parse("error", &l));
    assert_int_equal(l, LOG_ERROR);
    assert_false(log_level_parse("warning", &l));
    assert_false(log_level_parse("", &l));
    assert_false(log_level_parse(NULL, &l));
    assert_int_equal(l, LOG_ERROR);
}

static void writef_formats_and_escapes(void **state)
{
    char *out;

    (void)state;
    capture_begin();
    log_writef(LOG_INFO, "user %s has %d items", "bo\"b\n", 3);
    out = capture_end(NULL);
    assert_string_equal(skip_ts(out), ",\"level\":\"info\",\"service\":\"svc\",\"msg\":\"user "
                                      "bo\\\"b\\u000a has 3 items\"}\n");
    free(out);
}

/* Every line: at most LOG_LINE_MAX bytes, one newline at the end, valid JSON. */
static cJSON *parse_capped_line(const char *out, size_t len)
{
    cJSON *obj;

    assert_true(len <= LOG_LINE_MAX);
    assert_true(len > 2);
    assert_int_equal(out[len - 1], '\n');
    assert_int_equal(count_char(out, '\n'), 1);
    obj = cJSON_Parse(out);
    assert_non_null(obj);
    return obj;
}

static void long_value_cut_at_utf8_boundary(void **state)
{
    enum { REPS = 20000 };
    char *big = malloc(REPS * 2 + 1);
    char *out;
    size_t len;
    size_t i;
    size_t vlen;
    const char *v;
    cJSON *obj;

    (void)state;
    assert_non_null(big);
    for (i = 0; i < REPS; i++)
        memcpy(big + 2 * i, "\xc3\xa9", 2);
    big[REPS * 2] = '\0';
    capture_begin();
    log_write(LOG_INFO, "big", "a", "1", "v", big, "after", "x", NULL);
    out = capture_end(&len);
    obj = parse_capped_line(out, len);
    assert_true(len > LOG_LINE_MAX - 64);
    assert_non_null(strstr(out, "\",\"truncated\":true}\n"));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(obj, "a")->valuestring, "1");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, "truncated")));
    assert_null(cJSON_GetObjectItemCaseSensitive(obj, "after"));
    v = cJSON_GetObjectItemCaseSensitive(obj, "v")->valuestring;
    vlen = strlen(v);
    assert_true(vlen > 1000);
    assert_int_equal(vlen % 2, 0);
    assert_int_equal(memcmp(v, big, vlen), 0);
    cJSON_Delete(obj);
    free(out);
    free(big);
}

static void long_escapes_never_split(void **state)
{
    enum { REPS = 5000 };
    char *big = malloc(REPS + 1);
    char *out;
    size_t len;
    size_t i;
    const char *msg;
    cJSON *obj;

    (void)state;
    assert_non_null(big);
    memset(big, '\x01', REPS);
    big[REPS] = '\0';
    for (i = 0; i < 7; i++) {
        /* Shift the cut point across every position inside a 6-byte escape. */
        capture_begin();
        log_write(LOG_INFO, big + i, "k", "v", NULL);
        out = capture_end(&len);
        obj = parse_capped_line(out, len);
        msg = cJSON_GetObjectItemCaseSensitive(obj, "msg")->valuestring;
        assert_true(strlen(msg) > 1000);
        assert_true(strspn(msg, "\x01") == strlen(msg));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, "truncated")));
        assert_null(cJSON_GetObjectItemCaseSensitive(obj, "k"));
        cJSON_Delete(obj);
        free(out);
    }
    free(big);
}

static void oversize_key_drops_field(void **state)
{
    enum { REPS = 10000 };
    char *key = malloc(REPS + 1);
    char *out;
    size_t len;
    cJSON *obj;

    (void)state;
    assert_non_null(key);
    memset(key, 'k', REPS);
    key[REPS] = '\0';
    capture_begin();
    log_write(LOG_INFO, "m", "first", "1", key, "v", NULL);
    out = capture_end(&len);
    obj = parse_capped_line(out, len);
    assert_string_equal(skip_ts(out), ",\"level\":\"info\",\"service\":\"svc\",\"msg\":\"m\","
                                      "\"first\":\"1\",\"truncated\":true}\n");
    cJSON_Delete(obj);
    free(out);
    free(key);
}

static void writef_long_message_cut_at_boundary(void **state)
{
    enum { REPS = 3000 };
    char *big = malloc(REPS * 3 + 1);
    char *out;
    size_t len;
    size_t i;
    const char *msg;
    cJSON *obj;

    (void)state;
    assert_non_null(big);
    for (i = 0; i < REPS; i++)
        memcpy(big + 3 * i, "\xe2\x82\xac", 3);
    big[REPS * 3] = '\0';
    for (i = 0; i < 3; i++) {
        capture_begin();
        log_writef(LOG_INFO, "%s", big + i);
        out = capture_end(&len);
        obj = parse_capped_line(out, len);
        msg = cJSON_GetObjectItemCaseSensitive(obj, "msg")->valuestring;
        /* Leading stray continuation bytes become U+FFFD; the tail is whole euro signs. */
        assert_true(strlen(msg) > 1000);
        assert_int_equal(memcmp(msg + strlen(msg) - 3, "\xe2\x82\xac", 3), 0);
        assert_null(strstr(out, FFFD "\""));
        assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, "truncated")));
        cJSON_Delete(obj);
        free(out);
    }
    free(big);
}

#define THREADS          4
#define LINES_PER_THREAD 300

static void *log_from_thread(void *arg)
{
    char value[3000];
    int i;

    memset(value, 'a' + (int)(intptr_t)arg, sizeof(value) - 1);
    value[sizeof(value) - 1] = '\0';
    for (i = 0; i < LINES_PER_THREAD; i++)
        log_write(LOG_INFO, "concurrent", "v", value, NULL);
    return NULL;
}

static void concurrent_lines_do_not_interleave(void **state)
{
    pthread_t t[THREADS];
    char *out;
    char *line;
    char *save = NULL;
    size_t len;
    int lines = 0;
    intptr_t i;

    (void)state;
    capture_begin();
    for (i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_from_thread, (void *)i), 0);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    out = capture_end(&len);
    assert_int_equal(count_char(out, '\n'), THREADS * LINES_PER_THREAD);
    for (line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        cJSON *obj = cJSON_Parse(line);
        const char *v;
        char first[2] = {0, 0};

        assert_non_null(obj);
        v = cJSON_GetObjectItemCaseSensitive(obj, "v")->valuestring;
        first[0] = v[0];
        assert_true(first[0] >= 'a' && first[0] < 'a' + THREADS);
        assert_int_equal(strlen(v), 2999);
        assert_int_equal(strspn(v, first), 2999);
        cJSON_Delete(obj);
        lines++;
    }
    assert_int_equal(lines, THREADS * LINES_PER_THREAD);
    free(out);
}

static void json_escape_cuts_whole_characters(void **state)
{
    char buf[16];

    (void)state;
    assert_true(log_json_escape("a\"\x01", buf, sizeof(buf)));
    assert_string_equal(buf, "a\\\"\\u0001");
    assert_false(log_json_escape("ab\x01", buf, 6));
    assert_string_equal(buf, "ab");
    assert_false(log_json_escape("\xc3\xa9", buf, 2));
    assert_string_equal(buf, "");
    assert_true(log_json_escape("\xc3\xa9", buf, 3));
    assert_string_equal(buf, "\xc3\xa9");
    assert_true(log_json_escape(NULL, buf, sizeof(buf)));
    assert_string_equal(buf, "");
}

static void rate_cap_drops_and_counts(void **state)
{
    struct log_rate r = LOG_RATE_INIT(3, 60);
    unsigned long dropped = 99;

    (void)state;
    for (int i = 0; i < 3; i++) {
        assert_true(log_rate_allow_at(&r, 1000, &dropped));
        assert_int_equal(dropped, 0);
    }
    for (int i = 0; i < 5; i++)
        assert_false(log_rate_allow_at(&r, 1059, &dropped));
    /* A new window: allowed again, and told how many were dropped. */
    assert_true(log_rate_allow_at(&r, 1060, &dropped));
    assert_int_equal(dropped, 5);
    assert_true(log_rate_allow_at(&r, 1061, &dropped));
    assert_int_equal(dropped, 0);
    assert_true(log_rate_allow_at(&r, 1062, NULL));
    assert_false(log_rate_allow_at(&r, 1063, &dropped));
    /* A clock that goes back starts a window too rather than blocking for ever. */
    assert_true(log_rate_allow_at(&r, 5, &dropped));
    assert_int_equal(dropped, 1);
}

static void limited_v(struct log_rate *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void limited_v(struct log_rate *r, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_write_limited(r, "lib said", fmt, ap);
    va_end(ap);
}

/* A library's callback: formatted, line end removed, cut to the cap, dropped ones counted. */
static void limited_lines_are_capped_and_counted(void **state)
{
    struct log_rate r = LOG_RATE_INIT(1, 3600);
    char *out;

    (void)state;
    capture_begin();
    limited_v(&r, "refused %d\r\n", 1);
    limited_v(&r, "refused %d\n", 2);
    limited_v(&r, "refused %d\n", 3);
    out = capture_end(NULL);
    assert_int_equal(count_char(out, '\n'), 1);
    assert_string_equal(skip_ts(out), ",\"level\":\"warn\",\"service\":\"svc\",\"msg\":\"lib "
                                      "said\",\"detail\":\"refused 1\",\"lines_dropped\":\"0\"}\n");
    free(out);
    capture_begin();
    r.window_start -= 3600; /* the next window: the two dropped lines are reported */
    limited_v(&r, "refused %d", 4);
    out = capture_end(NULL);
    assert_non_null(strstr(out, "\"detail\":\"refused 4\",\"lines_dropped\":\"2\""));
    free(out);
}

static void rate_cap_on_the_steady_clock(void **state)
{
    struct log_rate r = LOG_RATE_INIT(1, 3600);
    unsigned long dropped = 99;

    (void)state;
    assert_true(log_rate_allow(&r, &dropped));
    assert_int_equal(dropped, 0);
    assert_false(log_rate_allow(&r, &dropped)); /* the window started a moment ago */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(line_has_exact_shape, setup),
        cmocka_unit_test_setup(hostile_value_is_escaped, setup),
        cmocka_unit_test_setup(invalid_utf8_replaced, setup),
        cmocka_unit_test_setup(null_value_written_as_json_null, setup),
        cmocka_unit_test_setup(levels_below_minimum_are_dropped, setup),
        cmocka_unit_test_setup(level_names_parse, setup),
        cmocka_unit_test_setup(writef_formats_and_escapes, setup),
        cmocka_unit_test_setup(long_value_cut_at_utf8_boundary, setup),
        cmocka_unit_test_setup(long_escapes_never_split, setup),
        cmocka_unit_test_setup(oversize_key_drops_field, setup),
        cmocka_unit_test_setup(writef_long_message_cut_at_boundary, setup),
        cmocka_unit_test_setup(concurrent_lines_do_not_interleave, setup),
        cmocka_unit_test_setup(json_escape_cuts_whole_characters, setup),
        cmocka_unit_test(rate_cap_drops_and_counts),
        cmocka_unit_test(rate_cap_on_the_steady_clock),
        cmocka_unit_test_setup(limited_lines_are_capped_and_counted, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
