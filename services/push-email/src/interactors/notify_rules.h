/* notify_rules: which emails a user change deserves (DESIGN.md section 6). */
#ifndef PUSH_EMAIL_INTERACTORS_NOTIFY_RULES_H
#define PUSH_EMAIL_INTERACTORS_NOTIFY_RULES_H

#include <stddef.h>

#include "entities/notification.h"
#include "entities/user_change.h"

/* Fills out[0..n) and returns n (0..NOTIFY_MAX_PER_CHANGE):
 * c: welcome to after.email. d: account deleted to before.email. r, t: nothing.
 * u: compares the fields a person cares about; nothing visible changed: nothing.
 *    email changed: EMAIL_CHANGED_OLD to before.email and EMAIL_CHANGED_NEW to
 *    after.email, both listing every visible change; password_changed_at moved:
 *    PASSWORD_CHANGED to after.email; other visible fields changed while the email did
 *    not: PROFILE_CHANGED to after.email listing them (old and new values).
 * Each notification gets its dedupe key. */
size_t notify_rules(const struct user_change *c, struct notification out[NOTIFY_MAX_PER_CHANGE]);

#endif
