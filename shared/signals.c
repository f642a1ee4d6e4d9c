/* signals: SIGINT/SIGTERM set a flag (nothing else is safe in a handler); SIGPIPE is ignored
 * so a closed socket is an EPIPE error, not a dead process. */
#include "shared/signals.h"

#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* How often signals_wait looks at the flag: the worst added shutdown latency. */
#define SIGNALS_STEP_MS 10

static volatile sig_atomic_t signals_stop;

static void signals_on_stop(int signo)
{
    (void)signo;
    signals_stop = 1;
}

int signals_install(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = signals_on_stop;
    (void)sigemptyset(&sa.sa_mask);
    /* Restart interrupted system calls inside libraries (MariaDB, curl, librdkafka) rather
     * than surprise them with EINTR; main loops poll the flag with short timeouts. */
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return -1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    (void)sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return -1;
    return 0;
}

bool signals_stop_requested(void)
{
    return signals_stop != 0;
}

static long long signals_now_ms(void)
{
    struct timespec now;

    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* timeout_ms < 0 waits until a stop is requested. A signal delivered to this thread cuts
 * the current step short (nanosleep returns EINTR even with SA_RESTART). */
void signals_wait(int timeout_ms)
{
    long long deadline = signals_now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);

    while (!signals_stop_requested()) {
        long long left = deadline - signals_now_ms();
        struct timespec step;

        if (timeout_ms >= 0 && left <= 0)
            return;
        if (timeout_ms < 0 || left > SIGNALS_STEP_MS)
            left = SIGNALS_STEP_MS;
        step.tv_sec = 0;
        step.tv_nsec = (long)(left * 1000000);
        (void)nanosleep(&step, NULL);
    }
}

void signals_request_stop(void)
{
    signals_stop = 1;
}

void signals_reset(void)
{
    signals_stop = 0;
}
