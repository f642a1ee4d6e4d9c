/* Tests of file_templates on the real templates dir and on hostile temp dirs (too large,
 * not UTF-8, bad locale name, no en), and of system_notify_env's Message-IDs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "datasources/file_templates.h"
#include "datasources/system_notify_env.h"

#ifndef PUSH_EMAIL_TEMPLATES_DIR
#error "PUSH_EMAIL_TEMPLATES_DIR must be defined by the build"
#endif

static char tmp[PATH_MAX];

static void write_file(const char *rel, const char *data, size_t len)
{
    char path[PATH_MAX + 128];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *rel)
{
    char path[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    assert_int_equal(mkdir(path, 0755), 0);
}

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmp, sizeof tmp, "/tmp/pe-templates-XXXXXX");
    if (mkdtemp(tmp) == NULL) {
        return -1;
    }
    return 0;
}

static int teardown_tmp(void **state)
{
    char cmd[PATH_MAX + 16];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_real_templates_load_for_every_locale(void **state)
{
    static const char *const locales[] = {"en", "pt-BR", "es"};
    static const char *const kinds[] = {"welcome",           "profile_changed",
                                        "email_changed_old", "email_changed_new",
                                        "password_changed",  "account_deleted"};
    static const char *const parts[] = {"subject", "txt", "html"};
    char err[512] = "";
    struct file_templates *t = file_templates_new(PUSH_EMAIL_TEMPLATES_DIR, err, sizeof err);
    struct template_store port;
    (void)state;

    if (t == NULL) {
        fail_msg("load %s: %s", PUSH_EMAIL_TEMPLATES_DIR, err);
    }
    port = file_templates_port(t);
    for (size_t l = 0; l < sizeof locales / sizeof locales[0]; l++) {
        char dir[PATH_MAX + 16];
        struct stat st;
        snprintf(dir, sizeof dir, "%s/%s", PUSH_EMAIL_TEMPLATES_DIR, locales[l]);
        if (stat(dir, &st) != 0) {
            printf("note: locale %s has no directory yet\n", locales[l]);
            continue;
        }
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++) {
                char name[64];
                const char *text;
                snprintf(name, sizeof name, "%s.%s", kinds[k], parts[p]);
                text = port.ops->get(port.self, locales[l], name);
                if (text == NULL || text[0] == '\0') {
                    fail_msg("%s/%s missing or empty", locales[l], name);
                }
            }
        }
        assert_non_null(port.ops->get(port.self, locales[l], "fields"));
    }
    assert_null(port.ops->get(port.self, "en", "no_such.txt"));
    assert_null(port.ops->get(port.self, "fr", "welcome.txt"));
    assert_true(file_templates_count(t) >= 19);
    file_templates_free(t);
}

static void test_temp_dir_loads_exact_text(void **state)
{
    char err[512] = "";
    struct file_templates *t;
    struct template_store port;
    (void)state;

    make_dir("en");
    make_dir("pt-BR");
    write_file("README.md", "not a locale\n", 13);
    write_file("en/welcome.subject", "Welcome, {{full_name}}\n", 23);
    write_file("en/.hidden", "x", 1);
    write_file("en/welcome.txt~", "backup", 6);
    write_file("pt-BR/welcome.subject", "Bem-vindo, {{full_name}} — olá\n",
               strlen("Bem-vindo, {{full_name}} — olá\n"));
    t = file_templates_new(tmp, err, sizeof err);
    if (t == NULL) {
        fail_msg("load: %s", err);
    }
    port = file_templates_port(t);
    assert_string_equal(port.ops->get(port.self, "en", "welcome.subject"),
                        "Welcome, {{full_name}}\n");
    assert_string_equal(port.ops->get(port.self, "pt-BR", "welcome.subject"),
                        "Bem-vindo, {{full_name}} — olá\n");
    assert_null(port.ops->get(port.self, "pt-BR", "welcome.txt"));
    assert_null(port.ops->get(port.self, "en", ".hidden"));
    assert_int_equal(file_templates_count(t), 2);
    file_templates_free(t);
}

static void expect_refused(const char *needle)
{
    char err[512] = "";
    struct file_templates *t = file_templates_new(tmp, err, sizeof err);
    assert_null(t);
    if (strstr(err, needle) == NULL) {
        fail_msg("error does not name %s: %s", needle, err);
    }
}

static void test_file_over_64k_is_refused_by_name(void **state)
{
    char *big = malloc(FILE_TEMPLATES_MAX_BYTES + 1);
    (void)state;

    assert_non_null(big);
    memset(big, 'a', FILE_TEMPLATES_MAX_BYTES + 1);
    make_dir("en");
    write_file("en/welcome.txt", big, FILE_TEMPLATES_MAX_BYTES); /* exactly the limit: fine */
    write_file("en/welcome.html", big, FILE_TEMPLATES_MAX_BYTES + 1);
    free(big);
    expect_refused("en/welcome.html");
}

static void test_invalid_utf8_is_refused_by_name(void **state)
{
    (void)state;
    make_dir("en");
    make_dir("es");
    write_file("en/welcome.txt", "ok\n", 3);
    write_file("es/welcome.txt", "ol\xe1\n", 4); /* Latin-1, not UTF-8 */
    expect_refused("es/welcome.txt");
}

static void test_overlong_utf8_and_nul_are_refused(void **state)
{
    (void)state;
    make_dir("en");
    write_file("en/a.txt", "\xc0\xaf", 2); /* overlong '/' */
    expect_refused("en/a.txt");
    {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/en/a.txt", tmp);
        unlink(p);
    }
    write_file("en/b.txt", "a\0b", 3);
    expect_refused("en/b.txt");
}

static void test_bad_locale_dir_name_is_refused(void **state)
{
    (void)state;
    make_dir("en");
    make_dir("..evil");
    make_dir("en_US");
    expect_refused("en_US");
}

static void test_missing_en_is_refused(void **state)
{
    (void)state;
    make_dir("es");
    write_file("es/welcome.txt", "hola\n", 5);
    expect_refused("\"en\"");
}

static void test_message_id_is_stable_per_key_and_uses_the_domain(void **state)
{
    struct system_notify_env *e = system_notify_env_new("noreply@example.org");
    struct notify_env port;
    char a[128], b[128], c[128];
    int64_t now;
    (void)state;

    assert_non_null(e);
    port = system_notify_env_port(e);
    port.ops->message_id(port.self, "key-1", a, sizeof a);
    port.ops->message_id(port.self, "key-1", b, sizeof b);
    port.ops->message_id(port.self, "key-2", c, sizeof c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 1 + 32 + 1 + strlen("example.org") + 1);
    assert_int_equal(a[0], '<');
    assert_string_equal(a + 33, "@example.org>");
    for (int i = 1; i < 33; i++) {
        assert_non_null(strchr("0123456789abcdef", a[i]));
    }
    now = port.ops->now_s(port.self);
    assert_true(now >= (int64_t)time(NULL) - 1 && now <= (int64_t)time(NULL) + 1);
    system_notify_env_free(e);
    assert_null(system_notify_env_new("bad domain\r\nBcc: x"));
    assert_null(system_notify_env_new(""));
    /* Only host names whose Message-ID fits: the service refuses the rest at start. */
    static const char *const bad[] = {"example..org",   ".example.org",   "example.org.",
                                      "-x.example.org", "x-.example.org", "ex_ample.org",
                                      "a@b@",           "noreply@"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (system_notify_env_new(bad[i]) != NULL)
            fail_msg("accepted %s", bad[i]);
    }
    char label64[80], long_name[130];
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".org");
    assert_null(system_notify_env_new(label64));
    memset(long_name, 'a', sizeof long_name);
    for (size_t i = 50; i < sizeof long_name - 1; i += 50)
        long_name[i] = '.';
    long_name[121] = '\0'; /* 121 characters */
    assert_null(system_notify_env_new(long_name));
    long_name[120] = '\0'; /* 120: the longest accepted, and its Message-ID is valid */
    e = system_notify_env_new(long_name);
    assert_non_null(e);
    char id[160];
    port = system_notify_env_port(e);
    port.ops->message_id(port.self, "key-1", id, sizeof id);
    assert_int_equal(strlen(id), 1 + 32 + 1 + 120 + 1);
    system_notify_env_free(e);
    e = system_notify_env_new("x-1.a.example.org");
    assert_non_null(e);
    system_notify_env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_templates_load_for_every_locale),
        cmocka_unit_test_setup_teardown(test_temp_dir_loads_exact_text, setup_tmp, teardown_tmp),
        cmocka_unit_test_setup_teardown(test_file_over_64k_is_refused_by_name, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_invalid_utf8_is_refused_by_name, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_overlong_utf8_and_nul_are_refused, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_bad_locale_dir_name_is_refused, setup_tmp,
                                        teardown_tmp),
        cmocka_unit_test_setup_teardown(test_missing_en_is_refused, setup_tmp, teardown_tmp),
        cmocka_unit_test(test_message_id_is_stable_per_key_and_uses_the_domain),
    };
    return cmocka_run_group_tests_name("file_templates", tests, NULL, NULL);
}
