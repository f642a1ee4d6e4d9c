#!/usr/bin/env python3
"""Negative control runner: runs an e2e test script in a mode that breaks what it guards
(set by the environment given here), and passes only when that script FAILS, with every
named check among its failures. A test that cannot fail would pass its broken mode and so
fail this one.

Usage: expect_caught.py SCRIPT VAR=VALUE... -- CHECK-TEXT...
"""
import os
import subprocess
import sys

args = sys.argv[1:]
if "--" not in args or len(args) < 3:
    sys.exit("usage: expect_caught.py SCRIPT VAR=VALUE... -- CHECK-TEXT...")
cut = args.index("--")
script, assigns, must = args[0], args[1:cut], args[cut + 1:]
env = dict(os.environ)
for a in assigns:
    k, _, v = a.partition("=")
    env[k] = v
print(f"negative control: {os.path.basename(script)} with {' '.join(assigns)}", flush=True)
r = subprocess.run([sys.executable, script], env=env, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, text=True, errors="replace")
out = r.stdout
failed = [ln for ln in out.splitlines() if "[  FAILED  ]" in ln]
print("\n".join(out.splitlines()[-40:]), flush=True)
problems = []
if r.returncode == 0:
    problems.append("the script passed in its broken mode: it cannot catch what it guards")
for m in must:
    if not any(m in ln for ln in failed):
        problems.append(f"no failed check contains {m!r}")
print("", flush=True)
for p in problems:
    print(f"[  FAILED  ] {p}", flush=True)
if problems:
    print(f"expect_caught: FAILED ({len(problems)} problem(s))", flush=True)
    sys.exit(1)
print(f"[       OK ] the script failed (exit {r.returncode}) on: {'; '.join(must)}")
print("expect_caught: 1 passed, 0 failed", flush=True)
