/* Unit tests of shared/signals: real signals set the flag, SIGPIPE is ignored, waits end early. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "shared/signals.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

static long long now_ms(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&t, &t) != 0)
        ;
}

static int setup(void **state)
{
    (void)state;
    signals_reset();
    return 0;
}

static void sigterm_and_sigint_set_the_flag(void **state)
{
    (void)state;
    assert_int_equal(signals_install(), 0);
    assert_false(signals_stop_requested());
    assert_int_equal(raise(SIGTERM), 0);
    assert_true(signals_stop_requested());
    signals_reset();
    assert_false(signals_stop_requested());
    assert_int_equal(raise(SIGINT), 0);
    assert_true(signals_stop_requested());
}

static void sigpipe_is_ignored(void **state)
{
    struct sigaction old;
    int fds[2];

    (void)state;
    assert_int_equal(signals_install(), 0);
    assert_int_equal(sigaction(SIGPIPE, NULL, &old), 0);
    assert_true(old.sa_handler == SIG_IGN);
    /* Writing to a pipe with no reader is EPIPE, not death. */
    assert_int_equal(pipe(fds), 0);
    close(fds[0]);
    assert_int_equal(write(fds[1], "x", 1), -1);
    close(fds[1]);
    assert_false(signals_stop_requested());
}

static void request_and_reset_for_tests(void **state)
{
    (void)state;
    signals_request_stop();
    assert_true(signals_stop_requested());
    signals_reset();
    assert_false(signals_stop_requested());
}

static void wait_times_out(void **state)
{
    long long start;
    long long took;

    (void)state;
    start = now_ms();
    signals_wait(120);
    took = now_ms() - start;
    assert_true(took >= 120);
    assert_true(took < 1000);
    assert_false(signals_stop_requested());
    start = now_ms();
    signals_wait(0);
    assert_true(now_ms() - start < 50);
}

static void wait_returns_at_once_when_already_stopped(void **state)
{
    long long start;

    (void)state;
    signals_request_stop();
    start = now_ms();
    signals_wait(5000);
    signals_wait(-1);
    assert_true(now_ms() - start < 50);
}

static void *stop_later(void *arg)
{
    sleep_ms(100);
    if (arg != NULL)
        kill(getpid(), SIGTERM);
    else
        signals_request_stop();
    return NULL;
}

static void wait_ends_early_on_stop(void **state)
{
    pthread_t t;
    long long start;
    long long took;
    int use_signal;

    (void)state;
    assert_int_equal(signals_install(), 0);
    for (use_signal = 0; use_signal < 2; use_signal++) {
        signals_reset();
        start = now_ms();
        assert_int_equal(pthread_create(&t, NULL, stop_later, use_signal ? (void *)1 : NULL), 0);
        signals_wait(use_signal ? 10000 : -1);
        took = now_ms() - start;
        pthread_join(t, NULL);
        assert_true(signals_stop_requested());
        assert_true(took >= 90);
        assert_true(took < 2000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(sigterm_and_sigint_set_the_flag, setup),
        cmocka_unit_test_setup(sigpipe_is_ignored, setup),
        cmocka_unit_test_setup(request_and_reset_for_tests, setup),
        cmocka_unit_test_setup(wait_times_out, setup),
        cmocka_unit_test_setup(wait_returns_at_once_when_already_stopped, setup),
        cmocka_unit_test_setup(wait_ends_early_on_stop, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
