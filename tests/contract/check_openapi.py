#!/usr/bin/env python3
"""Keeps services/userdata/openapi.yaml true to the C code it describes.

Usage: check_openapi.py [PROJECT_SOURCE_DIR]   (default: two levels above this file)

Checks, each against facts read from the C sources (not from a list kept here):
  1. openapi.yaml parses and declares openapi 3.1.x.
  2. The (path, method) pairs of the spec equal those the code routes: the paths compared
     in route() of http_api.c (for the users routes, in users_route(), which route()
     calls) and, per path, the methods of the Allow header the code sends with 405 (for
     the users routes, in admit(), which checks them when the headers are in). HEAD is documented (it is in every Allow). Each path item's x-allow
     must also equal that Allow value verbatim, and its x-responses must hold the 405.
  3. Status codes: the set of codes http_api.c passes to send_problem / send_body /
     send_json / send_user / serve_text equals the union of the codes the spec documents
     (operation responses plus path-level x-responses). Per operation: every
     /api/v1/users operation documents the codes of authorize() and the 413 of the body
     size check (both in admit()); every operation with a request body documents the error codes of
     write_user() and parse_body().
  4. The User schema's properties (and required list) equal the keys user_json_from_user()
     emits in user_json.c, and the request schema UserFields' properties equal the
     writable plus read-only field names user_json_parse() accepts.

When the C code changes shape so that a fact cannot be extracted, the check fails and
says so rather than passing silently. Needs PyYAML (Debian: python3-yaml).
"""

import os
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    print("check_openapi: PyYAML is missing (apt-get install python3-yaml)", file=sys.stderr)
    sys.exit(2)

HTTP_METHODS = ("get", "head", "post", "put", "patch", "delete", "options", "trace")
errors = []


def fail(msg):
    errors.append(msg)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def strip_comments(c):
    c = re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group(0)), c, flags=re.S)
    return re.sub(r"//[^\n]*", "", c)


def functions(c):
    """Maps each top-level function name to its body (text between the outer braces)."""
    out = {}
    for m in re.finditer(r"^[A-Za-z_][^;{}()]*?\b(\w+)\s*\([^;{}]*\)\s*\{", c, re.M):
        depth, i = 1, m.end()
        while depth and i < len(c):
            depth += {"{": 1, "}": -1}.get(c[i], 0)
            i += 1
        out[m.group(1)] = c[m.end():i - 1]
    return out


def calls(text, names):
    """Yields the argument text of each call to one of names (balanced parentheses)."""
    for m in re.finditer(r"\b(%s)\s*\(" % "|".join(names), text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        yield m.group(1), text[m.end():i - 1]


SENDERS = ("send_problem", "send_body", "send_json", "send_user", "serve_text")


def codes_sent(text):
    codes = set()
    for _, args in calls(text, SENDERS):
        codes |= {int(x) for x in re.findall(r"\b([1-5][0-9][0-9])\b", args)}
    return codes


def allow_literals(text):
    return [re.fullmatch(r'.*"([^"]*)"\s*', a, re.S).group(1)
            for _, a in calls(text, ("method_not_allowed",)) if '"' in a]


def norm_path(p):
    return re.sub(r"\{[^}/]+\}", "{}", p)


def code_routes(c, defines, fns):
    """Returns {path template: (Allow value, whether serve_users handles it)}."""
    route = fns.get("route")
    admit = fns.get("admit")
    allow_fn = fns.get("users_allow")
    users_route = fns.get("users_route")
    text = fns.get("serve_text")
    if (route is None or admit is None or allow_fn is None or text is None
            or users_route is None):
        fail("http_api.c: cannot find route(), admit(), users_allow(), users_route() or "
             "serve_text(); update the checker")
        return {}
    text_allow = set(allow_literals(text))
    # admit() answers 405 with what users_allow() returns for the collection (id NULL) and
    # for an item.
    if not re.search(r"users_allow\(\s*id\b[\s\S]*?method_not_allowed\(\s*conn\s*,\s*req\s*,"
                     r"\s*allow\s*\)", admit):
        fail("http_api.c: admit() does not answer 405 with users_allow(); update the checker")
    users_allow = {}
    for m in re.finditer(r"if\s*\(\s*id\s*([!=])=\s*NULL[^\n]*\n?\s*return\s*\"([^\"]*)\"",
                         allow_fn):
        users_allow["item" if m.group(1) == "!" else "collection"] = m.group(2)
    if set(users_allow) != {"item", "collection"}:
        fail("http_api.c: cannot find both Allow values in users_allow(); update the checker")

    routes = {}
    # The users routes: route() hands what users_route() matches to serve_users().
    if re.search(r"if\s*\(\s*users_route\(\s*url\b[^\n]*\n?[^\n]*serve_users\(", route):
        for m in re.finditer(r"\b(strn?cmp)\(\s*url\s*,\s*(\w+)", users_route):
            path = defines.get(m.group(2))
            if path is None:
                fail("http_api.c: users_route() compares url with unknown %s" % m.group(2))
                continue
            which = "item" if m.group(1) == "strncmp" else "collection"
            routes[path + ("{id}" if which == "item" else "")] = (users_allow.get(which, "?"),
                                                                  True)
        if len(routes) != 2:
            fail("http_api.c: cannot find the collection and item paths in users_route(); "
                 "update the checker")
        route = re.sub(r"if\s*\(\s*users_route\([^;]*;", "", route)  # the other routes' text
    # Each route is an `if (str[n]cmp(url, X...) == 0 ...)` followed by its handler code up
    # to the next such if (or the end of route()).
    heads = list(re.finditer(r"if\s*\(\s*(strn?cmp)\(\s*url\s*,\s*(\"[^\"]*\"|\w+)", route))
    if not heads and not routes:
        fail("http_api.c: route() compares no url; update the checker")
    for k, m in enumerate(heads):
        block = route[m.end():heads[k + 1].start() if k + 1 < len(heads) else len(route)]
        lit = m.group(2)
        path = lit.strip('"') if lit.startswith('"') else defines.get(lit)
        if path is None:
            fail("http_api.c: route() compares url with unknown %s" % lit)
            continue
        if m.group(1) == "strncmp":
            path += "{id}"
        allows = set(allow_literals(block))
        if "serve_users(" in block:
            which = "collection" if re.search(r"serve_users\([^)]*NULL\s*\)", block) else "item"
            allows.add(users_allow.get(which, "?"))
        if "serve_text(" in block:
            allows |= text_allow
        if len(allows) != 1:
            fail("http_api.c: route %s: cannot tell its Allow value (found %s); update the "
                 "checker" % (path, sorted(allows)))
            continue
        routes[path] = (allows.pop(), "serve_users(" in block)
    return routes


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..", "..")
    svc = os.path.join(root, "services", "userdata")
    spec_path = os.path.join(svc, "openapi.yaml")
    api_c = strip_comments(read(os.path.join(svc, "src", "transport", "http_api.c")))
    json_c = strip_comments(read(os.path.join(svc, "src", "transport", "user_json.c")))

    # 1. Parse, version.
    try:
        spec = yaml.safe_load(read(spec_path))
    except yaml.YAMLError as e:
        print("check_openapi: %s does not parse: %s" % (spec_path, e), file=sys.stderr)
        return 1
    if not isinstance(spec, dict) or not re.fullmatch(r"3\.1\.\d+", str(spec.get("openapi"))):
        fail("openapi must be 3.1.x, is %r" % (spec.get("openapi") if isinstance(spec, dict)
                                               else spec))
        return report()
    paths = spec.get("paths") or {}
    schemas = (spec.get("components") or {}).get("schemas") or {}

    # 2. Paths and methods.
    defines = dict(re.findall(r'#define\s+(\w+)\s+"([^"]*)"', api_c))
    fns = functions(api_c)
    routes = code_routes(api_c, defines, fns)
    code_ops = {(norm_path(p), meth.strip().lower())
                for p, (allow, _) in routes.items() for meth in allow.split(",")}
    spec_ops = {(norm_path(p), meth) for p, item in paths.items() for meth in item
                if meth in HTTP_METHODS}
    for p, meth in sorted(code_ops - spec_ops):
        fail("spec lacks %s %s, which the code routes" % (meth.upper(), p))
    for p, meth in sorted(spec_ops - code_ops):
        fail("spec documents %s %s, which the code does not route" % (meth.upper(), p))
    by_norm = {norm_path(p): allow for p, (allow, _) in routes.items()}
    for p, item in paths.items():
        want = by_norm.get(norm_path(p))
        if want is not None and item.get("x-allow") != want:
            fail("%s: x-allow is %r, the code sends Allow: %s" % (p, item.get("x-allow"), want))

    # Every routed path answers other methods with method_not_allowed()'s code.
    mna = codes_sent(fns.get("method_not_allowed", ""))
    if len(mna) != 1:
        fail("http_api.c: cannot find the status of method_not_allowed(); update the checker")
    for p, item in paths.items():
        have = {int(k) for k in (item.get("x-responses") or {})}
        if norm_path(p) in by_norm and not mna <= have:
            fail("%s: x-responses must document %s (other methods)" % (p, sorted(mna)))

    # 3. Status codes.
    code_codes = codes_sent(api_c)
    if not code_codes:
        fail("http_api.c: found no status codes in send_* calls; update the checker")
    documented = set()
    op_codes = {}
    for p, item in paths.items():
        for key in (item.get("x-responses") or {}):
            documented.add(int(key))
        for meth in item:
            if meth not in HTTP_METHODS:
                continue
            keys = (item[meth] or {}).get("responses") or {}
            if "default" in keys:
                fail("%s %s: use explicit codes, not default" % (meth.upper(), p))
            codes = {int(k) for k in keys if str(k).isdigit()}
            op_codes[(p, meth)] = (codes, item[meth])
            documented |= codes
    for code in sorted(code_codes - documented):
        fail("status %d is sent by http_api.c but documented for no operation" % code)
    for code in sorted(documented - code_codes):
        fail("status %d is documented but http_api.c never sends it" % code)

    users_paths = {norm_path(p) for p, (_, is_users) in routes.items() if is_users}
    gate = codes_sent(fns.get("authorize", ""))
    gate |= codes_sent("\n".join(l for l in fns.get("admit", "").splitlines()
                                  if "too_large" in l or "send_problem" in l and "413" in l))
    if not {401, 403, 413} <= gate:
        fail("http_api.c: cannot find the 401/403/413 of authorize() and the size check; "
             "update the checker")
    body_errors = {c for c in codes_sent(fns.get("write_user", "") + fns.get("parse_body", ""))
                   if c >= 400}
    if not {400, 415, 422} <= body_errors:
        fail("http_api.c: cannot find the 400/415/422 of write_user()/parse_body(); update "
             "the checker")
    for (p, meth), (codes, op) in sorted(op_codes.items()):
        if norm_path(p) in users_paths:
            for code in sorted(gate - codes):
                fail("%s %s: does not document %d (token / body size checks)" %
                     (meth.upper(), p, code))
        if "requestBody" in op:
            for code in sorted(body_errors - codes):
                fail("%s %s: has a body but does not document %d" % (meth.upper(), p, code))

    # 4. User properties vs user_json_from_user; request properties vs user_json_parse.
    emit = functions(json_c).get("user_json_from_user", "")
    keys = re.findall(r'cJSON_Add\w+ToObject\(\s*o\s*,\s*"(\w+)"', emit)
    keys += re.findall(r'add_text_or_null\(\s*o\s*,\s*"(\w+)"', emit)
    if not keys:
        fail("user_json.c: found no keys in user_json_from_user(); update the checker")
    user = schemas.get("User") or {}
    props = set((user.get("properties") or {}).keys())
    if props != set(keys):
        fail("User properties %s differ from the keys user_json_from_user emits %s "
             "(missing: %s, extra: %s)" % (sorted(props), sorted(set(keys)),
                                           sorted(set(keys) - props), sorted(props - set(keys))))
    if set(user.get("required") or []) != set(keys):
        fail("User.required must list every emitted key (all are always present)")

    writable = re.findall(r'\{\s*"(\w+)"\s*,\s*USER_F_\w+', json_c)
    m = re.search(r"read_only\[\]\s*=\s*\{([^}]*)\}", json_c)
    read_only = re.findall(r'"(\w+)"', m.group(1)) if m else []
    if not writable or not read_only:
        fail("user_json.c: cannot find the writable[] / read_only[] field names; update the "
             "checker")
    fields = schemas.get("UserFields") or {}
    fprops = set((fields.get("properties") or {}).keys())
    if fprops != set(writable) | set(read_only):
        fail("UserFields properties %s differ from what user_json_parse accepts %s" %
             (sorted(fprops), sorted(set(writable) | set(read_only))))
    if fields.get("additionalProperties") is not False:
        fail("UserFields must say additionalProperties: false (unknown fields are 422)")
    for name in ("UserCreate", "UserReplace", "UserPatch"):
        if (schemas.get(name) or {}).get("$ref") != "#/components/schemas/UserFields":
            fail("%s must be a $ref to UserFields" % name)

    return report(len(code_ops), len(code_codes), len(set(keys)))


def report(n_ops=0, n_codes=0, n_keys=0):
    if errors:
        for e in errors:
            print("check_openapi: FAIL: " + e, file=sys.stderr)
        return 1
    print("check_openapi: ok (%d operations, %d status codes, %d User properties)" %
          (n_ops, n_codes, n_keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
