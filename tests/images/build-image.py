#!/usr/bin/env python3
"""build-image.py: carries out a Dockerfile's steps without a container engine.

This machine has no Docker engine and no registry to pull debian:bookworm from, so the
Dockerfiles are checked by doing what `docker build` would do, step by step, in Debian
roots made by debootstrap from Debian's own archive:

  FROM debian:bookworm[-slim] [AS name]   a fresh debootstrap --variant=minbase bookworm
  RUN cmd                                  /bin/sh -c cmd in a chroot (with /proc, /dev and
                                           the host's resolv.conf), ENV and WORKDIR applied
  WORKDIR, ENV, USER, EXPOSE, ENTRYPOINT, CMD, ARG   recorded as docker does
  COPY [--from=stage] src... dest          from the build context (or a stage's root)

The last stage's root is left in OUT/rootfs with OUT/manifest.json (env, user, workdir,
entrypoint, cmd, exposed ports), for tests/images/test_image.sh to run. Only what the
project's Dockerfiles use is supported; anything else is an error, never skipped.

Caches (in --cache, default <repo>/.cache/images): the debootstrapped base as a tarball,
and each stage's root after its first RUN, keyed by the FROM image and that RUN's text
(the two services' build stages share it).

Usage: build-image.py --dockerfile FILE --context DIR --out DIR [--cache DIR]
Needs root (debootstrap, chroot, mount).
"""
import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

MIRROR = os.environ.get("IMAGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASES = {"debian:bookworm": "bookworm", "debian:bookworm-slim": "bookworm"}


def log(msg):
    print(f"build-image: {msg}", flush=True)


def die(msg):
    print(f"build-image: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def parse(path):
    """The Dockerfile as (instruction, argument text) pairs, continuations joined."""
    steps, cur = [], ""
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not cur and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if cur and line.lstrip().startswith("#"):
                continue  # a comment inside a continued instruction
            if line.endswith("\\"):
                cur += line[:-1] + " "
                continue
            cur += line
            word, _, rest = cur.strip().partition(" ")
            steps.append((word.upper(), rest.strip()))
            cur = ""
    if cur:
        die(f"{path}: the last instruction ends with a backslash")
    return steps


def run(cmd, **kw):
    r = subprocess.run(cmd, **kw)
    if r.returncode != 0:
        die(f"{' '.join(map(str, cmd))}: exit {r.returncode}")
    return r


class Chroot:
    """Mounts /proc and /dev into root for the duration of a RUN."""

    def __init__(self, root):
        self.root = root
        self.mounted = []

    def __enter__(self):
        for sub, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--bind", "/dev"])):
            target = os.path.join(self.root, sub)
            os.makedirs(target, exist_ok=True)
            run(["mount", *args, target])
            self.mounted.append(target)
        shutil.copyfile("/etc/resolv.conf", os.path.join(self.root, "etc/resolv.conf"))
        return self

    def __exit__(self, *exc):
        for target in reversed(self.mounted):
            subprocess.run(["umount", "-l", target])
        return False


def base_tarball(cache, suite):
    tar = os.path.join(cache, f"{suite}-minbase.tar")
    if os.path.exists(tar):
        return tar
    tmp = os.path.join(cache, f"{suite}-minbase.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap --variant=minbase {suite} ({MIRROR})")
    t0 = time.monotonic()
    run(["debootstrap", "--variant=minbase", suite, tmp, MIRROR], stdout=subprocess.DEVNULL)
    run(["tar", "-C", tmp, "-cf", tar + ".part", "."])
    os.replace(tar + ".part", tar)
    shutil.rmtree(tmp)
    log(f"base ready in {time.monotonic() - t0:.0f}s")
    return tar


def unpack(tar, root):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    run(["tar", "-C", root, "-xf", tar])


def copy_into(src, dest_root, dest, workdir):
    """COPY semantics for a file or a directory's contents."""
    if not dest.startswith("/"):
        dest = os.path.join(workdir, dest)
    target = os.path.join(dest_root, dest.lstrip("/"))
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
        shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True)
    elif os.path.isfile(src):
        if dest.endswith("/"):
            os.makedirs(target, exist_ok=True)
            target = os.path.join(target, os.path.basename(src))
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)
    else:
        die(f"COPY: {src} does not exist")


def parse_env(text):
    env = {}
    for tok in shlex.split(text):
        if "=" not in tok:
            die(f"ENV {text!r}: only the KEY=VALUE form is supported")
        k, v = tok.split("=", 1)
        env[k] = v
    return env


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dockerfile", required=True)
    ap.add_argument("--context", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache")
    a = ap.parse_args()
    if os.geteuid() != 0:
        die("needs root (debootstrap, chroot, mount)")
    context = os.path.abspath(a.context)
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    cache = os.path.abspath(a.cache or os.environ.get("IMAGE_CACHE") or
                            os.path.join(repo, ".cache", "images"))
    out = os.path.abspath(a.out)
    os.makedirs(cache, exist_ok=True)
    os.makedirs(out, exist_ok=True)

    stages = {}  # name or index -> root
    st = None
    t0 = time.monotonic()
    for word, arg in parse(a.dockerfile):
        if word == "FROM":
            parts = arg.split()
            image = parts[0]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            if image not in BASES:
                die(f"FROM {image}: only {', '.join(BASES)} are supported")
            st = {"name": name, "image": image, "root": os.path.join(out, f"stage-{name}"),
                  "env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                  "workdir": "/", "user": "root", "entrypoint": None, "cmd": None,
                  "expose": [], "runs": 0}
            stages[name] = st
            unpack(base_tarball(cache, BASES[image]), st["root"])
            log(f"stage {name}: FROM {image}")
        elif st is None:
            if word not in ("ARG",):
                die(f"{word} before FROM")
        elif word == "RUN":
            key = hashlib.sha256(f"{st['image']}\n{arg}".encode()).hexdigest()[:16]
            snap = os.path.join(cache, f"layer-{key}.tar")
            if st["runs"] == 0 and os.path.exists(snap):
                log(f"stage {st['name']}: RUN (cached layer {key})")
                unpack(snap, st["root"])
            else:
                log(f"stage {st['name']}: RUN {arg[:100]}{'...' if len(arg) > 100 else ''}")
                exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in st["env"].items())
                script = f"set -e\n{exports}cd {shlex.quote(st['workdir'])}\n{arg}\n"
                with Chroot(st["root"]):
                    run(["chroot", st["root"], "/bin/sh", "-c", script],
                        env={"PATH": st["env"]["PATH"], "HOME": "/root", "LANG": "C.UTF-8"})
                if st["runs"] == 0:
                    run(["tar", "-C", st["root"], "-cf", snap + ".part", "."])
                    os.replace(snap + ".part", snap)
            st["runs"] += 1
        elif word == "WORKDIR":
            st["workdir"] = arg if arg.startswith("/") else os.path.join(st["workdir"], arg)
            os.makedirs(os.path.join(st["root"], st["workdir"].lstrip("/")), exist_ok=True)
        elif word == "ENV":
            st["env"].update(parse_env(arg))
        elif word == "USER":
            st["user"] = arg
        elif word == "EXPOSE":
            st["expose"] += arg.split()
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                val = json.loads(arg)
            except json.JSONDecodeError:
                die(f"{word} {arg!r}: only the JSON (exec) form is supported")
            st["entrypoint" if word == "ENTRYPOINT" else "cmd"] = val
        elif word == "COPY":
            toks = shlex.split(arg)
            src_root = context
            if toks[0].startswith("--from="):
                frm = toks.pop(0)[len("--from="):]
                if frm not in stages:
                    die(f"COPY --from={frm}: no such stage")
                src_root = stages[frm]["root"]
            *srcs, dest = toks
            for s in srcs:
                copy_into(os.path.join(src_root, s.lstrip("/")), st["root"], dest, st["workdir"])
            log(f"stage {st['name']}: COPY {arg}")
        elif word == "ARG":
            pass
        else:
            die(f"unsupported instruction {word}")
    if st is None:
        die("no FROM")
    final = os.path.join(out, "rootfs")
    shutil.rmtree(final, ignore_errors=True)
    os.rename(st["root"], final)
    for name, s in stages.items():
        if s is not st:
            shutil.rmtree(s["root"], ignore_errors=True)
    manifest = {k: st[k] for k in ("image", "env", "workdir", "user", "entrypoint", "cmd",
                                   "expose")}
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    log(f"image in {final} ({time.monotonic() - t0:.0f}s); manifest {out}/manifest.json")


if __name__ == "__main__":
    main()
