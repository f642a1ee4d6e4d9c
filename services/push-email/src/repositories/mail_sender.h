/* mail_sender: the port that hands one rendered email to a mail server. */
#ifndef PUSH_EMAIL_REPOSITORIES_MAIL_SENDER_H
#define PUSH_EMAIL_REPOSITORIES_MAIL_SENDER_H

#include <stddef.h>

enum mail_result {
    MAIL_SENT = 0,
    MAIL_TRANSIENT, /* connect refused, timeout, 4xx: try again later, nothing is lost */
    MAIL_PERMANENT, /* 5xx for this recipient or message: retrying will not help */
};

/* What a send waits for before the server may accept the message: ready() is called once
 * the message is with the server but before the end of its data, the point from which the
 * server can accept it. It returns 0 to let the message go; anything else abandons the
 * send (MAIL_TRANSIENT), and the server accepts nothing. The caller uses this to start a
 * send while the record of the one before is still being committed. */
struct mail_gate {
    int (*ready)(void *ctx);
    void *ctx;
};

struct mail_sender_ops {
    /* Sends data[0..len) (an RFC 5322 message with CRLF line ends) from envelope sender
     * `from` to the one recipient `to`, passing gate (NULL: none) before the end of data.
     * err gets a short reason (the server's reply line when there is one). Not
     * thread-safe: one sender per thread. */
    enum mail_result (*send)(void *self, const char *from, const char *to, const char *data,
                             size_t len, const struct mail_gate *gate, char *err, size_t errlen);
};

struct mail_sender {
    const struct mail_sender_ops *ops;
    void *self;
};

#endif
