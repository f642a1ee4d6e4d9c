/* Unit tests of shared/config: environment, *_FILE secrets, validation messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shared/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#define VAR      "TCFG_VALUE"
#define VAR_FILE "TCFG_VALUE_FILE"

static char tmp_path[64];

static void clear_env(void)
{
    unsetenv(VAR);
    unsetenv(VAR_FILE);
}

static int setup(void **state)
{
    (void)state;
    clear_env();
    tmp_path[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_env();
    if (tmp_path[0] != '\0')
        unlink(tmp_path);
    return 0;
}

/* Writes len bytes into a fresh temp file whose path is left in tmp_path. */
static void write_tmp(const char *data, size_t len)
{
    int fd;

    snprintf(tmp_path, sizeof(tmp_path), "/tmp/test_config_XXXXXX");
    fd = mkstemp(tmp_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void string_unset_gives_default(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    assert_int_equal(config_string(VAR, "dflt", &out, err, sizeof(err)), 0);
    assert_string_equal(out, "dflt");
    free(out);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), 0);
    assert_null(out);
}

static void string_reads_environment_verbatim(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    setenv(VAR, " spaced value\n", 1);
    assert_int_equal(config_string(VAR, "dflt", &out, err, sizeof(err)), 0);
    assert_string_equal(out, " spaced value\n");
    free(out);
}

static void file_variant_strips_one_lf(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    write_tmp("s3cret\n\n", 8);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "s3cret\n");
    free(out);
}

static void file_variant_strips_one_crlf(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    write_tmp("pa ss\r\n", 7);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string_required(VAR, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "pa ss");
    free(out);
}

static void file_variant_without_newline_kept_whole(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    write_tmp("abc\r", 4);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), 0);
    assert_string_equal(out, "abc\r");
    free(out);
}

static void both_set_is_error_naming_both(void **state)
{
    char err[128] = "";
    char *out = (char *)"untouched";

    (void)state;
    write_tmp("x", 1);
    setenv(VAR, "y", 1);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string(VAR, "d", &out, err, sizeof(err)), -1);
    assert_null(out);
    assert_string_equal(err, "TCFG_VALUE and TCFG_VALUE_FILE are both set; set only one");
}

static void missing_file_error_names_file_variable(void **state)
{
    char err[256] = "";
    char *out = NULL;

    (void)state;
    setenv(VAR_FILE, "/nonexistent/dir/secret", 1);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE_FILE: /nonexistent/dir/secret: cannot open: No such "
                             "file or directory");
}

static void file_with_nul_byte_rejected(void **state)
{
    char err[256] = "";
    char *out = NULL;

    (void)state;
    write_tmp("ab\0cd", 5);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "TCFG_VALUE_FILE: "));
    assert_non_null(strstr(err, ": contains a NUL byte"));
}

static void empty_file_path_rejected(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    setenv(VAR_FILE, "", 1);
    assert_int_equal(config_string(VAR, NULL, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE_FILE: empty path");
}

static void required_unset_and_empty(void **state)
{
    char err[128] = "";
    char *out = NULL;

    (void)state;
    assert_int_equal(config_string_required(VAR, &out, err, sizeof(err)), -1);
    assert_null(out);
    assert_string_equal(err, "TCFG_VALUE: required (set TCFG_VALUE or TCFG_VALUE_FILE)");
    setenv(VAR, "", 1);
    assert_int_equal(config_string_required(VAR, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE: must not be empty");
    /* An empty file is an empty value too. */
    unsetenv(VAR);
    write_tmp("\n", 1);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_string_required(VAR, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE: must not be empty");
}

static void int_parses_and_bounds(void **state)
{
    char err[128] = "";
    long long v = 0;

    (void)state;
    assert_int_equal(config_int(VAR, 42, 0, 100, &v, err, sizeof(err)), 0);
    assert_int_equal(v, 42);
    setenv(VAR, "-7", 1);
    assert_int_equal(config_int(VAR, 0, -10, 10, &v, err, sizeof(err)), 0);
    assert_int_equal(v, -7);
    setenv(VAR, "+10", 1);
    assert_int_equal(config_int(VAR, 0, -10, 10, &v, err, sizeof(err)), 0);
    assert_int_equal(v, 10);
    setenv(VAR, "9223372036854775807", 1);
    assert_int_equal(config_int(VAR, 0, 0, INT64_MAX, &v, err, sizeof(err)), 0);
    assert_true(v == INT64_MAX);
}

static void int_rejects_garbage_with_message(void **state)
{
    static const char *const bad[] = {"",
                                      "abc",
                                      "12abc",
                                      " 12",
                                      "12 ",
                                      "0x10",
                                      "1e3",
                                      "11",
                                      "-11",
                                      "+",
                                      "--1",
                                      "1.5",
                                      "99999999999999999999999"};
    char err[128];
    long long v = 5;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        setenv(VAR, bad[i], 1);
        err[0] = '\0';
        assert_int_equal(config_int(VAR, 0, -10, 10, &v, err, sizeof(err)), -1);
        assert_string_equal(err, "TCFG_VALUE: must be an integer from -10 to 10");
        assert_int_equal(v, 5);
    }
}

static void port_range_and_zero(void **state)
{
    char err[128] = "";
    uint16_t port = 0;

    (void)state;
    assert_int_equal(config_port(VAR, 8080, false, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8080);
    setenv(VAR, "65535", 1);
    assert_int_equal(config_port(VAR, 8080, false, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 65535);
    setenv(VAR, "65536", 1);
    assert_int_equal(config_port(VAR, 8080, false, &port, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE: must be an integer from 1 to 65535");
    setenv(VAR, "0", 1);
    assert_int_equal(config_port(VAR, 8080, false, &port, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE: must be an integer from 1 to 65535");
    port = 9;
    assert_int_equal(config_port(VAR, 8080, true, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 0);
}

static void bool_accepts_words_case_insensitive(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "1", "yes", "Yes", "on", "ON"};
    static const char *const no[] = {"false", "False", "0", "no", "NO", "off", "Off"};
    char err[128] = "";
    bool b;
    size_t i;

    (void)state;
    b = false;
    assert_int_equal(config_bool(VAR, true, &b, err, sizeof(err)), 0);
    assert_true(b);
    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        setenv(VAR, yes[i], 1);
        b = false;
        assert_int_equal(config_bool(VAR, false, &b, err, sizeof(err)), 0);
        assert_true(b);
        setenv(VAR, no[i], 1);
        b = true;
        assert_int_equal(config_bool(VAR, true, &b, err, sizeof(err)), 0);
        assert_false(b);
    }
    setenv(VAR, "maybe", 1);
    assert_int_equal(config_bool(VAR, true, &b, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VALUE: must be one of true/false/1/0/yes/no/on/off");
    setenv(VAR, "", 1);
    assert_int_equal(config_bool(VAR, true, &b, err, sizeof(err)), -1);
}

static void typed_values_come_from_file_too(void **state)
{
    char err[128] = "";
    uint16_t port = 0;

    (void)state;
    write_tmp("8443\n", 5);
    setenv(VAR_FILE, tmp_path, 1);
    assert_int_equal(config_port(VAR, 1, false, &port, err, sizeof(err)), 0);
    assert_int_equal(port, 8443);
}

static void read_file_size_limit(void **state)
{
    char err[256] = "";
    char *out = NULL;
    size_t len = 99;

    (void)state;
    write_tmp("0123456789", 10);
    assert_int_equal(config_read_file(tmp_path, 10, &out, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 10);
    assert_memory_equal(out, "0123456789", 11);
    free(out);
    assert_int_equal(config_read_file(tmp_path, 9, &out, &len, err, sizeof(err)), -1);
    assert_null(out);
    assert_non_null(strstr(err, ": larger than 9 bytes"));
    assert_int_equal(strncmp(err, tmp_path, strlen(tmp_path)), 0);
    assert_int_equal(config_read_file(tmp_path, 0, &out, &len, err, sizeof(err)), -1);
}

static void read_file_large_and_empty(void **state)
{
    enum { BIG = 100000 };
    char err[256] = "";
    char *data = malloc(BIG);
    char *out = NULL;
    size_t len = 0;
    size_t i;

    (void)state;
    assert_non_null(data);
    for (i = 0; i < BIG; i++)
        data[i] = (char)('a' + i % 26);
    write_tmp(data, BIG);
    assert_int_equal(config_read_file(tmp_path, BIG, &out, &len, err, sizeof(err)), 0);
    assert_int_equal(len, BIG);
    assert_memory_equal(out, data, BIG);
    assert_int_equal(out[BIG], '\0');
    free(out);
    free(data);
    unlink(tmp_path);
    write_tmp("", 0);
    assert_int_equal(config_read_file(tmp_path, 10, &out, NULL, err, sizeof(err)), 0);
    assert_string_equal(out, "");
    free(out);
}

static void check_file_wants_a_readable_regular_file(void **state)
{
    char err[256];
    char want[256];

    (void)state;
    write_tmp("-----BEGIN CERTIFICATE-----\n", 28);
    assert_int_equal(config_check_file("CA", tmp_path, err, sizeof(err)), 0);
    assert_int_equal(config_check_file("CA", "/nonexistent/ca.pem", err, sizeof(err)), -1);
    assert_string_equal(err, "CA: cannot read /nonexistent/ca.pem: No such file or directory");
    assert_int_equal(config_check_file("CA", "/tmp", err, sizeof(err)), -1);
    assert_string_equal(err, "CA: cannot read /tmp: not a regular file");
    assert_int_equal(config_check_file("CA", NULL, err, sizeof(err)), -1);
    assert_string_equal(err, "CA: cannot read (unset): no path");
    if (geteuid() != 0) { /* root reads a 0000 file all the same */
        assert_int_equal(chmod(tmp_path, 0), 0);
        snprintf(want, sizeof(want), "CA: cannot read %s: Permission denied", tmp_path);
        assert_int_equal(config_check_file("CA", tmp_path, err, sizeof(err)), -1);
        assert_string_equal(err, want);
    }
}

static void error_message_cut_safely(void **state)
{
    char err[8];
    char *out = NULL;

    (void)state;
    assert_int_equal(config_string_required(VAR, &out, err, sizeof(err)), -1);
    assert_string_equal(err, "TCFG_VA");
    /* No error buffer at all is allowed. */
    assert_int_equal(config_string_required(VAR, &out, NULL, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(string_unset_gives_default, setup, teardown),
        cmocka_unit_test_setup_teardown(string_reads_environment_verbatim, setup, teardown),
        cmocka_unit_test_setup_teardown(file_variant_strips_one_lf, setup, teardown),
        cmocka_unit_test_setup_teardown(file_variant_strips_one_crlf, setup, teardown),
        cmocka_unit_test_setup_teardown(file_variant_without_newline_kept_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(both_set_is_error_naming_both, setup, teardown),
        cmocka_unit_test_setup_teardown(missing_file_error_names_file_variable, setup, teardown),
        cmocka_unit_test_setup_teardown(file_with_nul_byte_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(empty_file_path_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(required_unset_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(int_parses_and_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(int_rejects_garbage_with_message, setup, teardown),
        cmocka_unit_test_setup_teardown(port_range_and_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(bool_accepts_words_case_insensitive, setup, teardown),
        cmocka_unit_test_setup_teardown(typed_values_come_from_file_too, setup, teardown),
        cmocka_unit_test_setup_teardown(read_file_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(read_file_large_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(check_file_wants_a_readable_regular_file, setup, teardown),
        cmocka_unit_test_setup_teardown(error_message_cut_safely, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
