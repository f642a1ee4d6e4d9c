#!/usr/bin/env node
// Lints a service Dockerfile (no Docker engine needed):
//
//   node tests/k8s/dockerfile-lint.mjs --dockerfile services/userdata/Dockerfile \
//        --service userdata [--binary build/services/userdata/userdata] \
//        [--env USERDATA_MIGRATIONS_DIR=/usr/share/userdata/migrations ...]
//   node tests/k8s/dockerfile-lint.mjs --dockerfile k8s/connector-register/Dockerfile --tools-only
//
// Runtime stage (the last FROM): based on debian:bookworm-slim; installs no -dev package
// and no compiler/build tool; sets a numeric non-root USER; no HEALTHCHECK anywhere (the
// Kubernetes probes own health). Build stage (service images): debian:bookworm, builds only
// the service's own target. Every --env NAME=VALUE must be set by an ENV of the runtime
// stage, and a VALUE under /usr/share/<service> must be a COPY destination. With --binary,
// every shared library the built binary needs (ELF NEEDED, objdump -p) must come from a
// package the runtime stage installs (mapped with dpkg -S on this Debian 12 machine), or
// from one that bookworm-slim already has (libc6, Essential or Priority: required).
// When apt-cache is there, every runtime package must exist in Debian 12.
//
// Exit 0: clean; 1: findings (each printed); 2: usage.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

const args = { env: [] };
for (let i = 2; i < process.argv.length; i++) {
    const a = process.argv[i];
    const v = () => process.argv[++i];
    if (a === '--dockerfile') args.dockerfile = v();
    else if (a === '--service') args.service = v();
    else if (a === '--binary') args.binary = v();
    else if (a === '--env') args.env.push(v());
    else if (a === '--tools-only') args.toolsOnly = true;
    else {
        console.error(`dockerfile-lint: unknown argument ${a}`);
        process.exit(2);
    }
}
if (!args.dockerfile || (!args.service && !args.toolsOnly)) {
    console.error('usage: dockerfile-lint.mjs --dockerfile FILE (--service NAME [--binary FILE] [--env K=V]... | --tools-only)');
    process.exit(2);
}

const name = args.dockerfile;
if (!fs.existsSync(name)) {
    console.log(`FAIL ${name}: no such file`);
    process.exit(1);
}
const problems = [];
const fail = (msg) => problems.push(msg);

// Logical instructions: comments dropped, continuation lines joined.
const instructions = [];
{
    let cur = '';
    for (const raw of fs.readFileSync(name, 'utf8').split('\n')) {
        const line = raw.trim();
        if (cur === '' && (line === '' || line.startsWith('#'))) continue;
        if (line.startsWith('#')) continue;
        if (line.endsWith('\\')) {
            cur += `${line.slice(0, -1)} `;
            continue;
        }
        cur += line;
        if (cur.trim()) {
            const m = /^(\w+)\s+([\s\S]*)$/.exec(cur.trim());
            if (m) instructions.push({ op: m[1].toUpperCase(), arg: m[2].trim() });
        }
        cur = '';
    }
}
const stages = [];
for (const ins of instructions) {
    if (ins.op === 'FROM') stages.push({ from: ins.arg, ins: [] });
    else if (stages.length) stages[stages.length - 1].ins.push(ins);
}
if (stages.length === 0) {
    console.log(`FAIL ${name}: no FROM`);
    process.exit(1);
}
for (const ins of instructions) if (ins.op === 'HEALTHCHECK') fail(`HEALTHCHECK ${ins.arg}: health is the Kubernetes probes' job`);

const runtime = stages[stages.length - 1];
const runtimeImage = runtime.from.split(/\s+/)[0];
if (runtimeImage !== 'debian:bookworm-slim') fail(`runtime stage FROM ${runtimeImage}, want debian:bookworm-slim`);

// Packages installed by apt-get install in a stage.
function aptPackages(stage) {
    const pkgs = [];
    for (const ins of stage.ins.filter((i) => i.op === 'RUN')) {
        for (const part of ins.arg.split(/&&|;|\|\|/)) {
            const words = part.trim().split(/\s+/);
            const at = words.findIndex((w, k) => (w === 'apt-get' || w === 'apt') && words.slice(k + 1).includes('install'));
            if (at < 0) continue;
            const rest = words.slice(words.indexOf('install', at) + 1);
            pkgs.push(...rest.filter((w) => w && !w.startsWith('-') && !w.includes('=') && /^[a-z0-9][a-z0-9+.-]+$/.test(w)));
        }
    }
    return pkgs;
}
const runtimePkgs = aptPackages(runtime);
const BUILD_TOOLS = new Set(['build-essential', 'gcc', 'g++', 'cc', 'clang', 'make', 'cmake', 'ninja-build', 'pkg-config', 'pkgconf', 'autoconf', 'automake', 'libtool', 'binutils', 'cpp']);
for (const p of runtimePkgs) {
    if (p.endsWith('-dev')) fail(`runtime stage installs the -dev package ${p}`);
    if (BUILD_TOOLS.has(p) || /^(gcc|g\+\+|clang|cpp)-\d+$/.test(p)) fail(`runtime stage installs the build tool ${p}`);
}

// USER: the last one of the runtime stage, numeric and not root.
const users = runtime.ins.filter((i) => i.op === 'USER');
if (users.length === 0) fail('runtime stage sets no USER (it would run as root)');
else {
    const u = users[users.length - 1].arg.split(':')[0];
    if (!/^\d+$/.test(u)) fail(`USER ${u}: not numeric (runAsNonRoot cannot verify a name)`);
    else if (Number(u) === 0) fail('USER 0 is root');
}

// ENV of the runtime stage (both "ENV K=V K2=V2" and "ENV K V").
const env = {};
for (const ins of runtime.ins.filter((i) => i.op === 'ENV')) {
    const pairs = ins.arg.match(/[A-Za-z_][A-Za-z0-9_]*=("[^"]*"|\S*)/g);
    if (pairs) for (const p of pairs) env[p.slice(0, p.indexOf('='))] = p.slice(p.indexOf('=') + 1).replace(/^"|"$/g, '');
    else {
        const [k, ...v] = ins.arg.split(/\s+/);
        env[k] = v.join(' ');
    }
}
const copies = runtime.ins.filter((i) => i.op === 'COPY').map((i) => i.arg.split(/\s+/).filter((w) => !w.startsWith('--')));
const copyDests = copies.map((c) => c[c.length - 1].replace(/\/$/, ''));
for (const kv of args.env) {
    const k = kv.slice(0, kv.indexOf('='));
    const want = kv.slice(kv.indexOf('=') + 1);
    if (env[k] !== want) fail(`runtime ENV ${k}=${env[k] ?? '(unset)'}, want ${want}`);
    if (args.service && want.startsWith(`/usr/share/${args.service}/`) && !copyDests.includes(want.replace(/\/$/, '')))
        fail(`${k}=${want}: nothing is copied there (COPY destinations: ${copyDests.join(', ')})`);
}

if (args.service) {
    // The build stage builds the service's own target only, with the service's CMake commands.
    const build = stages.slice(0, -1);
    if (build.length === 0) fail('no build stage (multi-stage: build, then runtime)');
    else {
        if (build[0].from.split(/\s+/)[0] !== 'debian:bookworm') fail(`build stage FROM ${build[0].from}, want debian:bookworm`);
        const runs = build.flatMap((s) => s.ins.filter((i) => i.op === 'RUN').map((i) => i.arg)).join('\n');
        if (!/cmake -S \. -B build -DBUILD_TESTING=OFF/.test(runs)) fail('build stage does not configure with cmake -S . -B build -DBUILD_TESTING=OFF');
        if (!new RegExp(`cmake --build build --target ${args.service}(\\s|$)`).test(runs)) fail(`build stage does not build --target ${args.service}`);
    }
    const bin = copies.find((c) => c.length >= 2 && c[c.length - 1] === `/usr/local/bin/${args.service}`);
    if (!bin) fail(`the binary is not copied to /usr/local/bin/${args.service}`);
    const ep = runtime.ins.filter((i) => i.op === 'ENTRYPOINT').pop();
    if (!ep || !ep.arg.includes(`/usr/local/bin/${args.service}`)) fail(`ENTRYPOINT is not /usr/local/bin/${args.service}`);
}

function sh(cmd, argv) {
    try {
        return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
        return null;
    }
}

// Runtime packages exist in Debian 12 (when apt-cache is here).
if (runtimePkgs.length && sh('apt-cache', ['--version']) !== null) {
    // one call; the answer has a "name:" section per known package
    const out = sh('apt-cache', ['policy', ...runtimePkgs]) || '';
    const candidate = {};
    for (const sec of out.split(/^(?=\S+:\s*$)/m)) {
        const m = /^(\S+):\s*\n[\s\S]*?Candidate: (\S+)/.exec(sec);
        if (m) candidate[m[1]] = m[2];
    }
    for (const p of runtimePkgs)
        if (!candidate[p] || candidate[p] === '(none)') fail(`runtime package ${p} is not installable from the Debian apt sources here`);
}

// In every Debian image: libc6, and the Essential or Priority: required packages.
const IN_SLIM = (p) => p === 'libc6' || /^(yes\s+\S+|\S*\s+required)$/.test((sh('dpkg-query', ['-W', '-f=${Essential} ${Priority}', p]) || '').trim());

// The binary's direct shared libraries are all provided.
if (args.binary) {
    if (!fs.existsSync(args.binary)) fail(`--binary ${args.binary} does not exist`);
    else {
        const dump = sh('objdump', ['-p', args.binary]);
        if (dump === null) fail(`objdump -p ${args.binary} failed`);
        else {
            const needed = [...dump.matchAll(/^\s*NEEDED\s+(\S+)/gm)].map((m) => m[1]);
            for (const so of needed) {
                const owners = (sh('dpkg', ['-S', `*/${so}`]) || '')
                    .split('\n')
                    .filter(Boolean)
                    .map((l) => l.slice(0, l.indexOf(':')).split(',').map((s) => s.trim().replace(/:.*$/, '')))
                    .flat()
                    .filter((p) => !p.endsWith('-dev'));
                if (owners.length === 0) {
                    fail(`${so} (needed by ${args.binary}): no Debian package owns it here`);
                    continue;
                }
                const ok = owners.some((p) => runtimePkgs.includes(p) || IN_SLIM(p));
                if (!ok) fail(`${so} (needed by ${args.binary}) comes from ${[...new Set(owners)].join('/')}, which the runtime stage does not install`);
                else console.log(`  ${so}: ${[...new Set(owners)].join('/')}`);
            }
        }
    }
}

for (const p of problems) console.log(`FAIL ${name}: ${p}`);
if (problems.length) {
    console.log(`dockerfile-lint: ${name}: ${problems.length} problem(s)`);
    process.exit(1);
}
console.log(`dockerfile-lint: ${name}: OK (${stages.length} stage(s); runtime packages: ${runtimePkgs.join(' ')})`);
