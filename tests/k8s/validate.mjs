#!/usr/bin/env node
// Offline checks of the Kubernetes manifests in k8s/ (DESIGN.md section 10).
//
//   node tests/k8s/validate.mjs --repo . --overlay dev [--external-secret a,b]
//   node tests/k8s/validate.mjs --repo . --overlay dev --connector-config connector-config
//
// 1. Renders k8s/overlays/<overlay> with kustomize: $KUSTOMIZE (a command line such as
//    "kustomize build"), else `kubectl kustomize` when kubectl bundles kustomize v5, else
//    `kustomize build`. No cluster is contacted. No kustomize at all: exit 77 (ctest SKIP).
// 2. Validates every rendered object against the Kubernetes OpenAPI schemas of the npm
//    package kubernetes-models (precompiled ajv validators): wrong types, missing required
//    fields and unknown kinds fail.
// 3. Project rules: our images (userdata, push-email, connector-register) come from
//    localhost:32000 with an explicit tag; every workload runs as a numeric non-root user
//    with RuntimeDefault seccomp, no privilege escalation, all capabilities dropped,
//    requests and limits; long-running ones have readiness and liveness probes; userdata
//    and push-email have a read-only root and probe /readyz and /healthz on their health
//    ports (8082, opened by USERDATA_HEALTH_PORT; 8081), their Services target 8080/8081;
//    selectors match pod labels; every referenced ConfigMap/Secret (and key) is rendered,
//    and its mounted files are readable by the container's non-root user (mode, fsGroup),
//    except Secrets listed with --external-secret (created outside git in prod); every
//    connection the services make (FLOWS) is allowed by the NetworkPolicies.
// With --connector-config DIR, instead checks that the rendered ConfigMaps hold every
// connector JSON of DIR (and register.sh, debezium-user.sql) byte for byte, and that the
// register Job runs files that the mounted ConfigMap has.
//
// Exit 0: all good; 1: findings (each printed); 2: usage or tooling error; 77: no kustomize.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

function usage(msg) {
    console.error(`validate: ${msg}`);
    console.error('usage: validate.mjs --repo DIR --overlay NAME [--external-secret a,b] [--connector-config DIR]');
    process.exit(2);
}

const args = { externalSecrets: [] };
for (let i = 2; i < process.argv.length; i++) {
    const a = process.argv[i];
    const v = () => (i + 1 < process.argv.length ? process.argv[++i] : usage(`${a} needs a value`));
    if (a === '--repo') args.repo = v();
    else if (a === '--overlay') args.overlay = v();
    else if (a === '--external-secret') args.externalSecrets.push(...v().split(',').filter(Boolean));
    else if (a === '--connector-config') args.connectorConfig = v();
    else usage(`unknown argument ${a}`);
}
if (!args.repo || !args.overlay) usage('--repo and --overlay are required');

let YAML;
try {
    YAML = require('yaml');
    require('kubernetes-models/v1/Service');
} catch (e) {
    console.error(`validate: the npm packages are missing (${e.code || e.message}); run: (cd tests/k8s && npm ci)`);
    process.exit(2);
}

// ---------------------------------------------------------------- render
function which(cmd) {
    for (const dir of (process.env.PATH || '').split(':')) {
        const p = path.join(dir || '.', cmd);
        try {
            fs.accessSync(p, fs.constants.X_OK);
            return p;
        } catch {
            /* next */
        }
    }
    return null;
}

function kustomizeCommand() {
    if (process.env.KUSTOMIZE) {
        const [cmd, ...rest] = process.env.KUSTOMIZE.split(/\s+/).filter(Boolean);
        return [cmd, rest];
    }
    // PATH first, then the copy scripts/lib/install-deps.sh fetches from npm.
    // (relative to this script, not to --repo: selftest.sh validates scratch copies)
    // fileURLToPath, not URL.pathname: the latter keeps %20 and the like (a checkout path
    // with a space) percent-encoded.
    const here = path.dirname(fileURLToPath(import.meta.url));
    const candidates = [which('kubectl'), path.join(here, '..', '..', '.cache', 'kubectl', 'bin', 'kubectl')];
    for (const kubectl of candidates) {
        if (!kubectl || !fs.existsSync(kubectl)) continue;
        try {
            const out = execFileSync(kubectl, ['version', '--client'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
            const m = /Kustomize Version: v(\d+)/.exec(out);
            if (m && Number(m[1]) >= 5) return [kubectl, ['kustomize']];
        } catch {
            /* fall through */
        }
    }
    const kustomize = which('kustomize');
    if (kustomize) return [kustomize, ['build']];
    return null;
}

const overlayDir = path.join(args.repo, 'k8s', 'overlays', args.overlay);
if (!fs.existsSync(path.join(overlayDir, 'kustomization.yaml'))) usage(`no kustomization.yaml in ${overlayDir}`);
const tool = kustomizeCommand();
if (!tool) {
    // In CI a missing tool is a failure: scripts/lib/install-deps.sh must have provided one.
    const ci = Boolean(process.env.CI) && process.env.CI !== 'false';
    console.log(`validate: ${ci ? 'FAIL' : 'SKIPPED'}: no kustomize v5 found (kubectl >= 1.27, or kustomize on PATH, or $KUSTOMIZE, or .cache/kubectl/bin/kubectl from scripts/lib/install-deps.sh)`);
    process.exit(ci ? 1 : 77);
}
let rendered;
try {
    rendered = execFileSync(tool[0], [...tool[1], overlayDir], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
} catch (e) {
    console.error(`validate: ${[tool[0], ...tool[1]].join(' ')} ${overlayDir} failed:\n${e.stderr || e.message}`);
    process.exit(1);
}
const docs = YAML.parseAllDocuments(rendered).map((d) => d.toJS()).filter((d) => d && typeof d === 'object');
console.log(`validate: ${args.overlay}: rendered ${docs.length} objects with ${path.basename(tool[0])} ${tool[1].join(' ')}`);

const problems = [];
const fail = (obj, msg) => problems.push(`${obj ? `${obj.kind}/${obj.metadata?.name}: ` : ''}${msg}`);
const byKind = (kind) => docs.filter((d) => d.kind === kind);
const find = (kind, name) => docs.find((d) => d.kind === kind && d.metadata?.name === name);

function finish(what) {
    for (const p of problems) console.log(`FAIL ${args.overlay}: ${p}`);
    if (problems.length) {
        console.log(`validate: ${args.overlay}: ${problems.length} problem(s) in ${what}`);
        process.exit(1);
    }
    console.log(`validate: ${args.overlay}: ${what}: OK`);
    process.exit(0);
}

// ---------------------------------------------------------------- connector-config mode
if (args.connectorConfig) {
    const dir = path.resolve(args.connectorConfig);
    const jsons = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    if (jsons.length === 0) usage(`no *.json in ${dir}`);
    const wanted = [...jsons, ...['register.sh', 'debezium-user.sql'].filter((f) => fs.existsSync(path.join(dir, f)))];
    const cms = byKind('ConfigMap');
    for (const file of wanted) {
        const onDisk = fs.readFileSync(path.join(dir, file));
        const holders = cms.filter((c) => (c.data && file in c.data) || (c.binaryData && file in c.binaryData));
        if (holders.length === 0) {
            fail(null, `${file} (connector-config/) is in no rendered ConfigMap`);
            continue;
        }
        for (const c of holders) {
            const inMap = c.data && file in c.data ? Buffer.from(c.data[file], 'utf8') : Buffer.from(c.binaryData[file], 'base64');
            if (!inMap.equals(onDisk)) {
                let at = 0;
                while (at < inMap.length && at < onDisk.length && inMap[at] === onDisk[at]) at++;
                fail(c, `data["${file}"] differs from connector-config/${file} (first difference at byte ${at}; ${inMap.length} vs ${onDisk.length} bytes)`);
            } else {
                console.log(`  ${c.metadata.name}: ${file} identical (${onDisk.length} bytes)`);
            }
        }
    }
    const connector = cms.find((c) => /^connector-config(-[a-z0-9]+)?$/.test(c.metadata?.name || ''));
    if (!connector) fail(null, 'no ConfigMap connector-config');
    else for (const f of jsons) if (!(f in (connector.data || {}))) fail(connector, `lacks ${f}`);
    // The register Job runs files that its mounted ConfigMap really has.
    const job = find('Job', 'connector-register');
    if (!job) fail(null, 'no Job connector-register');
    else {
        const spec = job.spec.template.spec;
        for (const c of spec.containers) {
            for (const word of [...(c.command || []), ...(c.args || [])]) {
                for (const m of c.volumeMounts || []) {
                    if (!word.startsWith(`${m.mountPath}/`)) continue;
                    const vol = (spec.volumes || []).find((v) => v.name === m.name);
                    const cm = vol?.configMap && find('ConfigMap', vol.configMap.name);
                    const key = word.slice(m.mountPath.length + 1);
                    if (!cm) fail(job, `${word}: volume ${m.name} is not a rendered ConfigMap`);
                    else if (!(key in (cm.data || {}))) fail(job, `${word}: ConfigMap ${cm.metadata.name} has no key ${key}`);
                }
            }
        }
    }
    finish('connector ConfigMaps identical to connector-config/');
}

// ---------------------------------------------------------------- schemas
function modelFor(obj) {
    const [group, version] = obj.apiVersion.includes('/') ? obj.apiVersion.split('/') : [null, obj.apiVersion];
    const mod = group ? `kubernetes-models/${group}/${version}/${obj.kind}` : `kubernetes-models/${version}/${obj.kind}`;
    try {
        return require(mod)[obj.kind];
    } catch {
        return null;
    }
}

for (const obj of docs) {
    if (!obj.apiVersion || !obj.kind) {
        fail(obj, 'no apiVersion/kind');
        continue;
    }
    if (!obj.metadata?.name) fail(obj, 'no metadata.name');
    const Model = modelFor(obj);
    if (!Model) {
        fail(obj, `unknown kind ${obj.apiVersion} ${obj.kind} (no schema in kubernetes-models)`);
        continue;
    }
    try {
        new Model(structuredClone(obj)).validate();
    } catch (e) {
        const errs = e.errors || [{ instancePath: '', message: e.message }];
        for (const er of errs) fail(obj, `schema: ${er.instancePath || '/'} ${er.message}${er.params?.missingProperty ? '' : ''}`);
    }
}

// ---------------------------------------------------------------- namespace
const nsObjs = byKind('Namespace');
const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'PersistentVolume', 'StorageClass', 'CustomResourceDefinition']);
if (nsObjs.length !== 1) fail(null, `expected exactly one Namespace, found ${nsObjs.length}`);
else {
    const ns = nsObjs[0].metadata.name;
    for (const obj of docs) {
        if (!clusterScoped.has(obj.kind) && obj.metadata?.namespace !== ns) fail(obj, `namespace ${obj.metadata?.namespace} is not ${ns}`);
    }
}

// ---------------------------------------------------------------- workloads
const OUR_IMAGES = { userdata: 'localhost:32000/userdata', 'push-email': 'localhost:32000/push-email', 'connector-register': 'localhost:32000/connector-register' };
// The port the Service targets, and the probes' port (userdata's own health server: its API
// workers may all be waiting for the database, and a liveness probe behind them would fail).
// healthEnv: the variable that opens the probes' port (userdata has none without it).
const OUR_SERVICES = {
    userdata: { service: 8080, probes: 8082, healthEnv: 'USERDATA_HEALTH_PORT', healthDefault: null },
    'push-email': { service: 8081, probes: 8081, healthEnv: 'PUSH_EMAIL_HEALTH_PORT', healthDefault: '8081' },
};
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

function podSpecOf(obj) {
    if (['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'ReplicaSet'].includes(obj.kind)) return obj.spec?.template?.spec;
    if (obj.kind === 'CronJob') return obj.spec?.jobTemplate?.spec?.template?.spec;
    if (obj.kind === 'Pod') return obj.spec;
    return null;
}

function splitImage(image) {
    const at = image.indexOf('@');
    const noDigest = at >= 0 ? image.slice(0, at) : image;
    const slash = noDigest.lastIndexOf('/');
    const colon = noDigest.lastIndexOf(':');
    const hasTag = colon > slash;
    return { repo: hasTag ? noDigest.slice(0, colon) : noDigest, tag: hasTag ? noDigest.slice(colon + 1) : null, digest: at >= 0 };
}

function portNumber(container, port) {
    if (typeof port === 'number') return port;
    return (container.ports || []).find((p) => p.name === port)?.containerPort;
}

function checkRefs(obj, spec) {
    const need = (kind, name, key, where) => {
        if (kind === 'Secret' && args.externalSecrets.includes(name)) return;
        const target = find(kind, name);
        if (!target) return fail(obj, `${where}: ${kind} ${name} is not rendered${kind === 'Secret' ? ' (and not declared external)' : ''}`);
        if (key !== undefined) {
            const keys = new Set([...Object.keys(target.data || {}), ...Object.keys(target.stringData || {}), ...Object.keys(target.binaryData || {})]);
            if (!keys.has(key)) fail(obj, `${where}: ${kind} ${name} has no key ${key}`);
        }
    };
    for (const v of spec.volumes || []) {
        if (v.configMap) {
            if (v.configMap.items) for (const it of v.configMap.items) need('ConfigMap', v.configMap.name, it.key, `volume ${v.name}`);
            else need('ConfigMap', v.configMap.name, undefined, `volume ${v.name}`);
        }
        if (v.secret) {
            if (v.secret.items) for (const it of v.secret.items) need('Secret', v.secret.secretName, it.key, `volume ${v.name}`);
            else need('Secret', v.secret.secretName, undefined, `volume ${v.name}`);
        }
    }
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
        for (const e of c.env || []) {
            const ref = e.valueFrom;
            if (ref?.secretKeyRef) need('Secret', ref.secretKeyRef.name, ref.secretKeyRef.key, `${c.name} env ${e.name}`);
            if (ref?.configMapKeyRef) need('ConfigMap', ref.configMapKeyRef.name, ref.configMapKeyRef.key, `${c.name} env ${e.name}`);
        }
        for (const ef of c.envFrom || []) {
            if (ef.secretRef) need('Secret', ef.secretRef.name, undefined, `${c.name} envFrom`);
            if (ef.configMapRef) need('ConfigMap', ef.configMapRef.name, undefined, `${c.name} envFrom`);
        }
        for (const m of c.volumeMounts || []) {
            const known = (spec.volumes || []).some((v) => v.name === m.name) ||
                (obj.kind === 'StatefulSet' && (obj.spec.volumeClaimTemplates || []).some((t) => t.metadata?.name === m.name));
            if (!known) fail(obj, `${c.name}: volumeMount ${m.name} has no volume`);
            const v = (spec.volumes || []).find((x) => x.name === m.name);
            if (v) checkReadable(obj, spec, c, v);
        }
    }
}

// Secret and ConfigMap files are owned by root (uid 0). With a pod fsGroup the kubelet
// makes them group fsGroup and adds group read (kubernetes/kubernetes#57923), so any mode
// works; without one a non-root container reads them only through the "other" bits:
// 0440 or 0400 without fsGroup is unreadable, and the service exits at start.
function checkReadable(obj, spec, c, v) {
    const src = v.secret || v.configMap;
    if (!src) return;
    const uid = c.securityContext?.runAsUser ?? spec.securityContext?.runAsUser;
    if (uid === 0 || Number.isInteger(spec.securityContext?.fsGroup)) return;
    const dflt = src.defaultMode ?? 0o644;
    const modes = (src.items || []).map((it) => [it.path, it.mode ?? dflt]);
    if (modes.length === 0) modes.push(['*', dflt]);
    for (const [file, mode] of modes) {
        if ((mode & 0o004) === 0)
            fail(obj, `${c.name}: volume ${v.name} file ${file} has mode 0${mode.toString(8)} and the pod has ` +
                `no fsGroup: its user (${uid ?? 'the image\'s'}) cannot read it`);
    }
}

const seenOurs = new Set();
for (const obj of docs) {
    const spec = podSpecOf(obj);
    if (!spec) continue;
    const longRunning = ['Deployment', 'StatefulSet', 'DaemonSet'].includes(obj.kind);
    const pod = spec.securityContext || {};
    if (longRunning) {
        const sel = obj.spec.selector?.matchLabels || {};
        const labels = obj.spec.template?.metadata?.labels || {};
        if (Object.keys(sel).length === 0) fail(obj, 'empty selector');
        for (const [k, val] of Object.entries(sel)) if (labels[k] !== val) fail(obj, `selector ${k}=${val} does not match the pod template labels`);
    }
    if (obj.kind === 'StatefulSet' && !find('Service', obj.spec.serviceName)) fail(obj, `serviceName ${obj.spec.serviceName} is not a rendered Service`);
    checkRefs(obj, spec);
    for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
        const sc = c.securityContext || {};
        const where = `container ${c.name}`;
        if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) fail(obj, `${where}: runAsNonRoot is not true`);
        const uid = sc.runAsUser ?? pod.runAsUser;
        if (!Number.isInteger(uid) || uid <= 0) fail(obj, `${where}: runAsUser must be a numeric non-root uid (got ${uid})`);
        if ((sc.seccompProfile ?? pod.seccompProfile)?.type !== 'RuntimeDefault') fail(obj, `${where}: seccompProfile is not RuntimeDefault`);
        if (sc.allowPrivilegeEscalation !== false) fail(obj, `${where}: allowPrivilegeEscalation is not false`);
        if (!(sc.capabilities?.drop || []).includes('ALL')) fail(obj, `${where}: capabilities do not drop ALL`);
        if (sc.privileged) fail(obj, `${where}: privileged`);
        for (const kind of ['requests', 'limits'])
            for (const r of ['cpu', 'memory']) if (c.resources?.[kind]?.[r] === undefined) fail(obj, `${where}: no resources.${kind}.${r}`);
        if (longRunning && !spec.initContainers?.includes(c)) {
            if (!c.readinessProbe) fail(obj, `${where}: no readinessProbe`);
            if (!c.livenessProbe) fail(obj, `${where}: no livenessProbe`);
        }
        // images
        const img = splitImage(c.image || '');
        if (!img.tag && !img.digest) fail(obj, `${where}: image ${c.image} has no tag`);
        else if (img.tag === 'latest') fail(obj, `${where}: image ${c.image} uses :latest`);
        else if (img.tag && !TAG.test(img.tag)) fail(obj, `${where}: image tag ${img.tag} is not a valid tag`);
        const base = img.repo.split('/').pop();
        if (base in OUR_IMAGES && img.repo !== OUR_IMAGES[base]) fail(obj, `${where}: image ${c.image} must come from ${OUR_IMAGES[base]} (the microk8s registry)`);
        if (c.name in OUR_IMAGES && img.repo !== OUR_IMAGES[c.name]) fail(obj, `${where}: image ${c.image} is not ${OUR_IMAGES[c.name]}:<tag>`);
        // userdata and push-email specifics
        if (obj.kind === 'Deployment' && obj.metadata.name in OUR_SERVICES && c.name === obj.metadata.name) {
            seenOurs.add(c.name);
            const { service: port, probes: probePort, healthEnv, healthDefault } = OUR_SERVICES[c.name];
            const healthValue = (c.env || []).find((e) => e.name === healthEnv)?.value ?? healthDefault;
            if (healthValue !== String(probePort)) fail(obj, `${where}: ${healthEnv} is ${healthValue ?? 'not set'}: the probes use ${probePort}`);
            if (sc.readOnlyRootFilesystem !== true) fail(obj, `${where}: readOnlyRootFilesystem is not true`);
            const probe = (p, pathWanted, what) => {
                if (!p?.httpGet) return fail(obj, `${where}: ${what} is not an httpGet probe`);
                if (p.httpGet.path !== pathWanted) fail(obj, `${where}: ${what} path ${p.httpGet.path}, want ${pathWanted}`);
                if (portNumber(c, p.httpGet.port) !== probePort) fail(obj, `${where}: ${what} port ${p.httpGet.port} is not ${probePort}`);
            };
            probe(c.readinessProbe, '/readyz', 'readinessProbe');
            probe(c.livenessProbe, '/healthz', 'livenessProbe');
            if (c.startupProbe) probe(c.startupProbe, '/healthz', 'startupProbe');
            const svc = find('Service', c.name);
            if (!svc) fail(obj, `no Service ${c.name}`);
            else if (!(svc.spec.ports || []).some((p) => portNumber(c, p.targetPort ?? p.port) === port)) fail(svc, `no port targeting ${port}`);
        }
    }
}
for (const name of Object.keys(OUR_SERVICES)) if (!seenOurs.has(name)) fail(null, `no Deployment ${name} with a container ${name}`);

// Services select some pod template.
for (const svc of byKind('Service')) {
    const sel = svc.spec?.selector;
    if (!sel) continue;
    const match = docs.some((o) => {
        const labels = ['Deployment', 'StatefulSet', 'DaemonSet'].includes(o.kind) ? o.spec?.template?.metadata?.labels || {} : null;
        return labels && Object.entries(sel).every(([k, v]) => labels[k] === v);
    });
    if (!match) fail(svc, 'selector matches no pod template');
}

// NetworkPolicies: every connection the system makes must be allowed. FLOWS names the pods
// by app.kubernetes.io/name; a source of null is a client outside the namespace (an Ingress
// controller, a metrics scraper). Flows to a pod this overlay does not render are skipped
// (maildev is the dev overlay's). Only what these manifests use is understood (matchLabels,
// named or numbered TCP ports); anything else is a failure, not a guess.
const FLOWS = [
    ['userdata', 'mariadb', 3306], ['push-email', 'mariadb', 3306], ['kafka-connect', 'mariadb', 3306],
    ['kafka-connect', 'kafka', 9092], ['push-email', 'kafka', 9092], ['kafka', 'kafka', 9092],
    ['connector-register', 'kafka-connect', 8083], ['push-email', 'maildev', 1025],
    [null, 'userdata', 8080], [null, 'userdata', 8082], [null, 'push-email', 8081], [null, 'maildev', 1080],
];
const podsByName = new Map();
for (const obj of docs) {
    const spec = podSpecOf(obj);
    const labels = obj.kind === 'Pod' ? obj.metadata?.labels : obj.kind === 'CronJob' ? obj.spec?.jobTemplate?.spec?.template?.metadata?.labels : obj.spec?.template?.metadata?.labels;
    const name = labels?.['app.kubernetes.io/name'];
    if (spec && name) podsByName.set(name, { obj, labels, containers: spec.containers || [] });
}
const selects = (sel, labels, where) => {
    if (sel.matchExpressions?.length) {
        fail(where, 'matchExpressions: not understood by this check');
        return false;
    }
    return Object.entries(sel.matchLabels || {}).every(([k, v]) => labels?.[k] === v);
};
const policies = byKind('NetworkPolicy');
for (const [from, to, port] of FLOWS) {
    const target = podsByName.get(to);
    if (!target) continue;
    const source = from === null ? null : podsByName.get(from);
    if (from !== null && !source) {
        fail(null, `network flow ${from} -> ${to}:${port}: no pod ${from}`);
        continue;
    }
    const isolating = policies.filter((np) => selects(np.spec?.podSelector || {}, target.labels, np) && (np.spec?.policyTypes || ['Ingress']).includes('Ingress'));
    if (isolating.length === 0) continue;
    const empty = (sel) => !sel || (Object.keys(sel.matchLabels || {}).length === 0 && !(sel.matchExpressions || []).length);
    const peerAllows = (peer) => {
        if (peer.ipBlock) return false; // pod addresses are not known here
        if (peer.namespaceSelector) {
            // only an empty selector (every namespace) is sure to match the namespace, and
            // only an empty pod selector a client outside it
            if (!empty(peer.namespaceSelector)) return false;
            return empty(peer.podSelector) || (source !== null && selects(peer.podSelector, source.labels, null));
        }
        return source !== null && selects(peer.podSelector || {}, source.labels, null);
    };
    const portAllows = (p) => {
        if ((p.protocol || 'TCP') !== 'TCP') return false;
        if (p.port === undefined) return true;
        if (typeof p.port === 'number') return p.port <= port && port <= (p.endPort ?? p.port);
        return target.containers.some((c) => (c.ports || []).some((cp) => cp.name === p.port && cp.containerPort === port));
    };
    const allowed = isolating.some((np) => (np.spec.ingress || []).some((rule) =>
        (!rule.from || rule.from.length === 0 || rule.from.some(peerAllows)) &&
        (!rule.ports || rule.ports.length === 0 || rule.ports.some(portAllows))));
    if (!allowed) fail(target.obj, `network flow ${from ?? '(outside the namespace)'} -> ${to}:${port} is denied by the NetworkPolicies`);
}

finish('schemas and project rules');
