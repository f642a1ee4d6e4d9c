"""Helpers of the end-to-end tests: the private stack's settings, REST calls to userdata,
maildev's HTTP API, push-email's process (the tests run it themselves), kcat, and a check
counter that prints a summary.

The stack (MariaDB, Kafka, Connect + Debezium, maildev, userdata) is started by the ctest
fixture (stack-fixture.sh up) on private ports with STACK_SKIP=push-email; push-email is
started by the tests from E2E_PUSH_EMAIL_BIN with PUSH_EMAIL_DB_USER=root, so that they can
kill -9 it, restart it with the same group and wait for its exit code.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checks import Checks, load_env  # noqa: E402,F401  (re-exported to the tests)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
STACK = os.path.join(REPO, "scripts", "stack")
TOPIC = "cdc.info-user"
DLQ_TOPIC = "cdc.info-user.dlq"
GROUP = os.environ.get("E2E_PUSH_EMAIL_GROUP", "e2e-push-email")
SETTLE_S = float(os.environ.get("E2E_SETTLE_S", "4"))


def port_open(port, host="127.0.0.1"):
    import socket
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def log(msg):
    print(f"[ {time.strftime('%H:%M:%S')} ] {msg}", flush=True)


def stack_dir():
    return os.environ["STACK_DIR"]


def stack(*args, check=True):
    """Runs scripts/stack with this test's environment (private ports, STACK_SKIP)."""
    t0 = time.monotonic()
    r = subprocess.run([STACK, *args], capture_output=True, text=True, timeout=900)
    if check and r.returncode != 0:
        sys.stdout.write(r.stdout[-3000:])
        sys.stdout.write(r.stderr[-3000:])
        raise RuntimeError(f"scripts/stack {' '.join(args)} exited {r.returncode}")
    log(f"scripts/stack {' '.join(args)}: rc {r.returncode} in {time.monotonic() - t0:.1f}s")
    return r


def http(method, url, body=None, headers=None, timeout=30):
    """-> (status, bytes)."""
    req = urllib.request.Request(url, data=body, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Userdata:
    def __init__(self, env):
        self.base = env["USERDATA_URL"] + "/api/v1/users"
        self.token = env["USERDATA_TOKEN"]

    def call(self, method, path="", body=None, ctype="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["Content-Type"] = ctype
        status, raw = http(method, self.base + path, data, headers)
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            return status, raw.decode(errors="replace")

    def create(self, **fields):
        return self.call("POST", "", fields)

    def patch(self, uid, **fields):
        return self.call("PATCH", "/" + uid, fields, ctype="application/merge-patch+json")

    def delete(self, uid):
        return self.call("DELETE", "/" + uid)


def unique(prefix):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Maildev:
    def __init__(self, env):
        self.url = env["MAILDEV_URL"]

    def emails(self):
        status, raw = http("GET", self.url + "/email", timeout=15)
        if status != 200:
            raise RuntimeError(f"GET /email: {status}")
        return json.loads(raw)

    def source(self, mid):
        status, raw = http("GET", f"{self.url}/email/{mid}/source", timeout=15)
        if status != 200:
            raise RuntimeError(f"GET /email/{mid}/source: {status}")
        return raw.decode("utf-8", errors="replace")

    def clear(self):
        status, _ = http("DELETE", self.url + "/email/all", timeout=15)
        if status != 200:
            raise RuntimeError(f"DELETE /email/all: {status}")

    def wait_for(self, pred, timeout_s, what, settle_s=None, poll_s=0.25):
        """Polls GET /email until pred(emails) holds (or timeout_s passes), then keeps
        polling settle_s more seconds so that an extra email has time to arrive; returns
        the emails seen last."""
        settle_s = SETTLE_S if settle_s is None else settle_s
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        ems = []
        while True:
            try:
                ems = self.emails()
            except (OSError, RuntimeError):
                ems = []
            if pred(ems):
                log(f"{what}: reached after {time.monotonic() - t0:.1f}s; "
                    f"watching {settle_s:.0f}s more for extra emails")
                break
            if time.monotonic() >= deadline:
                log(f"{what}: NOT reached after {timeout_s}s ({len(ems)} emails)")
                return ems
            time.sleep(poll_s)
        end = time.monotonic() + settle_s
        while time.monotonic() < end:
            time.sleep(0.5)
            ems = self.emails()
        return ems

    def wait_count(self, n, timeout_s, what, settle_s=None):
        return self.wait_for(lambda e: len(e) >= n, timeout_s, what, settle_s)


def recipients(email):
    return sorted(a["address"].lower() for a in email.get("to") or [])


def all_recipients(email):
    out = []
    for f in ("to", "cc", "bcc"):
        out += [a["address"].lower() for a in email.get(f) or []]
    for a in email.get("envelope", {}).get("to") or []:
        out.append(a["address"].lower())
    return sorted(set(out))


def message_id(email):
    h = email.get("headers") or {}
    return h.get("message-id") or email.get("messageId")


def summarize(ems):
    return [f"{recipients(e)} {e.get('subject')!r} {message_id(e)}" for e in ems]


# ---------------------------------------------------------------- push-email
class PushEmail:
    """The push-email process of the e2e stack: started from E2E_PUSH_EMAIL_BIN in its own
    directory inside STACK_DIR (so a pid is only ever ours), pid in $STACK_DIR/run/
    e2e-push-email.pid, log appended to $STACK_DIR/logs/e2e-push-email.log."""

    def __init__(self, env=None, name="e2e-push-email", port=None, overrides=None):
        """name: its directory, pid file and log (a second instance needs its own); port: its
        health port (default STACK_PUSH_EMAIL_PORT); overrides: PUSH_EMAIL_* settings."""
        self.env = env or load_env()
        self.bin = os.environ["E2E_PUSH_EMAIL_BIN"]
        self.port = port or int(os.environ.get("STACK_PUSH_EMAIL_PORT", "8181"))
        self.dir = os.path.join(stack_dir(), name)
        self.pid_path = os.path.join(stack_dir(), "run", f"{name}.pid")
        self.log_path = os.path.join(stack_dir(), "logs", f"{name}.log")
        self.overrides = dict(overrides or {})
        self.proc = None  # a Popen when this process started it

    def settings(self):
        return self.base_settings() | self.overrides

    def base_settings(self):
        return {
            "PUSH_EMAIL_KAFKA_BROKERS": self.env["KAFKA_BOOTSTRAP"],
            "PUSH_EMAIL_TOPIC": TOPIC,
            "PUSH_EMAIL_DLQ_TOPIC": DLQ_TOPIC,
            "PUSH_EMAIL_GROUP_ID": GROUP,
            "PUSH_EMAIL_SMTP_URL": f"smtp://{self.env['SMTP_HOST']}:{self.env['SMTP_PORT']}",
            "PUSH_EMAIL_SMTP_CONNECT_TIMEOUT_MS": "2000",
            "PUSH_EMAIL_SMTP_TIMEOUT_MS": "10000",
            "PUSH_EMAIL_DB_HOST": self.env["MARIADB_HOST"],
            "PUSH_EMAIL_DB_PORT": self.env["MARIADB_PORT"],
            "PUSH_EMAIL_DB_USER": "root",
            "PUSH_EMAIL_DB_PASSWORD": "",
            "PUSH_EMAIL_DB_NAME": "notifications",
            "PUSH_EMAIL_HEALTH_ADDR": "127.0.0.1",
            "PUSH_EMAIL_HEALTH_PORT": str(self.port),
            "PUSH_EMAIL_RETRY_BASE_MS": "200",
            "PUSH_EMAIL_RETRY_MAX_MS": os.environ.get("E2E_RETRY_MAX_MS", "5000"),
        }

    def pid(self):
        """The pid of our push-email when it runs, else None (cwd must be self.dir)."""
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        if self.proc is not None and self.proc.pid == pid and self.proc.poll() is not None:
            return None
        try:
            os.kill(pid, 0)
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1].startswith("Z"):
                    return None
        except OSError:
            return None
        return pid if cwd == os.path.realpath(self.dir) else None

    def start(self):
        """Starts push-email (detached, in its own session); waits until ready."""
        if self.pid() is not None:
            raise RuntimeError(f"push-email already runs (pid {self.pid()})")
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs(os.path.dirname(self.pid_path), exist_ok=True)
        logf = open(self.log_path, "ab")
        logf.write(f"\n=== {time.strftime('%FT%TZ', time.gmtime())}: e2e starts push-email ===\n"
                   .encode())
        logf.flush()
        env = dict(os.environ)
        env = {k: v for k, v in env.items() if not k.startswith("PUSH_EMAIL_")}
        env.update(self.settings())
        offset = os.path.getsize(self.log_path)
        self.proc = subprocess.Popen([self.bin], cwd=self.dir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        logf.close()
        with open(self.pid_path + ".tmp", "w") as f:
            f.write(f"{self.proc.pid}\n")
        os.replace(self.pid_path + ".tmp", self.pid_path)
        self.wait_ready(offset)
        return self.proc.pid

    def wait_ready(self, log_offset, timeout_s=120):
        """Ready = /readyz answers 200 and the log says the partitions were assigned (after
        a kill -9 the group waits for the dead member's session to time out first)."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"push-email exited {self.proc.returncode} while starting; "
                                   f"see {self.log_path}:\n{self.log_tail()}")
            if self.readyz() == 200 and "partitions assigned" in self.log_since(log_offset):
                log(f"push-email pid {self.proc.pid} ready, partitions assigned "
                    f"({time.monotonic() - t0:.1f}s)")
                return
            time.sleep(0.25)
        raise RuntimeError(f"push-email not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_since(self, offset):
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_tail(self, n=30):
        with open(self.log_path, "rb") as f:
            return "\n".join(f.read().decode(errors="replace").splitlines()[-n:])

    def readyz(self):
        try:
            return http("GET", f"http://127.0.0.1:{self.port}/readyz", timeout=3)[0]
        except OSError:
            return None

    def metrics(self):
        status, raw = http("GET", f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        if status != 200:
            raise RuntimeError(f"/metrics: {status}")
        out = {}
        for line in raw.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"^(\S+)\s+(\S+)", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def signal(self, sig):
        pid = self.pid()
        if pid is None:
            raise RuntimeError("push-email is not running")
        os.kill(pid, sig)
        return pid

    def wait_exit(self, pid, timeout_s):
        """Waits for pid to end; returns the exit status when it is our child, True when it
        ended (not our child), None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.pid == pid:
                rc = self.proc.poll()
                if rc is not None:
                    return rc
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
            time.sleep(0.05)
        return None

    def stop(self, timeout_s=20):
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        if self.wait_exit(pid, timeout_s) is None:
            log(f"push-email pid {pid} still runs {timeout_s}s after SIGTERM: SIGKILL")
            os.kill(pid, signal.SIGKILL)
            self.wait_exit(pid, 10)

    def ensure_running(self):
        if self.pid() is None:
            log("push-email is not running: starting it")
            self.start()


# ---------------------------------------------------------------- kcat
def topic_exists(bootstrap, topic):
    # All topics: `kcat -L -t T` would make the broker auto-create T.
    r = subprocess.run(["kcat", "-L", "-b", bootstrap, "-m", "5"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and f'topic "{topic}" with 1 partitions' in r.stdout


def ensure_topic(env, timeout_s=120):
    """Makes cdc.info-user exist (Debezium creates it with the first change): creates a
    warm-up user through userdata when it does not, so that the tests' first events do not
    race the topic's creation and push-email's first assignment (which librdkafka 2.0.2
    makes within seconds of the topic appearing: test_kafka_consumer's
    a_topic_created_after_the_subscription_is_read)."""
    boot = env["KAFKA_BOOTSTRAP"]
    if topic_exists(boot, TOPIC):
        return
    name = unique("warmup")
    st, body = Userdata(env).create(username=name, email=f"{name}@example.org",
                                    password="correct horse battery", full_name="Warm Up",
                                    locale="en")
    if st != 201:
        raise RuntimeError(f"warm-up user: POST answered {st}: {body}")
    deadline = time.monotonic() + timeout_s
    while not topic_exists(boot, TOPIC):
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{TOPIC} did not appear within {timeout_s}s of a REST create")
        time.sleep(0.5)
    log(f"{TOPIC} exists (warm-up user {name})")


def kcat_produce(bootstrap, topic, lines, key=None):
    args = ["kcat", "-P", "-b", bootstrap, "-t", topic]
    data = "\n".join(lines) + "\n"
    if key is not None:
        args += ["-K", "\t"]
        data = "\n".join(f"{key}\t{v}" for v in lines) + "\n"
    r = subprocess.run(args, input=data, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"kcat -P failed ({r.returncode}): {r.stderr.strip()}")


def kcat_consume_json(bootstrap, topic):
    """Every message of topic (from the beginning) as kcat -J dicts, headers as a dict."""
    r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-J"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "Unknown topic" in r.stderr:
        return []
    if r.returncode != 0:
        raise RuntimeError(f"kcat -C failed ({r.returncode}): {r.stderr.strip()}")
    out = []
    for line in r.stdout.splitlines():
        if line.strip():
            m = json.loads(line)
            h = m.get("headers") or []
            m["headers"] = dict(zip(h[0::2], h[1::2]))
            out.append(m)
    return out


def wait_dlq(bootstrap, markers, timeout_s=60):
    """Polls the DLQ until a message whose payload contains each marker is there; returns
    {marker: [messages]}."""
    deadline = time.monotonic() + timeout_s
    while True:
        msgs = kcat_consume_json(bootstrap, DLQ_TOPIC)
        found = {mk: [m for m in msgs if mk in (m.get("payload") or "")] for mk in markers}
        if all(found.values()) or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def kcat_consume(bootstrap, topic, fmt="%o\t%h\t%s\n"):
    """Every message of topic (from the beginning) formatted with fmt, as lines."""
    r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", fmt], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 and "Unknown topic" in r.stderr:
        return []
    if r.returncode != 0:
        raise RuntimeError(f"kcat -C failed ({r.returncode}): {r.stderr.strip()}")
    return [line for line in r.stdout.split("\n") if line]


if __name__ == "__main__":
    # python3 e2elib.py start-push-email | stop-push-email (used by stack-fixture.sh)
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "start-push-email":
        ensure_topic(load_env())
        pe = PushEmail()
        pe.ensure_running()
        log(f"push-email runs, pid {pe.pid()}, health http://127.0.0.1:{pe.port}")
    elif cmd == "stop-push-email":
        PushEmail().stop()
        log("push-email stopped")
    else:
        sys.exit("usage: e2elib.py start-push-email|stop-push-email")


# ---------------------------------------------------------------- private topics, SQL
GEN_EVENTS = os.path.join(REPO, "bench", "push-email", "gen_events.py")


def mysql_root(env, sql):
    """Runs sql as root on the stack's MariaDB; its output (tab-separated, no names)."""
    return subprocess.run(["mysql", "-N", "-h", env["MARIADB_HOST"], "-P",
                           str(env["MARIADB_PORT"]), "-uroot", "-e", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def private_topic_with_events(env, topic, n, tag):
    """Creates topic (1 partition) and writes n synthetic Debezium create events into it
    (bench/push-email/gen_events.py: one email each). Returns (ok, what happened)."""
    tool = os.environ["E2E_KAFKA_TOPIC_BIN"]
    brokers = env["KAFKA_BOOTSTRAP"]
    r = subprocess.run([tool, brokers, "create", topic, "1"], capture_output=True, text=True)
    if r.returncode != 0:
        return False, f"create topic {topic}: {r.stdout.strip()} {r.stderr.strip()}"
    events = subprocess.run([sys.executable, GEN_EVENTS, str(n), tag], check=True,
                            capture_output=True, text=True).stdout
    subprocess.run(["kcat", "-P", "-b", brokers, "-t", topic, "-K", "\t"], input=events,
                   text=True, check=True)
    return True, f"topic {topic} with {n} events"


def cleanup_private(env, pe, topic, db):
    """Stops pe, deletes topic and drops database db, as far as it can."""
    try:
        pe.stop()
    except Exception as e:  # noqa: BLE001 - clean up as much as we can
        log(f"cleanup: {e}")
    subprocess.run([os.environ["E2E_KAFKA_TOPIC_BIN"], env["KAFKA_BOOTSTRAP"], "delete", topic],
                   check=False)
    try:
        mysql_root(env, f"DROP DATABASE IF EXISTS {db}")
    except subprocess.CalledProcessError as e:
        log(f"cleanup: {e}")
