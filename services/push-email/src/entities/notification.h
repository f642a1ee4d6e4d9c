/* notification: one email that a user change deserves, before it is rendered. */
#ifndef PUSH_EMAIL_ENTITIES_NOTIFICATION_H
#define PUSH_EMAIL_ENTITIES_NOTIFICATION_H

#include <stddef.h>

#include "entities/user_change.h"

enum notification_kind {
    NOTIFY_WELCOME,           /* c: to after.email */
    NOTIFY_PROFILE_CHANGED,   /* u: visible fields other than email/password changed */
    NOTIFY_EMAIL_CHANGED_OLD, /* u: security notice to before.email */
    NOTIFY_EMAIL_CHANGED_NEW, /* u: confirmation to after.email */
    NOTIFY_PASSWORD_CHANGED,  /* u: password_changed_at moved */
    NOTIFY_ACCOUNT_DELETED,   /* d: to before.email */
};
#define NOTIFY_KINDS 6

/* The fields a person cares about, in the order emails list them. */
enum user_field_id {
    UF_USERNAME,
    UF_EMAIL,
    UF_FULL_NAME,
    UF_ADDRESS,
    UF_DATE_OF_BIRTH,
    UF_STATUS,
    UF_LOCALE,
    UF_PASSWORD_CHANGED_AT,
};
#define UF_COUNT 8

struct field_change {
    enum user_field_id field;
    char old_value[UC_ADDRESS_MAX + 1]; /* display text; empty = was not set */
    char new_value[UC_ADDRESS_MAX + 1];
};

#define NOTIFY_MAX_PER_CHANGE 4

struct notification {
    enum notification_kind kind;
    char recipient[UC_EMAIL_MAX + 1];
    char locale[UC_LOCALE_MAX + 1];
    struct user_image user; /* the image to address the person by (after, or before on d) */
    /* For PROFILE_CHANGED and EMAIL_CHANGED_*: what changed. EMAIL_CHANGED_OLD carries the
     * fields only, their values empty: the old mailbox may not be the owner's any more. */
    size_t n_changes;
    struct field_change changes[UF_COUNT];
    /* "<position key>:<kind name>:<recipient>": the same for every re-emission of the
     * change, different for every email it deserves. */
    char dedupe_key[512];
};

const char *notification_kind_name(enum notification_kind k); /* "welcome", ... */
const char *user_field_name(enum user_field_id f);            /* "full_name", ... */

#endif
