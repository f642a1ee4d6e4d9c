/* notifier: turns one user change into sent emails, at most once per person. */
#ifndef PUSH_EMAIL_INTERACTORS_NOTIFIER_H
#define PUSH_EMAIL_INTERACTORS_NOTIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "entities/user_change.h"
#include "repositories/delivery_log.h"
#include "repositories/mail_sender.h"
#include "repositories/notify_env.h"
#include "repositories/template_store.h"

struct notifier_config {
    const char *from_addr;      /* envelope and header From */
    const char *from_name;      /* display name, may be NULL */
    const char *default_locale; /* "en": used when a locale has no template */
    /* The locales that have templates (may be NULL): a person whose locale and language
     * have none gets one of the same language before the default (pt-PT -> pt-BR). */
    const char *const *locales;
    size_t n_locales;
};

enum notify_outcome {
    NOTIFY_DONE = 0, /* every email is sent, deduped or finally failed: store the offset */
    NOTIFY_FAILED,   /* done, but some email finally failed: DLQ the event with report.reason,
                        then store the offset */
    NOTIFY_RETRY,    /* a transient failure (SMTP or delivery log): nothing is lost; try the
                        same event again later, emails already sent will be deduped */
};

struct notify_report {
    unsigned sent, deduped, failed, transient;
    char reason[256];
};

struct notifier;

/* Ports and config are copied (the strings must outlive the notifier). NULL on OOM. */
struct notifier *notifier_new(struct mail_sender sender, struct delivery_log log,
                              struct template_store templates, struct notify_env env,
                              const struct notifier_config *cfg);
void notifier_free(struct notifier *n);

enum notify_outcome notifier_handle(struct notifier *n, const struct user_change *c,
                                    struct notify_report *report);

/* At start: renders every kind of email in every given locale that has templates for it,
 * and in the default locale (which must have all of them), with sample values, down to
 * the RFC 5322 message: missing parts, template syntax, the sender and the Message-ID. A
 * configuration that would fail every email later fails here: -1 with err naming it. */
int notifier_selfcheck(struct notifier *n, const char *const *locales, size_t count, char *err,
                       size_t errlen);

/* Before handling a batch of changes: asks the delivery log for the states of all the
 * emails they deserve in one go (at most NOTIFIER_PREFETCH_MAX changes are looked at). */
#define NOTIFIER_PREFETCH_MAX 64
void notifier_prefetch(struct notifier *n, const struct user_change *const *changes, size_t count);

/* How long a send waits, before the end of its data, for the marks of the emails before
 * it to be durable (see notifier.c); past that it is abandoned and the event retried. */
#define NOTIFIER_GATE_MS 2000

/* Write-behind of the delivery log (see delivery_log.h): a ticket for what the events
 * handled so far recorded, the highest ticket that is durable, and a bounded wait until
 * everything is (0, or -1 when it is not within timeout_ms). With a log that writes
 * through, the ticket is always durable. */
uint64_t notifier_ticket(const struct notifier *n);
uint64_t notifier_durable(const struct notifier *n);
int notifier_flush(const struct notifier *n, int timeout_ms);

#endif
