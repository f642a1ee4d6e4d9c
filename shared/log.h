/* log: one JSON object per line on stdout (ts, level, service, msg, fields). */
#ifndef SHARED_LOG_H
#define SHARED_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the service name and the lowest level written. Not thread-safe: call once in
 * main before any thread starts. Defaults: service "app", level INFO. */
void log_init(const char *service, enum log_level min_level);
/* Parses "debug", "info", "warn", "error" (case-insensitive). Returns false otherwise. */
bool log_level_parse(const char *s, enum log_level *out);
bool log_enabled(enum log_level level);

/* Writes one line: {"ts":"2026-11-21T13:49:09.123456Z","level":"info","service":"...",
 * "msg":"<msg>", then the fields}. fields are key/value string pairs terminated by a NULL
 * key: log_write(LOG_INFO, "started", "port", "8080", NULL). Keys and values are JSON
 * escaped (control characters as \uXXXX; invalid UTF-8 replaced by U+FFFD), so a
 * hostile value cannot forge a field or a line. Thread-safe; one write(2) per line. */
void log_write(enum log_level level, const char *msg, ...);

/* Same, with the message built printf-style (no extra fields). */
void log_writef(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines longer than this are cut at a character boundary and get "truncated":true. */
#define LOG_LINE_MAX 8192

/* Writes src as the contents of a JSON string (no quotes) into dst, escaped exactly as
 * log lines are (so other modules can put untrusted text into JSON bodies). dst is always
 * NUL-terminated when dstlen > 0; output that does not fit is cut before the first
 * character that would overflow. Returns true when all of src fit. src NULL = "". */
bool log_json_escape(const char *src, char *dst, size_t dstlen);

/* A cap on how often one source writes lines, for messages a client can trigger at will
 * (a refused connection, say): at most `burst` lines per window of `window_s` seconds;
 * the rest are dropped and counted. Define with LOG_RATE_INIT(burst, window_s). */
struct log_rate {
    pthread_mutex_t lock;
    unsigned burst;
    int64_t window_s;
    int64_t window_start;
    unsigned used;
    unsigned long dropped;
};
#define LOG_RATE_INIT(burst_, window_s_)                                                           \
    {                                                                                              \
        PTHREAD_MUTEX_INITIALIZER, (burst_), (window_s_), INT64_MIN, 0, 0                          \
    }

/* True when a line may be written now. *dropped (when not NULL) gets the number of lines
 * refused since the last one allowed, so the caller can report it. Thread-safe. */
bool log_rate_allow(struct log_rate *r, unsigned long *dropped);
/* The same with the time given (seconds on any steady clock); for tests. */
bool log_rate_allow_at(struct log_rate *r, int64_t now_s, unsigned long *dropped);

/* For a library's printf-style log callback (libmicrohttpd's): when r allows a line now,
 * writes one at WARN with msg, the formatted text (trailing CR/LF removed) as "detail"
 * and the lines r dropped before it as "lines_dropped". */
void log_write_limited(struct log_rate *r, const char *msg, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Level-checked printf-style logging: arguments are not evaluated when the level is off. */
/* clang-format off */
#define LOG_INFO_F(...)  do { if (log_enabled(LOG_INFO)) log_writef(LOG_INFO, __VA_ARGS__); } while (0)
#define LOG_WARN_F(...)  do { if (log_enabled(LOG_WARN)) log_writef(LOG_WARN, __VA_ARGS__); } while (0)
#define LOG_ERROR_F(...) do { if (log_enabled(LOG_ERROR)) log_writef(LOG_ERROR, __VA_ARGS__); } while (0)
#define LOG_DEBUG_F(...) do { if (log_enabled(LOG_DEBUG)) log_writef(LOG_DEBUG, __VA_ARGS__); } while (0)
/* clang-format on */

#endif
