/* signals: turns SIGINT/SIGTERM into a flag the main loop polls; ignores SIGPIPE. */
#ifndef SHARED_SIGNALS_H
#define SHARED_SIGNALS_H

#include <stdbool.h>

/* Installs the handlers. Returns 0, or -1 when sigaction fails. */
int signals_install(void);
/* True once SIGINT or SIGTERM arrived. Async-signal-safe to read. */
bool signals_stop_requested(void);
/* Blocks until a stop is requested or timeout_ms passes (for main loops that only wait).
 * A negative timeout_ms waits for the stop only. Reacts within about 10 ms. */
void signals_wait(int timeout_ms);
/* For tests: behave as if a stop signal arrived / reset. */
void signals_request_stop(void);
void signals_reset(void);

#endif
