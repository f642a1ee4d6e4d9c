/* utf8: strict UTF-8 checks for text that crosses the service's edge. */
#ifndef USERDATA_ENTITIES_UTF8_H
#define USERDATA_ENTITIES_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF)
 * and holds no NUL byte. */
bool utf8_valid(const char *s, size_t len);

/* Number of code points in a valid UTF-8 string. */
size_t utf8_codepoints(const char *s);

/* True when the valid UTF-8 string s has a C0 control character, DEL or a C1 control
 * character; tab and newline count unless allow_newlines (for multi-line text). */
bool utf8_has_controls(const char *s, bool allow_newlines);

#endif
