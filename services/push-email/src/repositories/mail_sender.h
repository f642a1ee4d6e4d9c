/* mail_sender: the port that hands one rendered email to a mail server. */
#ifndef PUSH_EMAIL_REPOSITORIES_MAIL_SENDER_H
#define PUSH_EMAIL_REPOSITORIES_MAIL_SENDER_H

#include <stddef.h>

enum mail_result {
    MAIL_SENT = 0,
    MAIL_TRANSIENT, /* connect refused, timeout, 4xx: try again later, nothing is lost */
    MAIL_PERMANENT, /* 5xx for this recipient or message: retrying will not help */
};

struct mail_sender_ops {
    /* Sends data[0..len) (an RFC 5322 message with CRLF line ends) from envelope sender
     * `from` to the one recipient `to`. err gets a short reason (the server's reply
     * line when there is one). Not thread-safe: one sender per thread. */
    enum mail_result (*send)(void *self, const char *from, const char *to, const char *data,
                             size_t len, char *err, size_t errlen);
};

struct mail_sender {
    const struct mail_sender_ops *ops;
    void *self;
};

#endif
