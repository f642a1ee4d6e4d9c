/* libFuzzer target: the MIME writer with any subject, display name and bodies. The input
 * is split at NUL bytes into subject, from_name, text body and HTML body. The output must
 * use CRLF only, keep header lines under 78 columns and every line under 998, and hold
 * exactly the expected headers: no value may add one. abort() on any violation. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "entities/email_message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const NAMES[] = {
    "Date:",         "From:",           "To:",          "Subject:", "Message-ID:",
    "MIME-Version:", "Auto-Submitted:", "Content-Type:"};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

static void check(const char *out, size_t len)
{
    const char *body, *line;
    size_t seen = 0;

    if (out == NULL || strlen(out) != len)
        abort();
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r'))
            abort(); /* bare LF */
        if (out[i] == '\r' && (i + 1 >= len || out[i + 1] != '\n'))
            abort(); /* bare CR */
    }
    for (line = out; line < out + len;) {
        const char *eol = strstr(line, "\r\n");
        if (eol == NULL || eol - line > 998 || line[0] == '.')
            abort();
        line = eol + 2;
    }
    body = strstr(out, "\r\n\r\n");
    if (body == NULL)
        abort();
    for (line = out; line < body + 2;) {
        const char *eol = strstr(line, "\r\n");
        if (eol - line > 78)
            abort();          /* the addresses here are short: every header line must fold */
        if (line[0] == ' ') { /* a continuation: must carry more than whitespace */
            const char *p = line;
            while (p < eol && *p == ' ')
                p++;
            if (p == eol || seen == 0)
                abort();
        } else {
            if (seen >= N_NAMES || strncmp(line, NAMES[seen], strlen(NAMES[seen])) != 0)
                abort(); /* an unexpected header line */
            seen++;
        }
        line = eol + 2;
    }
    if (seen != N_NAMES)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    const char *field[4] = {"", "", "", ""};
    struct email_message m;
    char *out = NULL;
    size_t len = 0, f = 0;

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    field[0] = copy;
    for (size_t i = 0; i < size && f < 3; i++) {
        if (copy[i] == '\0')
            field[++f] = copy + i + 1;
    }
    m = (struct email_message){
        .from_name = field[1],
        .from_addr = "noreply@example.com",
        .to_addr = "ana@example.com",
        .subject = field[0],
        .text_body = field[2],
        .html_body = field[3],
        .message_id = "<fuzz.1@cdc-notify.example.com>",
        .date_s = 1700000000,
    };
    if (email_message_write(&m, &out, &len) != 0)
        abort(); /* valid addresses: only out-of-memory may fail, and libFuzzer caps that */
    check(out, len);
    free(out);
    free(copy);
    return 0;
}
