"""The Python tests' shared pieces: the check counter (prints cmocka-style lines and a
summary; a failed check fails the test at the end) and the private stack's env file."""
import os
import sys
import time


def load_env():
    """$STACK_DIR/env (written by scripts/stack up) as a dict: URLs, ports, a dev token."""
    path = os.path.join(os.environ["STACK_DIR"], "env")
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("export ") and "=" in line:
                k, v = line[len("export "):].split("=", 1)
                env[k] = v
    return env


class Checks:
    """Counts checks; a failed check is printed at once and fails the test at the end."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []
        self.t0 = time.monotonic()

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print(f"[       OK ] {what}", flush=True)
        else:
            self.failed.append(what)
            print(f"[  FAILED  ] {what}", flush=True)
        return cond

    def eq(self, got, want, what):
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")

    def finish(self):
        total = self.passed + len(self.failed)
        secs = time.monotonic() - self.t0
        print(f"[==========] {self.name}: {total} checks ran ({secs:.1f} s).")
        print(f"[  PASSED  ] {self.passed} checks.")
        if self.failed:
            print(f"[  FAILED  ] {len(self.failed)} checks, listed below:")
            for f in self.failed:
                print(f"[  FAILED  ] {f}")
        if total == 0:
            print("[  FAILED  ] no check ran")
            sys.exit(1)
        sys.exit(1 if self.failed else 0)
