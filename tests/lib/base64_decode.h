/* base64_decode.h: a strict base64 decoder for tests that read the parts of a written email
 * (push-email's MIME writer encodes every body in base64). Header-only, for cmocka tests:
 * include it after <cmocka.h>. */
#ifndef TESTS_LIB_BASE64_DECODE_H
#define TESTS_LIB_BASE64_DECODE_H

#include <stddef.h>

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes base64 s[0..n), skipping CR and LF, up to the first '='; writes to out (room
 * for n bytes) and returns the length. Fails the test on a character outside the
 * alphabet. */
static size_t b64_decode(const char *s, size_t n, char *out)
{
    unsigned v = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        int d;
        if (s[i] == '\r' || s[i] == '\n')
            continue;
        if (s[i] == '=')
            break;
        d = b64_value(s[i]);
        if (d < 0)
            fail_msg("not base64: 0x%02x", (unsigned char)s[i]);
        v = (v << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((v >> bits) & 0xff);
        }
    }
    return o;
}

#endif
