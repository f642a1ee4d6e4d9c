/* ci.h: a test that cannot run here skips outside CI and fails in CI. In CI (CI set to a
 * non-empty value other than "false", as .ci/run sets it) scripts/test provides every
 * server and tool the tests need, so a missing one is a failure, never a silent skip:
 * cmocka's skip() counts as passed in ctest, hidden from scripts/test's skip count.
 * Header-only.
 *
 *   if (test_in_ci()) ...                       any test
 *   skip_or_fail_in_ci("no root on %s", host);  inside a cmocka test (include <cmocka.h>
 *                                               first): fail_msg in CI, else print + skip() */
#ifndef TESTS_LIB_CI_H
#define TESTS_LIB_CI_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline bool test_in_ci(void)
{
    const char *ci = getenv("CI");

    return ci != NULL && ci[0] != '\0' && strcmp(ci, "false") != 0;
}

/* A macro, not a function: skip() and fail_msg() report the caller's file and line. The
 * arguments are a printf format (a string literal) and its values: why the test cannot run. */
#define skip_or_fail_in_ci(...)                                                                    \
    do {                                                                                           \
        if (test_in_ci()) {                                                                        \
            print_error("CI=%s: a test that cannot run fails here instead of skipping\n",          \
                        getenv("CI"));                                                             \
            fail_msg(__VA_ARGS__);                                                                 \
        }                                                                                          \
        print_message("SKIP: ");                                                                   \
        print_message(__VA_ARGS__);                                                                \
        print_message("\n");                                                                       \
        skip();                                                                                    \
    } while (0)

#endif
