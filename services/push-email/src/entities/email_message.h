/* email_message: a rendered email and its RFC 5322 / MIME form. */
#ifndef PUSH_EMAIL_ENTITIES_EMAIL_MESSAGE_H
#define PUSH_EMAIL_ENTITIES_EMAIL_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* All strings are UTF-8 and owned by whoever built the struct. */
struct email_message {
    const char *from_name;  /* display name, may be NULL */
    const char *from_addr;  /* addr-spec */
    const char *to_addr;    /* addr-spec, one recipient */
    const char *subject;    /* any UTF-8; CR/LF and other controls are removed */
    const char *text_body;  /* text/plain part */
    const char *html_body;  /* text/html part */
    const char *message_id; /* "<...@...>"; deterministic per dedupe key */
    int64_t date_s;         /* Date header, seconds since the epoch */
};

/* True for an addr-spec we are willing to hand to SMTP: ASCII, one '@', no spaces,
 * controls, angle brackets, commas or quotes, local part <= 64, total <= 254. */
bool email_address_valid(const char *addr);

/* Writes the message as RFC 5322 text with CRLF line ends: Date, From, To, Subject
 * (RFC 2047 encoded-words when not plain ASCII, folded under 78 columns), Message-ID,
 * MIME-Version, Auto-Submitted: auto-generated (RFC 3834), multipart/alternative with
 * text and HTML parts in UTF-8 base64. Header values have CR, LF and other controls (C1
 * and bidi controls too) removed first, so no value can add a header.
 * *out is malloc'd (caller frees). Returns 0, or -1 when an address is invalid or memory
 * runs out. */
int email_message_write(const struct email_message *m, char **out, size_t *len);

#endif
