/* notification: the names of notification kinds and of the fields a person cares about. */
#include "entities/notification.h"

/* These names are part of dedupe keys stored in the delivery log and of template file
 * names: changing one re-sends old events and breaks templates. */
const char *notification_kind_name(enum notification_kind k)
{
    switch (k) {
    case NOTIFY_WELCOME:
        return "welcome";
    case NOTIFY_PROFILE_CHANGED:
        return "profile_changed";
    case NOTIFY_EMAIL_CHANGED_OLD:
        return "email_changed_old";
    case NOTIFY_EMAIL_CHANGED_NEW:
        return "email_changed_new";
    case NOTIFY_PASSWORD_CHANGED:
        return "password_changed";
    case NOTIFY_ACCOUNT_DELETED:
        return "account_deleted";
    }
    return "unknown";
}

/* The keys of the localized "fields" template file ("full_name=Full name"). */
const char *user_field_name(enum user_field_id f)
{
    switch (f) {
    case UF_USERNAME:
        return "username";
    case UF_EMAIL:
        return "email";
    case UF_FULL_NAME:
        return "full_name";
    case UF_ADDRESS:
        return "address";
    case UF_DATE_OF_BIRTH:
        return "date_of_birth";
    case UF_STATUS:
        return "status";
    case UF_LOCALE:
        return "locale";
    case UF_PASSWORD_CHANGED_AT:
        return "password_changed_at";
    }
    return "unknown";
}
