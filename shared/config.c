/* config: reads one setting from the environment (or its *_FILE secret file) and validates it. */
#include "shared/config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A secret file larger than this is a mistake (a key file is a few KiB at most). */
#define CONFIG_FILE_MAX (1024u * 1024u)
/* Longest variable name accepted, so that "<name>_FILE" fits a fixed buffer. */
#define CONFIG_NAME_MAX 200u

static void config_err(char *errstr, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes a message into the caller's errstr (may be NULL or 0 bytes: then nothing). A message
 * longer than errlen is cut; a cut message is still NUL-terminated. */
static void config_err(char *errstr, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(errstr, errlen, fmt, ap);
    va_end(ap);
}

static char *config_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);

    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

int config_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *errstr,
                     size_t errlen)
{
    int rc = -1;
    int fd = -1;
    char *buf = NULL;
    size_t cap = 0;
    size_t used = 0;

    if (out == NULL || path == NULL || path[0] == '\0') {
        config_err(errstr, errlen, "config_read_file: empty path");
        goto out;
    }
    *out = NULL;
    if (len != NULL)
        *len = 0;
    if (max_bytes >= SIZE_MAX - 1) {
        config_err(errstr, errlen, "%s: size limit too large", path);
        goto out;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        config_err(errstr, errlen, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t got;

        /* Room for at least one byte past max_bytes (to detect an oversize file) and the
         * NUL. used <= max_bytes here, so growing up to max_bytes + 2 always makes room. */
        if (cap - used < 2) {
            size_t want = cap < 2048 ? 4096 : cap * 2;
            char *grown;

            if (want > max_bytes + 2)
                want = max_bytes + 2;
            grown = realloc(buf, want);
            if (grown == NULL) {
                config_err(errstr, errlen, "%s: out of memory", path);
                goto out;
            }
            buf = grown;
            cap = want;
        }
        got = read(fd, buf + used, cap - used - 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            config_err(errstr, errlen, "%s: cannot read: %s", path, strerror(errno));
            goto out;
        }
        if (got == 0)
            break;
        used += (size_t)got;
        if (used > max_bytes) {
            config_err(errstr, errlen, "%s: larger than %zu bytes", path, max_bytes);
            goto out;
        }
    }
    buf[used] = '\0';
    *out = buf;
    buf = NULL;
    if (len != NULL)
        *len = used;
    rc = 0;
out:
    if (fd >= 0)
        (void)close(fd);
    free(buf);
    return rc;
}

/* Looks `name` up in the environment, or reads the file `name`_FILE points to.
 * *value = malloc'd value (caller frees) or NULL when neither is set. Returns 0 or -1. */
static int config_lookup(const char *name, char **value, char *errstr, size_t errlen)
{
    int rc = -1;
    char file_var[CONFIG_NAME_MAX + sizeof("_FILE")];
    const char *direct;
    const char *path;
    char *contents = NULL;
    size_t len = 0;
    char why[256];
    int n;

    *value = NULL;
    if (name == NULL || name[0] == '\0' || strlen(name) > CONFIG_NAME_MAX) {
        config_err(errstr, errlen, "config: invalid variable name");
        goto out;
    }
    n = snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    if (n < 0 || (size_t)n >= sizeof(file_var)) {
        config_err(errstr, errlen, "%s: variable name too long", name);
        goto out;
    }
    direct = getenv(name);
    path = getenv(file_var);
    if (direct != NULL && path != NULL) {
        config_err(errstr, errlen, "%s and %s are both set; set only one", name, file_var);
        goto out;
    }
    if (direct != NULL) {
        *value = config_strdup(direct);
        if (*value == NULL) {
            config_err(errstr, errlen, "%s: out of memory", name);
            goto out;
        }
        rc = 0;
        goto out;
    }
    if (path == NULL) {
        rc = 0;
        goto out;
    }
    if (path[0] == '\0') {
        config_err(errstr, errlen, "%s: empty path", file_var);
        goto out;
    }
    if (config_read_file(path, CONFIG_FILE_MAX, &contents, &len, why, sizeof(why)) != 0) {
        config_err(errstr, errlen, "%s: %s", file_var, why);
        goto out;
    }
    if (memchr(contents, '\0', len) != NULL) {
        config_err(errstr, errlen, "%s: %s: contains a NUL byte", file_var, path);
        goto out;
    }
    /* Editors and `echo` add one line end; a value that really ends in one can't come
     * from a file, which is the usual convention for Docker/Kubernetes secrets. */
    if (len > 0 && contents[len - 1] == '\n') {
        contents[--len] = '\0';
        if (len > 0 && contents[len - 1] == '\r')
            contents[--len] = '\0';
    }
    *value = contents;
    contents = NULL;
    rc = 0;
out:
    free(contents);
    return rc;
}

int config_string(const char *name, const char *def, char **out, char *errstr, size_t errlen)
{
    int rc = -1;
    char *value = NULL;

    *out = NULL;
    if (config_lookup(name, &value, errstr, errlen) != 0)
        goto out;
    if (value == NULL && def != NULL) {
        value = config_strdup(def);
        if (value == NULL) {
            config_err(errstr, errlen, "%s: out of memory", name);
            goto out;
        }
    }
    *out = value;
    value = NULL;
    rc = 0;
out:
    free(value);
    return rc;
}

int config_string_required(const char *name, char **out, char *errstr, size_t errlen)
{
    int rc = -1;
    char *value = NULL;

    *out = NULL;
    if (config_lookup(name, &value, errstr, errlen) != 0)
        goto out;
    if (value == NULL) {
        config_err(errstr, errlen, "%s: required (set %s or %s_FILE)", name, name, name);
        goto out;
    }
    if (value[0] == '\0') {
        config_err(errstr, errlen, "%s: must not be empty", name);
        goto out;
    }
    *out = value;
    value = NULL;
    rc = 0;
out:
    free(value);
    return rc;
}

/* Strict decimal: optional sign, digits, nothing else (no spaces, no hex, no "12abc"). */
static int config_parse_ll(const char *s, long long *out)
{
    char *end = NULL;
    long long v;
    const char *p = s;

    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == NULL || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int config_int(const char *name, long long def, long long min, long long max, long long *out,
               char *errstr, size_t errlen)
{
    int rc = -1;
    char *value = NULL;
    long long v;

    if (config_lookup(name, &value, errstr, errlen) != 0)
        goto out;
    if (value == NULL) {
        *out = def;
        rc = 0;
        goto out;
    }
    if (config_parse_ll(value, &v) != 0 || v < min || v > max) {
        config_err(errstr, errlen, "%s: must be an integer from %lld to %lld", name, min, max);
        goto out;
    }
    *out = v;
    rc = 0;
out:
    free(value);
    return rc;
}

int config_port(const char *name, uint16_t def, bool allow_zero, uint16_t *out, char *errstr,
                size_t errlen)
{
    long long v = 0;

    if (config_int(name, def, allow_zero ? 0 : 1, 65535, &v, errstr, errlen) != 0)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

int config_ip_addr(const char *name, const char *def, bool allow_ipv6, char **out, char *errstr,
                   size_t errlen)
{
    unsigned char buf[sizeof(struct in6_addr)];

    if (config_string(name, def, out, errstr, errlen) != 0)
        return -1;
    if (*out != NULL &&
        (inet_pton(AF_INET, *out, buf) == 1 || (allow_ipv6 && inet_pton(AF_INET6, *out, buf) == 1)))
        return 0;
    config_err(errstr, errlen, "%s: must be a numeric %s address (such as 127.0.0.1 or 0.0.0.0)",
               name, allow_ipv6 ? "IPv4 or IPv6" : "IPv4");
    free(*out);
    *out = NULL;
    return -1;
}

int config_check_dir(const char *name, const char *path, char *errstr, size_t errlen)
{
    DIR *d = path != NULL ? opendir(path) : NULL;

    if (d == NULL) {
        config_err(errstr, errlen, "%s: cannot open directory %s: %s", name,
                   path != NULL ? path : "(unset)", path != NULL ? strerror(errno) : "no path");
        return -1;
    }
    (void)closedir(d);
    return 0;
}

int config_check_file(const char *name, const char *path, char *errstr, size_t errlen)
{
    struct stat st;
    int fd = path != NULL ? open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK) : -1;
    const char *why = path == NULL ? "no path" : NULL;

    if (fd < 0 && why == NULL)
        why = strerror(errno);
    else if (fd >= 0 && fstat(fd, &st) != 0)
        why = strerror(errno);
    else if (fd >= 0 && !S_ISREG(st.st_mode))
        why = "not a regular file";
    if (fd >= 0)
        (void)close(fd);
    if (why != NULL) {
        config_err(errstr, errlen, "%s: cannot read %s: %s", name, path != NULL ? path : "(unset)",
                   why);
        return -1;
    }
    return 0;
}

int config_bool(const char *name, bool def, bool *out, char *errstr, size_t errlen)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    int rc = -1;
    char *value = NULL;
    size_t i;

    if (config_lookup(name, &value, errstr, errlen) != 0)
        goto out;
    if (value == NULL) {
        *out = def;
        rc = 0;
        goto out;
    }
    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out = true;
            rc = 0;
            goto out;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out = false;
            rc = 0;
            goto out;
        }
    }
    config_err(errstr, errlen, "%s: must be one of true/false/1/0/yes/no/on/off", name);
out:
    free(value);
    return rc;
}
