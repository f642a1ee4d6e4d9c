/* pe_test_util: child processes, free ports and files for push-email's integration tests. */
#ifndef TESTS_INTEGRATION_PUSH_EMAIL_PE_TEST_UTIL_H
#define TESTS_INTEGRATION_PUSH_EMAIL_PE_TEST_UTIL_H

#include <stddef.h>
#include <sys/types.h>

/* A TCP port on 127.0.0.1 that was free a moment ago. 0 on failure. */
unsigned short pe_free_port(void);

/* Starts argv[0] (a path or a name in PATH) with stdout/stderr appended to log_path (may be
 * NULL). The pid, or -1. */
pid_t pe_spawn(char *const argv[], const char *log_path);

/* Runs argv to the end; its exit code, or -1. */
int pe_run(char *const argv[], const char *log_path);

/* SIGTERM, then SIGKILL after 5 s; reaps it. */
void pe_stop(pid_t pid);

/* Waits up to timeout_ms for path to exist. 0 when it does. */
int pe_wait_file(const char *path, int timeout_ms);

/* The whole file (malloc'd, NUL-terminated; caller frees), *len its size. NULL when
 * missing. */
char *pe_read_file(const char *path, size_t *len);

/* Lines of a file; 0 when it is missing. */
size_t pe_count_lines(const char *path);

/* Monotonic milliseconds. */
long long pe_now_ms(void);

void pe_sleep_ms(int ms);

#endif
