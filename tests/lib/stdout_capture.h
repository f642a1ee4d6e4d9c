/* stdout_capture.h: captures what a test's code writes to fd 1 (shared/log writes one line
 * per write(2) there). Header-only, for cmocka tests: include it after <cmocka.h>.
 *
 *   capture_begin();  ... code that logs ...  char *out = capture_end(&len);  free(out); */
#ifndef TESTS_LIB_STDOUT_CAPTURE_H
#define TESTS_LIB_STDOUT_CAPTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

static int capture_saved_stdout = -1;
static int capture_fd = -1;

/* Points fd 1 at a fresh temp file until capture_end. */
static void capture_begin(void)
{
    char path[] = "/tmp/test_capture_XXXXXX";

    fflush(stdout);
    capture_fd = mkstemp(path);
    assert_true(capture_fd >= 0);
    unlink(path);
    capture_saved_stdout = dup(STDOUT_FILENO);
    assert_true(capture_saved_stdout >= 0);
    assert_true(dup2(capture_fd, STDOUT_FILENO) >= 0);
}

/* Restores stdout and returns what was written (len_out may be NULL); caller frees. */
static char *capture_end(size_t *len_out)
{
    off_t size;
    char *buf;

    dup2(capture_saved_stdout, STDOUT_FILENO);
    close(capture_saved_stdout);
    size = lseek(capture_fd, 0, SEEK_END);
    assert_true(size >= 0);
    buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(capture_fd, buf, (size_t)size, 0), size);
    buf[size] = '\0';
    close(capture_fd);
    if (len_out != NULL)
        *len_out = (size_t)size;
    return buf;
}

#endif
