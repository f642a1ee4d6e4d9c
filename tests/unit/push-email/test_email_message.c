/* Unit tests of the MIME writer: the output is parsed back (line ends, header names,
 * RFC 2047 words, base64 parts) for hostile and international values; addresses are
 * checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "entities/email_message.h"
#include "tests/lib/base64_decode.h"

static const char *const HEADER_NAMES[] = {"Date",           "From",        "To",
                                           "Subject",        "Message-ID",  "MIME-Version",
                                           "Auto-Submitted", "Content-Type"};
#define N_HEADERS (sizeof HEADER_NAMES / sizeof HEADER_NAMES[0])

struct parsed {
    char *raw; /* the writer's output (owned) */
    size_t len;
    char *headers[N_HEADERS]; /* unfolded values, malloc'd */
    char *text, *html;        /* decoded bodies, malloc'd */
    size_t text_len, html_len;
};

static void parsed_free(struct parsed *p)
{
    free(p->raw);
    for (size_t i = 0; i < N_HEADERS; i++)
        free(p->headers[i]);
    free(p->text);
    free(p->html);
    memset(p, 0, sizeof *p);
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = p[i] < 0x80             ? 1
                   : (p[i] & 0xe0) == 0xc0 ? 2
                   : (p[i] & 0xf0) == 0xe0 ? 3
                   : (p[i] & 0xf8) == 0xf0 ? 4
                                           : 0;
        if (l == 0 || i + l > n)
            return 0;
        for (size_t k = 1; k < l; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
        }
        i += l;
    }
    return 1;
}

/* Decodes a header value made of RFC 2047 B words (or plain text) into a malloc'd string
 * (the caller frees); checks each word's length and that it holds whole UTF-8 sequences. */
static char *decode_words(const char *v)
{
    size_t n = strlen(v);
    char *out = calloc(1, n + 1);
    size_t o = 0;

    assert_non_null(out);
    if (strncmp(v, "=?", 2) != 0) {
        memcpy(out, v, n);
        return out;
    }
    for (const char *p = v; *p != '\0';) {
        const char *end;
        size_t dl;
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        if (strncmp(p, "=?UTF-8?B?", 10) != 0)
            fail_msg("not an encoded word: %s", p);
        end = strstr(p + 10, "?=");
        assert_non_null(end);
        if ((size_t)(end + 2 - p) > 75)
            fail_msg("encoded word longer than 75: %.*s", (int)(end + 2 - p), p);
        dl = b64_decode(p + 10, (size_t)(end - p - 10), out + o);
        if (!utf8_valid(out + o, dl))
            fail_msg("an encoded word splits a UTF-8 sequence");
        o += dl;
        p = end + 2;
    }
    return out;
}

/* Writes m and parses it back, checking the properties every message must have. */
static void write_and_parse(const struct email_message *m, struct parsed *p)
{
    const char *body, *line;
    size_t seen = 0;
    char boundary[128], delim[140];

    memset(p, 0, sizeof *p);
    assert_int_equal(email_message_write(m, &p->raw, &p->len), 0);
    assert_non_null(p->raw);
    assert_int_equal(strlen(p->raw), p->len);

    /* CRLF everywhere, no line over 998, no line starting with '.'. */
    for (size_t i = 0; i < p->len; i++) {
        if (p->raw[i] == '\n' && (i == 0 || p->raw[i - 1] != '\r'))
            fail_msg("bare LF at %zu", i);
        if (p->raw[i] == '\r' && (i + 1 >= p->len || p->raw[i + 1] != '\n'))
            fail_msg("bare CR at %zu", i);
    }
    assert_true(p->len >= 2 && p->raw[p->len - 2] == '\r' && p->raw[p->len - 1] == '\n');
    for (line = p->raw; line < p->raw + p->len;) {
        const char *eol = strstr(line, "\r\n");
        assert_non_null(eol);
        assert_true(eol - line <= 998);
        assert_true(line[0] != '.');
        line = eol + 2;
    }

    /* The header block: exactly the expected names, in order, each once. */
    body = strstr(p->raw, "\r\n\r\n");
    assert_non_null(body);
    for (line = p->raw; line < body + 2;) {
        const char *eol = strstr(line, "\r\n");
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        size_t vlen = 0;
        char *v;
        if (eol - line > 78)
            fail_msg("header line of %ld columns", (long)(eol - line));
        if (colon == NULL || seen >= N_HEADERS ||
            strncmp(line, HEADER_NAMES[seen], strlen(HEADER_NAMES[seen])) != 0 ||
            colon - line != (long)strlen(HEADER_NAMES[seen]))
            fail_msg("unexpected header line: %.*s", (int)(eol - line), line);
        v = calloc(1, (size_t)(body - line) + 1);
        assert_non_null(v);
        /* Unfold: a CRLF followed by a space continues the value. */
        for (const char *q = colon + 2;; q += 2) {
            const char *e = strstr(q, "\r\n");
            memcpy(v + vlen, q, (size_t)(e - q));
            vlen += (size_t)(e - q);
            q = e;
            if (e[2] != ' ' || e >= body) {
                line = e + 2;
                break;
            }
        }
        p->headers[seen++] = v;
    }
    assert_int_equal(seen, N_HEADERS);
    assert_string_equal(p->headers[5], "1.0");
    /* RFC 3834: auto-responders (vacation replies, out of office) must not answer. */
    assert_string_equal(p->headers[6], "auto-generated");

    /* The parts. */
    {
        const char *ct = p->headers[7];
        const char *b = strstr(ct, "boundary=\"");
        const char *t, *h, *end;
        assert_int_equal(strncmp(ct, "multipart/alternative;", 22), 0);
        assert_non_null(b);
        b += 10;
        assert_true(strchr(b, '"') - b < 70);
        snprintf(boundary, sizeof boundary, "%.*s", (int)(strchr(b, '"') - b), b);
        snprintf(delim, sizeof delim, "\r\n--%s", boundary);
        t = strstr(body, delim);
        assert_non_null(t);
        assert_int_equal(t, body + 2); /* the first delimiter follows the header block */
        t += strlen(delim);
        assert_int_equal(strncmp(t,
                                 "\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                                 "Content-Transfer-Encoding: base64\r\n\r\n",
                                 strlen("\r\nContent-Type: text/plain; charset=UTF-8\r\n"
                                        "Content-Transfer-Encoding: base64\r\n\r\n")),
                         0);
        t = strstr(t, "\r\n\r\n") + 4;
        h = strstr(t, delim);
        assert_non_null(h);
        p->text = calloc(1, (size_t)(h - t) + 1);
        assert_non_null(p->text);
        for (const char *q = t; q < h; q = strstr(q, "\r\n") + 2)
            assert_true(strstr(q, "\r\n") - q <= 76);
        p->text_len = b64_decode(t, (size_t)(h - t), p->text);
        h += strlen(delim);
        assert_int_equal(strncmp(h, "\r\nContent-Type: text/html; charset=UTF-8\r\n", 41), 0);
        h = strstr(h, "\r\n\r\n") + 4;
        end = strstr(h, delim);
        assert_non_null(end);
        p->html = calloc(1, (size_t)(end - h) + 1);
        assert_non_null(p->html);
        p->html_len = b64_decode(h, (size_t)(end - h), p->html);
        end += strlen(delim);
        assert_string_equal(end, "--\r\n"); /* the closing delimiter ends the message */
    }
}

static struct email_message sample(void)
{
    struct email_message m = {
        .from_name = "cdc-notify",
        .from_addr = "noreply@example.com",
        .to_addr = "ana@example.com",
        .subject = "Welcome to cdc-notify",
        .text_body = "Hello Ana,\nwelcome.\n",
        .html_body = "<p>Hello Ana</p>",
        .message_id = "<abc.123@cdc-notify.example.com>",
        .date_s = 1700000000,
    };
    return m;
}

static void plain_message_round_trips(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    (void)state;

    write_and_parse(&m, &p);
    assert_string_equal(p.headers[0], "Tue, 14 Nov 2023 22:13:20 +0000");
    assert_string_equal(p.headers[1], "\"cdc-notify\" <noreply@example.com>");
    assert_string_equal(p.headers[2], "ana@example.com");
    assert_string_equal(p.headers[3], "Welcome to cdc-notify");
    assert_string_equal(p.headers[4], "<abc.123@cdc-notify.example.com>");
    /* Text in canonical form: LF became CRLF before base64. */
    assert_string_equal(p.text, "Hello Ana,\r\nwelcome.\r\n");
    assert_string_equal(p.html, "<p>Hello Ana</p>");
    parsed_free(&p);
}

static void date_is_rfc5322_utc(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    char *out = NULL;
    size_t len;
    (void)state;

    m.date_s = 0;
    write_and_parse(&m, &p);
    assert_string_equal(p.headers[0], "Thu, 01 Jan 1970 00:00:00 +0000");
    parsed_free(&p);
    m.date_s = 951782400; /* 2000-02-29 */
    write_and_parse(&m, &p);
    assert_string_equal(p.headers[0], "Tue, 29 Feb 2000 00:00:00 +0000");
    parsed_free(&p);
    m.date_s = -1; /* 1969 is fine */
    write_and_parse(&m, &p);
    assert_string_equal(p.headers[0], "Wed, 31 Dec 1969 23:59:59 +0000");
    parsed_free(&p);
    m.date_s = -3000000000; /* 1874: not a date this system writes */
    assert_int_equal(email_message_write(&m, &out, &len), -1);
    assert_null(out);
}

static void header_injection_adds_no_header(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    char *decoded;
    (void)state;

    m.subject = "Hello x\r\nBcc: y@z";
    m.from_name = "x\r\nBcc: y@z\nCc: w@z\r\n\r\nbody";
    write_and_parse(&m, &p); /* fails on any header name but the expected ones */
    decoded = decode_words(p.headers[3]);
    assert_string_equal(decoded, "Hello xBcc: y@z");
    free(decoded);
    assert_null(strstr(p.raw, "\r\nBcc:"));
    assert_null(strstr(p.raw, "\r\nCc:"));
    parsed_free(&p);

    /* Every other control goes too, DEL included. */
    m.subject = "a\tb\x01\x1b[31mc\x7f";
    m.from_name = NULL;
    write_and_parse(&m, &p);
    assert_string_equal(p.headers[3], "ab[31mc");
    assert_string_equal(p.headers[1], "noreply@example.com");
    parsed_free(&p);
}

/* Every message says it is automatic, exactly once, whatever its values. */
static void every_message_is_marked_auto_generated(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    (void)state;

    m.subject = "Auto-Submitted: no";
    m.from_name = "x\r\nAuto-Submitted: no";
    m.text_body = "Auto-Submitted: no\r\n";
    write_and_parse(&m, &p); /* checks the header block holds it once, in its place */
    {
        size_t count = 0;
        for (const char *q = p.raw; (q = strstr(q, "\r\nAuto-Submitted:")) != NULL; q++)
            count++;
        assert_int_equal(count, 1); /* as a header line: once */
    }
    assert_non_null(strstr(p.raw, "\r\nMIME-Version: 1.0\r\nAuto-Submitted: auto-generated\r\n"));
    assert_null(strstr(p.raw, "\r\nAuto-Submitted: no"));
    parsed_free(&p);
}

/* C1 controls and bidi overrides (from a value, or the display name) could disguise what a
 * subject says: they go, like C0 controls. */
static void headers_drop_c1_and_bidi_controls(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    char *decoded;
    (void)state;

    m.subject = "Hi \xe2\x80\xae"
                "moc.live\xe2\x80\xac \xc2\x9b"
                "31m \xe2\x81\xa6x\xe2\x81\xa9 \xc3\xa9";
    m.from_name = "cdc\xe2\x80\xaenotify\xc2\x85";
    write_and_parse(&m, &p);
    decoded = decode_words(p.headers[3]);
    assert_string_equal(decoded, "Hi moc.live 31m x \xc3\xa9");
    free(decoded);
    assert_string_equal(p.headers[1], "\"cdcnotify\" <noreply@example.com>");
    parsed_free(&p);
}

static void check_subject_round_trip(const char *subject, const char *want)
{
    struct email_message m = sample();
    struct parsed p;
    char *decoded;

    m.subject = subject;
    write_and_parse(&m, &p);
    decoded = decode_words(p.headers[3]);
    assert_string_equal(decoded, want != NULL ? want : subject);
    free(decoded);
    /* Folded under 78 columns. */
    {
        const char *s = strstr(p.raw, "\r\nSubject: ") + 2;
        const char *stop = strstr(s, "\r\nMessage-ID:");
        while (s < stop) {
            const char *eol = strstr(s, "\r\n");
            if (eol - s > 78)
                fail_msg("subject line of %ld columns", (long)(eol - s));
            s = eol + 2;
        }
    }
    parsed_free(&p);
}

static void international_subjects_round_trip(void **state)
{
    (void)state;
    /* Portuguese */
    check_subject_round_trip("Aviso de segurança: o e-mail da sua conta no cdc-notify foi "
                             "alterado — ação necessária, João",
                             NULL);
    /* Japanese: 3-byte sequences that must not be split between words */
    check_subject_round_trip(
        "セキュリティのお知らせ：cdc-notify アカウントのメールアドレスが変更されました。"
        "心当たりがない場合はすぐにご連絡ください。",
        NULL);
    /* Emoji: 4-byte sequences (clang-format 14 miscounts their width: left as written) */
    // clang-format off
    check_subject_round_trip("🎉🎉🎉 Welcome 👋🏽 to cdc-notify "
                             "🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀🚀 "
                             "and more "
                             "😀😃😄😁😆😅🤣😂🙂🙃😉😊😇🥰😍🤩😘😗☺😚😙🥲😋😛"
                             "😜"
                             "🤪"
                             "😝"
                             "🤑",
                             NULL);
    // clang-format on
    /* Spanish, short */
    check_subject_round_trip("Se eliminó tu cuenta", NULL);
    /* Invalid UTF-8 becomes U+FFFD rather than broken words */
    check_subject_round_trip("bad \xff\xc3 byte", "bad \xef\xbf\xbd\xef\xbf\xbd byte");
    /* ASCII that looks like an encoded word is encoded, so it reads as written */
    check_subject_round_trip("=?UTF-8?B?SGk=?=", NULL);
}

static void long_ascii_subject_is_folded(void **state)
{
    char subject[600];
    char *p = subject;
    (void)state;

    for (int i = 0; i < 50; i++) {
        memcpy(p, "word1234 ", 9);
        p += 9;
    }
    p[-1] = '\0';
    check_subject_round_trip(subject, NULL);
    /* One 500-character word cannot fold: it goes out as encoded words. */
    memset(subject, 'x', 500);
    subject[500] = '\0';
    check_subject_round_trip(subject, NULL);
    /* Runs of spaces survive folding. */
    check_subject_round_trip("a                                                                   "
                             "   b  c                                                        d  ",
                             NULL);
}

static void huge_subject_stays_within_limits(void **state)
{
    size_t n = 5000;
    char *subject = malloc(n + 1);
    (void)state;

    assert_non_null(subject);
    memset(subject, 'y', n); /* no space to fold at: must become encoded words */
    subject[n] = '\0';
    check_subject_round_trip(subject, NULL);
    free(subject);
}

static void non_ascii_display_name_is_encoded(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    char *decoded, *lt;
    (void)state;

    m.from_name = "Notificações cdc-notify";
    write_and_parse(&m, &p);
    lt = strstr(p.headers[1], " <noreply@example.com>");
    assert_non_null(lt);
    *lt = '\0';
    decoded = decode_words(p.headers[1]);
    assert_string_equal(decoded, "Notificações cdc-notify");
    free(decoded);
    parsed_free(&p);

    /* Escapes count: 40 quotes do not fit a quoted-string under 78 columns. */
    m.from_name =
        "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";
    write_and_parse(&m, &p); /* checks every header line is under 78 columns */
    lt = strstr(p.headers[1], " <noreply@example.com>");
    assert_non_null(lt);
    *lt = '\0';
    decoded = decode_words(p.headers[1]);
    assert_string_equal(decoded, m.from_name);
    free(decoded);
    parsed_free(&p);

    m.from_name = "Say \"hi\" \\ there";
    write_and_parse(&m, &p);
    assert_string_equal(p.headers[1], "\"Say \\\"hi\\\" \\\\ there\" <noreply@example.com>");
    parsed_free(&p);
}

static void bodies_round_trip(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    size_t n = 10000;
    char *big = malloc(n + 1);
    (void)state;

    assert_non_null(big);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + i % 26);
    big[n] = '\0';
    m.text_body = "line1\r\nline2\rline3\n\nçã 日本 🎉\n.leading dot\n";
    m.html_body = big;
    write_and_parse(&m, &p);
    assert_string_equal(p.text, "line1\r\nline2\r\nline3\r\n\r\nçã 日本 🎉\r\n.leading dot\r\n");
    assert_int_equal(p.html_len, n);
    assert_memory_equal(p.html, big, n);
    parsed_free(&p);

    m.text_body = "";
    m.html_body = NULL;
    write_and_parse(&m, &p);
    assert_int_equal(p.text_len, 0);
    assert_int_equal(p.html_len, 0);
    parsed_free(&p);
    free(big);
}

static void boundary_never_occurs_in_bodies(void **state)
{
    struct email_message m = sample();
    struct parsed p;
    char first[128], body[400];
    const char *b;
    (void)state;

    write_and_parse(&m, &p);
    b = strstr(p.headers[7], "boundary=\"") + 10;
    snprintf(first, sizeof first, "%.*s", (int)(strchr(b, '"') - b), b);
    parsed_free(&p);

    /* A body holding the boundary the writer would pick: it picks another. */
    snprintf(body, sizeof body, "see --%s and --%s--\n", first, first);
    m.text_body = body;
    m.html_body = first;
    write_and_parse(&m, &p);
    b = strstr(p.headers[7], "boundary=\"") + 10;
    assert_int_not_equal(strncmp(b, first, strlen(first)) == 0 && b[strlen(first)] == '"', 1);
    assert_memory_equal(p.text, "see --", 6);
    assert_string_equal(p.html, first);
    parsed_free(&p);
}

static void invalid_addresses_are_rejected(void **state)
{
    const char *bad[] = {
        "",
        "ana",
        "ana@",
        "@example.com",
        "ana@@example.com",
        "a@b@example.com",
        "ana lima@example.com",
        "ana@example.com\r\nBcc: y@z",
        "ana@example.com\n",
        "<ana@example.com>",
        "ana@example.com>",
        "Ana <ana@example.com>",
        "ana,bob@example.com",
        "\"ana\"@example.com",
        "ana@exa mple.com",
        ".ana@example.com",
        "ana.@example.com",
        "an..a@example.com",
        "ana@example..com",
        "ana@-example.com",
        "ana@ex\xc3\xa4mple.com",
        "jo\xc3\xa3o@example.com",
        "ana@example.com\t",
    };
    char local[80], addr[300];
    struct email_message m = sample();
    char *out = NULL;
    size_t len = 0;
    (void)state;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (email_address_valid(bad[i]))
            fail_msg("accepted '%s'", bad[i]);
        m.to_addr = bad[i];
        assert_int_equal(email_message_write(&m, &out, &len), -1);
        assert_null(out);
        m = sample();
        m.from_addr = bad[i];
        assert_int_equal(email_message_write(&m, &out, &len), -1);
        m = sample();
    }
    assert_false(email_address_valid(NULL));
    assert_true(email_address_valid("ana@example.com"));
    assert_true(email_address_valid("ana.lima+tag@mail.example.co.uk"));
    assert_true(email_address_valid("o'brien@example.com"));
    assert_true(email_address_valid("noreply@localhost"));

    memset(local, 'a', 64);
    snprintf(local + 64, sizeof local - 64, "@x.io");
    assert_true(email_address_valid(local));
    memset(local, 'a', 65);
    snprintf(local + 65, sizeof local - 65, "@x.io");
    assert_false(email_address_valid(local));
    memset(addr, 'b', sizeof addr);
    memcpy(addr, "a@", 2);
    addr[254] = '\0';
    assert_true(email_address_valid(addr));
    addr[254] = 'b';
    addr[255] = '\0';
    assert_false(email_address_valid(addr));

    m.message_id = "no-angle@x";
    assert_int_equal(email_message_write(&m, &out, &len), -1);
    m.message_id = "<a@b>\r\nBcc: y@z";
    assert_int_equal(email_message_write(&m, &out, &len), -1);
    m.message_id = NULL;
    assert_int_equal(email_message_write(&m, &out, &len), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_message_round_trips),
        cmocka_unit_test(date_is_rfc5322_utc),
        cmocka_unit_test(header_injection_adds_no_header),
        cmocka_unit_test(every_message_is_marked_auto_generated),
        cmocka_unit_test(headers_drop_c1_and_bidi_controls),
        cmocka_unit_test(international_subjects_round_trip),
        cmocka_unit_test(long_ascii_subject_is_folded),
        cmocka_unit_test(huge_subject_stays_within_limits),
        cmocka_unit_test(non_ascii_display_name_is_encoded),
        cmocka_unit_test(bodies_round_trip),
        cmocka_unit_test(boundary_never_occurs_in_bodies),
        cmocka_unit_test(invalid_addresses_are_rejected),
    };
    return cmocka_run_group_tests_name("email_message", tests, NULL, NULL);
}
