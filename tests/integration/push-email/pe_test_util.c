/* pe_test_util: child processes, free ports and files for push-email's integration tests. */
#include "pe_test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A TCP socket bound to 127.0.0.1 on a port the kernel picks (*port), or -1. */
static int bind_loopback(unsigned short *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0) {
        return -1;
    }
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

unsigned short pe_free_port(void)
{
    unsigned short port = 0;
    int fd = bind_loopback(&port);

    if (fd < 0) {
        return 0;
    }
    close(fd);
    return port;
}

pid_t pe_spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();

    if (pid != 0) {
        return pid;
    }
    if (log_path != NULL) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
    }
    execvp(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int pe_run(char *const argv[], const char *log_path)
{
    int status = 0;
    pid_t pid = pe_spawn(argv, log_path);

    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
        return -1;
    }
    return WEXITSTATUS(status);
}

void pe_stop(pid_t pid)
{
    long long deadline;

    if (pid <= 0) {
        return;
    }
    kill(pid, SIGTERM);
    deadline = pe_now_ms() + 5000;
    while (pe_now_ms() < deadline) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            return;
        }
        pe_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int pe_wait_file(const char *path, int timeout_ms)
{
    long long deadline = pe_now_ms() + timeout_ms;
    struct stat st;

    while (stat(path, &st) != 0) {
        if (pe_now_ms() > deadline) {
            return -1;
        }
        pe_sleep_ms(20);
    }
    return 0;
}

char *pe_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        goto out;
    }
    buf = malloc((size_t)n + 1);
    if (buf == NULL) {
        goto out;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = '\0';
    if (len != NULL) {
        *len = (size_t)n;
    }
out:
    fclose(f);
    return buf;
}

size_t pe_count_lines(const char *path)
{
    size_t len = 0, n = 0;
    char *s = pe_read_file(path, &len);

    for (size_t i = 0; i < len; i++) {
        n += s[i] == '\n';
    }
    free(s);
    return n;
}

long long pe_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void pe_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
