/* config: reads settings from the environment once, with *_FILE variants for secrets. */
#ifndef SHARED_CONFIG_H
#define SHARED_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Every function reads the variable `name`; when `name`_FILE is set instead, the file's
 * contents are used with one trailing newline (LF or CRLF) removed. Setting both is an
 * error. On an error the functions return -1 and write a one-line message that names the
 * variable into errstr (e.g. "USERDATA_PORT: must be an integer from 1 to 65535"). */

/* *out = a malloc'd copy of the value, or of def (NULL allowed) when unset.
 * Caller frees *out. Returns 0 or -1. */
int config_string(const char *name, const char *def, char **out, char *errstr, size_t errlen);
/* Like config_string but an unset or empty variable is an error. */
int config_string_required(const char *name, char **out, char *errstr, size_t errlen);
/* Decimal integer within [min, max]; def when unset. */
int config_int(const char *name, long long def, long long min, long long max, long long *out,
               char *errstr, size_t errlen);
/* TCP port 1..65535 (0 allowed when allow_zero: "pick an ephemeral port"). */
int config_port(const char *name, uint16_t def, bool allow_zero, uint16_t *out, char *errstr,
                size_t errlen);
/* A numeric IPv4 address (also IPv6 when allow_ipv6), such as 127.0.0.1, 0.0.0.0 or ::;
 * a copy of def when unset. No host names: a listener must not depend on DNS. */
int config_ip_addr(const char *name, const char *def, bool allow_ipv6, char **out, char *errstr,
                   size_t errlen);
/* true/false/1/0/yes/no/on/off, case-insensitive. */
int config_bool(const char *name, bool def, bool *out, char *errstr, size_t errlen);
/* Checks that path (the value of variable `name`) is a directory this process can list.
 * Returns 0, or -1 with "NAME: cannot open directory PATH: reason" in errstr. */
int config_check_dir(const char *name, const char *path, char *errstr, size_t errlen);
/* Checks that path (the value of variable `name`) is a regular file this process can read.
 * Returns 0, or -1 with "NAME: cannot read PATH: reason" in errstr. */
int config_check_file(const char *name, const char *path, char *errstr, size_t errlen);
/* Reads a whole file (at most max_bytes) into a malloc'd NUL-terminated buffer.
 * Caller frees *out. */
int config_read_file(const char *path, size_t max_bytes, char **out, size_t *len, char *errstr,
                     size_t errlen);

#endif
