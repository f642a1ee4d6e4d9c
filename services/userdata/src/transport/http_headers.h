/* http_headers: parsers for the HTTP header values the API acts on. */
#ifndef USERDATA_TRANSPORT_HTTP_HEADERS_H
#define USERDATA_TRANSPORT_HTTP_HEADERS_H

#include <stdbool.h>

#include "interactors/users.h"

/* Parses an If-Match value: NULL -> NONE; "*" -> ANY; a list of strong ETags "1", "2"
 * -> LIST. Weak ETags (W/"1") never match (RFC 9110 13.1.1), nor does a tag that is not
 * byte for byte one the server sends ("01" is not "1"). Returns false when the value is
 * malformed or lists more than USERS_IF_MATCH_MAX tags. */
bool http_headers_parse_if_match(const char *value, struct users_if_match *out);

/* True when the Content-Type value names media_type (case-insensitive), with optional
 * parameters of which only charset=utf-8 is accepted. NULL value -> false. */
bool http_headers_content_type_is(const char *value, const char *media_type);

#endif
