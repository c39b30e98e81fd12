#!/usr/bin/env python3
"""regate benchmark driver (run it through benches/run.sh, which installs and builds).

Starts, in one run on 127.0.0.1 with free ports and a temp dir:
  * registry:2 (Debian's docker-registry), filesystem storage, no auth ("direct");
  * nginx configured by the distribution's recipe in front of it, HTTP and HTTPS;
  * regate (release build) in front of it, HTTP and HTTPS (two processes, one per port);
then measures blob GETs (curl; also through a bare TCP relay, benches/relay.py, as the
reference), skopeo pushes, manifest HEADs (hey), /auth (wrk), regate's peak RSS and CPU, and
the edge cache's rows (issue #19: a pull storm, manifests by digest and by tag, and the same
with the registry behind a 5 ms delay; load from benches/storm.rs), the RSS that 4,000 idle
keep-alive connections add to nginx and to regate (issue #20; `--connections-only` runs
these rows alone), and prints one markdown table (also written to
benches/results/latest.md).
Targets from issues 6 and 19 are shown as PASS/MISS, never asserted. Standard library only.
"""

import argparse
import atexit
import base64
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import scale

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GIB = 1 << 30
MIB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
USER = "bench"
PASSWORD = "bench-password-123"
BLOB_REPO = "bench/blob"
SERVICE = "Docker registry"  # regate's token.service default
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
STORM_REPO = "bench/storm"  # the pull storm's image: an index, a manifest, a config, 5 layers
STORM_LAYERS = 5
STORM_LAYER_BYTES = 64 * 1024
STORM_CLIENTS = 64
SLOW_DELAY_MS = 5  # the delay relay in front of the "slow storage" registry
CACHE_MAX_MIB = 64  # regate's default cache.max_bytes
STORM = None  # benches/storm.rs, built by run.sh

PROCS = []  # (name, Popen) of everything this run started
PRIORITY = None  # nice value for servers and clients, see prioritised()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def die(msg):
    log("error: " + msg)
    sys.exit(1)


# ----------------------------------------------------------------------------- processes


def prioritised():
    """preexec_fn for the servers and the load generators: a session of its own and, with it,
    an autogroup of its own (Linux groups CPU time by session first, so a plain nice value
    would not count against other sessions' processes), with PRIORITY as that group's nice
    and the process's own."""
    os.setsid()
    if PRIORITY is None:
        return
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(PRIORITY))
    except OSError:
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    except OSError:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv, logfile, env=None):
    out = open(logfile, "ab")
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, preexec_fn=prioritised)
    PROCS.append((name, p))
    return p


def stop_all():
    # Only the processes this run started, each by its own pid.
    for name, p in reversed(PROCS):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + 10
    for name, p in reversed(PROCS):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_http(url, proc, name, logfile, insecure=False, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            die(f"{name} exited with {proc.returncode}; log {logfile}:\n" + tail(logfile))
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"]
                           + (["-k"] if insecure else []) + [url],
                           capture_output=True, text=True)
        if r.stdout not in ("", "000"):
            return
        time.sleep(0.1)
    die(f"{name} did not answer on {url} within {timeout}s; log {logfile}:\n" + tail(logfile))


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_hwm(pid):
    """Resets VmHWM (peak RSS) to the current RSS (proc(5): clear_refs, value 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- other load

# This machine may be shared (other sessions build and test on the same 2 cores): every
# measurement waits for the machine to be quiet and is repeated if other processes took CPU
# while it ran. "Foreign" CPU = all user+system time in /proc/stat minus this run's own
# (itself, the clients it ran and reaped, the servers it started).

class Load:
    def __init__(self):
        self.server_pids = lambda: []
        self.waited = 0.0
        self.budget = float("inf")  # seconds of waiting in all
        self.worst = {}  # measurement label -> foreign cores of the kept sample

    @staticmethod
    def busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (v[0] + v[1] + v[2]) / CLK_TCK  # user, nice, system (not irq/softirq)

    def own(self):
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        for pid in self.server_pids():
            try:
                total += cpu_seconds([pid])
            except OSError:
                pass
        return total

    def snap(self):
        return (time.monotonic(), self.busy(), self.own())

    @staticmethod
    def foreign(a, b):
        wall = b[0] - a[0]
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / wall if wall > 0 else 0.0

    def wait_quiet(self, limit, threshold=0.2):
        limit = min(limit, max(0.0, self.budget - self.waited))
        t0 = time.monotonic()
        said = False
        while True:
            a = self.snap()
            time.sleep(0.7)
            f = self.foreign(a, self.snap())
            if f < threshold:
                break
            if time.monotonic() - t0 > limit:
                log(f"  machine still busy ({f:.2f} cores used by other processes); measuring anyway")
                break
            if not said:
                log(f"  waiting for a quiet machine ({f:.2f} cores used by other processes)")
                said = True
            time.sleep(2)
        self.waited += time.monotonic() - t0

    def measure(self, label, fn, limit, retries=1, threshold=0.5):
        for attempt in range(retries + 1):
            self.wait_quiet(limit)
            a = self.snap()
            v = fn()
            f = self.foreign(a, self.snap())
            if f <= threshold or attempt == retries:
                self.worst[label] = max(self.worst.get(label, 0.0), f)
                return v
            log(f"  {label}: other processes took {f:.2f} cores meanwhile; measuring again")


# ----------------------------------------------------------------------------- setup


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    # EC P-256: regate signs tokens with the server pair when token.key is not set (as
    # docker_auth does), and ES256 is what it generates for itself too.
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def bcrypt_hash():
    r = subprocess.run(["htpasswd", "-nbB", USER, PASSWORD], check=True, capture_output=True,
                       text=True)
    return r.stdout.strip().split(":", 1)[1]


def start_registry(tmp, port):
    cfg = os.path.join(tmp, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: {tmp}/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: {base64.b16encode(os.urandom(16)).decode()}
  headers:
    X-Content-Type-Options: [nosniff]
""")
    logf = os.path.join(tmp, "registry.log")
    p = start("registry", ["docker-registry", "serve", cfg], logf)
    wait_http(f"http://127.0.0.1:{port}/v2/", p, "registry", logf)
    return p


NGINX_CONF = """# The distribution's nginx recipe (docs/recipes/nginx.md), with the streaming settings
# of the issue: no request/response buffering, keepalive to the upstream. No auth_basic:
# auth is the token server's job in the setup regate replaces.
worker_processes auto;
{user}
pid {tmp}/nginx/nginx.pid;
error_log {tmp}/nginx/error.log warn;
events {{
  worker_connections 1024;
}}
http {{
  client_body_temp_path {tmp}/nginx/body;
  proxy_temp_path {tmp}/nginx/proxy;
  fastcgi_temp_path {tmp}/nginx/fastcgi;
  uwsgi_temp_path {tmp}/nginx/uwsgi;
  scgi_temp_path {tmp}/nginx/scgi;
  access_log {tmp}/nginx/access.log;  # Debian's nginx.conf logs every request too
  sendfile on;
  tcp_nopush on;

  upstream docker-registry {{
    server 127.0.0.1:{reg};
    keepalive 32;
  }}

  # The same registry behind the delay relay ("slow storage").
  upstream docker-registry-slow {{
    server 127.0.0.1:{slow_reg};
    keepalive 32;
  }}

  map $upstream_http_docker_distribution_api_version $docker_distribution_api_version {{
    '' 'registry/2.0';
  }}

  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    server_name localhost;

    ssl_certificate {cert};
    ssl_certificate_key {key};
    # The recipe says TLSv1.1 TLSv1.2; OpenSSL 3 refuses 1.1 at its default level, and 1.3
    # is what current clients speak.
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers 'EECDH+AESGCM:EDH+AESGCM:AES256+EECDH:AES256+EDH';
    ssl_prefer_server_ciphers on;
    ssl_session_cache shared:SSL:10m;

    # disable any limits to avoid HTTP 413 for large image uploads
    client_max_body_size 0;
    # required to avoid HTTP 411: see Issue #1486 (https://github.com/moby/moby/issues/1486)
    chunked_transfer_encoding on;

    location /v2/ {{
      # Do not allow connections from docker 1.5 and earlier
      if ($http_user_agent ~ "^(docker\\/1\\.(3|4|5(?!\\.[0-9]-dev))|Go ).*$" ) {{
        return 404;
      }}
      add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;

      proxy_pass                          http://docker-registry;
      proxy_http_version                  1.1;
      proxy_set_header  Connection        "";
      proxy_set_header  Host              $http_host;
      proxy_set_header  X-Real-IP         $remote_addr;
      proxy_set_header  X-Forwarded-For   $proxy_add_x_forwarded_for;
      proxy_set_header  X-Forwarded-Proto $scheme;
      proxy_read_timeout                  900;
      proxy_request_buffering             off;
      proxy_buffering                     off;
    }}
  }}

  server {{
    listen 127.0.0.1:{slow};
    server_name localhost;
    client_max_body_size 0;
    chunked_transfer_encoding on;
    location /v2/ {{
      if ($http_user_agent ~ "^(docker\\/1\\.(3|4|5(?!\\.[0-9]-dev))|Go ).*$" ) {{
        return 404;
      }}
      add_header 'Docker-Distribution-Api-Version' $docker_distribution_api_version always;
      proxy_pass                          http://docker-registry-slow;
      proxy_http_version                  1.1;
      proxy_set_header  Connection        "";
      proxy_set_header  Host              $http_host;
      proxy_set_header  X-Real-IP         $remote_addr;
      proxy_set_header  X-Forwarded-For   $proxy_add_x_forwarded_for;
      proxy_set_header  X-Forwarded-Proto $scheme;
      proxy_read_timeout                  900;
      proxy_request_buffering             off;
      proxy_buffering                     off;
    }}
  }}
}}
"""


def start_nginx(tmp, reg, http, https, cert, key, slow_reg, slow):
    d = os.path.join(tmp, "nginx")
    os.makedirs(d, exist_ok=True)
    # As root, nginx's workers would switch to the compiled-in user, who cannot read the
    # temp dir: keep them as the current user. As any other user the directive is moot.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(user=user, tmp=tmp, reg=reg, http=http, https=https, cert=cert,
                                  key=key, slow_reg=slow_reg, slow=slow))
    logf = os.path.join(d, "stderr.log")
    subprocess.run(["nginx", "-t", "-q", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf],
                   check=True)
    p = start("nginx", ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf, "-g",
                        "daemon off;"], logf)
    wait_http(f"http://127.0.0.1:{http}/v2/", p, "nginx", os.path.join(d, "error.log"))
    return p


def start_regate(binary, tmp, name, port, reg, pwhash, tls=None, extra=""):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "regate.yml")
    server = f'  addr: "127.0.0.1:{port}"\n'
    if tls:
        server += f"  certificate: {tls[0]}\n  key: {tls[1]}\n"
    with open(cfg, "w") as f:
        f.write(f"""server:
{server}token:
  expiration: 3600
users:
  "{USER}":
    password: "{pwhash}"
acl:
  - match: {{account: "{USER}"}}
    actions: ["*"]
    comment: the benchmark user may do anything
upstream:
  url: http://127.0.0.1:{reg}
data_dir: {d}/data
{extra}""")
    logf = os.path.join(d, "regate.log")
    p = start(name, [binary, "serve", "--config", cfg], logf)
    scheme = "https" if tls else "http"
    wait_http(f"{scheme}://127.0.0.1:{port}/v2/", p, name, logf, insecure=bool(tls))
    return p


def random_file(path, size):
    """Random-looking bytes fast: AES-CTR keystream (several GB/s), sha256 on the way."""
    h = hashlib.sha256()
    key = os.urandom(16).hex()
    iv = os.urandom(16).hex()
    with open(path, "wb") as out:
        p = subprocess.Popen(["openssl", "enc", "-aes-128-ctr", "-K", key, "-iv", iv, "-in",
                              "/dev/zero"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        left = size
        while left:
            chunk = p.stdout.read(min(left, 4 * MIB))
            if not chunk:
                die("openssl enc ended early")
            h.update(chunk)
            out.write(chunk)
            left -= len(chunk)
        p.kill()
        p.wait()
    return "sha256:" + h.hexdigest()


def curl(args, check=True):
    r = subprocess.run(["curl", "-s", "-S"] + args, capture_output=True)
    if check and r.returncode != 0:
        die(f"curl {' '.join(args)}: {r.stderr.decode(errors='replace')}")
    return r


def upload_blob(base, repo, digest, path=None, data=None):
    """Monolithic upload straight to the registry: POST, then PUT with the whole body."""
    r = curl(["-D", "-", "-o", "/dev/null", "-X", "POST", f"{base}/v2/{repo}/blobs/uploads/"])
    m = re.search(rb"(?im)^location:\s*(\S+)", r.stdout)
    if not m:
        die("no Location from the registry on POST: " + r.stdout.decode(errors="replace"))
    loc = m.group(1).decode()
    if loc.startswith("/"):
        loc = base + loc
    loc += ("&" if "?" in loc else "?") + "digest=" + digest
    body = ["-T", path] if path else ["--data-binary", "@-"]
    r = subprocess.run(["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                        "-H", "Content-Type: application/octet-stream"] + body + [loc],
                       input=data, capture_output=True)
    if r.stdout.strip() != b"201":
        die(f"blob PUT answered {r.stdout!r} {r.stderr!r}")


def seed_registry(base, tmp, size):
    log(f"seeding the registry: {size // MIB} MiB blob in {BLOB_REPO}")
    path = os.path.join(tmp, "blob.bin")
    digest = random_file(path, size)
    upload_blob(base, BLOB_REPO, digest, path=path)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload_blob(base, BLOB_REPO, cdigest, data=config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdigest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                    "size": size}]}).encode()
    put_manifest(base, BLOB_REPO, "latest", manifest, OCI_MANIFEST)
    os.unlink(path)  # the registry has its copy
    return digest, "sha256:" + hashlib.sha256(manifest).hexdigest()


def put_manifest(base, repo, reference, body, media_type):
    r = subprocess.run(["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT",
                        "-H", f"Content-Type: {media_type}", "--data-binary", "@-",
                        f"{base}/v2/{repo}/manifests/{reference}"], input=body,
                       capture_output=True)
    if r.stdout.strip() != b"201":
        die(f"manifest PUT {repo}:{reference} answered {r.stdout!r}")


def seed_storm(base):
    """The pull storm's image, straight to the registry: an OCI index (tag `latest`) naming
    one linux/amd64 manifest, its config and STORM_LAYERS layers of 64 KiB."""
    log(f"seeding the registry: {STORM_REPO}:latest, an index, a manifest, a config and "
        f"{STORM_LAYERS} layers of {STORM_LAYER_BYTES // 1024} KiB")
    layers = []
    for _ in range(STORM_LAYERS):
        data = os.urandom(STORM_LAYER_BYTES)
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        upload_blob(base, STORM_REPO, d, data=data)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d,
                       "size": len(data)})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/app"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [x["digest"] for x in layers]}}).encode()
    cdigest = "sha256:" + hashlib.sha256(config).hexdigest()
    upload_blob(base, STORM_REPO, cdigest, data=config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cdigest, "size": len(config)},
                           "layers": layers}).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    put_manifest(base, STORM_REPO, mdigest, manifest, OCI_MANIFEST)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": mdigest, "size": len(manifest),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    put_manifest(base, STORM_REPO, "latest", index, OCI_INDEX)


# ----------------------------------------------------------------------------- fronts


class Front:
    """One way to reach the registry: a base URL and how to authorize."""

    def __init__(self, key, label, base, proc=None, auth=False, tls=False, http1=False,
                 cpu_pids=None):
        self.key, self.label, self.base = key, label, base
        self.proc, self.auth, self.tls, self.http1 = proc, auth, tls, http1
        self.cpu_pids = cpu_pids or (lambda: [proc.pid] if proc else [])

    def curl_opts(self):
        o = []
        if self.tls:
            o.append("-k")
        if self.http1:
            o.append("--http1.1")
        return o

    def token(self, scope=f"repository:{BLOB_REPO}:pull,push"):
        if not self.auth:
            return None
        if getattr(self, "fixed_token", None):
            return self.fixed_token
        url = f"{self.base}/auth?service={SERVICE.replace(' ', '%20')}&scope={scope}"
        r = curl(self.curl_opts() + ["-u", f"{USER}:{PASSWORD}", url])
        try:
            return json.loads(r.stdout)["token"]
        except (ValueError, KeyError):
            die(f"{self.label}: no token from {url}: {r.stdout[:300]!r}")

    def headers(self):
        t = self.token()
        return ["-H", f"Authorization: Bearer {t}"] if t else []


def fetch(front, digest, size, streams):
    """GETs the blob `streams` times at once; returns (aggregate MiB/s, http version)."""
    url = f"{front.base}/v2/{BLOB_REPO}/blobs/{digest}"
    argv = ["curl", "-s", "-S", "-o", "/dev/null", "-w",
            "%{http_code} %{size_download} %{speed_download} %{http_version}"] \
        + front.curl_opts() + front.headers() + [url]
    t0 = time.perf_counter()
    ps = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           preexec_fn=prioritised)
          for _ in range(streams)]
    outs = [p.communicate() for p in ps]
    wall = time.perf_counter() - t0
    speeds, version = [], ""
    for out, err in outs:
        parts = out.decode().split()
        if len(parts) != 4 or parts[0] != "200" or int(parts[1]) != size:
            raise RuntimeError(f"{front.label}: GET {url}: {out!r} {err.decode()[-300:]}")
        speeds.append(float(parts[2]))
        version = parts[3]
    if streams == 1:
        return speeds[0] / MIB, version
    return streams * size / wall / MIB, version


WRK_LUA = r"""
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT") or "*/*"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(tmp, url, seconds, conns, method="GET", accept=None, auth=None):
    lua = os.path.join(tmp, "bench.lua")
    if not os.path.exists(lua):
        with open(lua, "w") as f:
            f.write(WRK_LUA)
    env = dict(os.environ, BENCH_METHOD=method, BENCH_ACCEPT=accept or "*/*",
               BENCH_AUTH=auth or "")
    r = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s",
                        lua, url], capture_output=True, text=True, env=env,
                       preexec_fn=prioritised)
    m = re.search(r"RESULT (.*)", r.stdout)
    if not m:
        raise RuntimeError(f"wrk {url}: {r.stdout[-500:]} {r.stderr[-500:]}")
    v = {k: int(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    errors = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
    if v["requests"] == 0 or errors > v["requests"] // 100:
        raise RuntimeError(f"wrk {url}: {v['requests']} requests, {errors} errors ({v})")
    return {"rps": v["requests"] / (v["duration_us"] / 1e6), "p50_ms": v["p50_us"] / 1000,
            "p99_ms": v["p99_us"] / 1000, "errors": errors, "requests": v["requests"]}


def hey(url, seconds, conns, method="HEAD", accept=None, auth=None):
    """wrk 4.1 cannot do HEAD (its parser waits for the Content-Length body a HEAD answer
    never has), so HEADs go through hey, with per-request times (CSV) for the percentiles."""
    # -host: hey would otherwise put "127.0.0.1:PORT" in the TLS SNI, which rustls refuses
    # (illegal_parameter) and OpenSSL ignores; with a bare IP Go sends no SNI at all.
    argv = ["hey", "-z", f"{seconds}s", "-c", str(conns), "-m", method, "-o", "csv",
            "-host", "127.0.0.1"]
    if accept:
        argv += ["-H", f"Accept: {accept}"]
    if auth:
        argv += ["-H", f"Authorization: {auth}"]
    r = subprocess.run(argv + [url], capture_output=True, text=True, preexec_fn=prioritised)
    lat, ok, bad, end = [], 0, 0, 0.0
    for line in r.stdout.splitlines()[1:]:
        f = line.split(",")
        if len(f) < 8:
            continue
        t, status, offset = float(f[0]), f[6], float(f[7])
        end = max(end, offset + t)
        if status.startswith("2"):
            ok += 1
            lat.append(t)
        else:
            bad += 1
    if ok == 0 or bad > ok // 100:
        raise RuntimeError(f"hey {url}: {ok} ok, {bad} errors: {r.stderr[-300:]} "
                           f"{r.stdout[-300:]}")
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000  # noqa: E731
    return {"rps": (ok + bad) / end, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": bad,
            "requests": ok + bad}


# ----------------------------------------------------------------------------- spray

# 300 connections sending /auth, each request a new unknown user with a wrong password
# (issue #13 item 2): what a password spray looks like from one address.
SPRAY_LUA = r"""
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local function ch(k) return chars:sub(k + 1, k + 1) end
    out[#out + 1] = ch(math.floor(n / 262144) % 64) .. ch(math.floor(n / 4096) % 64)
      .. (b and ch(math.floor(n / 64) % 64) or "=") .. (c and ch(n % 64) or "=")
  end
  return table.concat(out)
end
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local n = 0
function request()
  n = n + 1
  local cred = b64("spray-" .. tid .. "-" .. n .. ":wrong-guess")
  return wrk.format("GET", nil, {["Authorization"] = "Basic " .. cred})
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d status=%d\n",
    summary.requests, summary.duration, summary.errors.status))
end
"""

SPRAY_CONNS = 300


class Spray:
    """wrk spraying /auth in the background while something else is measured."""

    def __init__(self, tmp, front):
        lua = os.path.join(tmp, "spray.lua")
        with open(lua, "w") as f:
            f.write(SPRAY_LUA)
        url = (f"{front.base}/auth?service={SERVICE.replace(' ', '%20')}"
               f"&scope=repository:{BLOB_REPO}:pull")
        self.p = subprocess.Popen(["wrk", "-t2", f"-c{SPRAY_CONNS}", "-d600s", "--timeout",
                                   "10s", "-s", lua, url], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, preexec_fn=prioritised)
        # Let every connection open and the first guesses land (the throttle locks the
        # address after 20 failures; from then on most guesses are answered 429).
        time.sleep(2)
        if self.p.poll() is not None:
            raise RuntimeError(f"spray did not start: {self.p.stderr.read()[-300:]}")

    def stop(self):
        """Stops wrk; returns (guesses/s, guesses answered non-2xx)."""
        self.p.send_signal(signal.SIGINT)
        out, err = self.p.communicate(timeout=30)
        m = re.search(r"RESULT requests=(\d+) duration_us=(\d+) status=(\d+)", out)
        if not m:
            return None, None
        req, us, status = (int(x) for x in m.groups())
        return req / (us / 1e6), status


def measure_spray(load, tmp, f, digest, size, rounds, wrk_secs, lim, notes):
    """A 1 GiB GET and manifest HEADs through `f`, without and during a spray; returns
    {"get": (without, with), "head": (without, with), "spray_rps": [...]}. The Bearer token
    is fetched before any spray: the sprayed address is soon locked, for /auth only."""
    f.fixed_token = f.token()
    auth = f"Bearer {f.fixed_token}"
    url = f"{f.base}/v2/{BLOB_REPO}/manifests/latest"
    got = {"get": ([], []), "head": ([], []), "spray_rps": []}

    def during(fn):
        spray = Spray(tmp, f)
        try:
            return fn()
        finally:
            rps, _ = spray.stop()
            if rps is not None:
                got["spray_rps"].append(rps)

    for rnd in range(rounds):
        log(f"spray round {rnd + 1}/{rounds}: 1 GiB GET via {f.label}, without and during "
            f"a {SPRAY_CONNS}-connection /auth spray")
        got["get"][0].append(load.measure("get1 no spray", lambda: fetch(f, digest, size, 1)[0],
                                          lim))
        got["get"][1].append(during(lambda: fetch(f, digest, size, 1)[0]))
        log(f"spray round {rnd + 1}/{rounds}: manifest HEADs ({wrk_secs}s, 32 connections)")
        got["head"][0].append(load.measure(
            "head no spray", lambda: hey(url, wrk_secs, 32, accept=OCI_MANIFEST, auth=auth)["rps"],
            lim))
        got["head"][1].append(during(
            lambda: hey(url, wrk_secs, 32, accept=OCI_MANIFEST, auth=auth)["rps"]))
    log("spray GET MiB/s (without, with):", got["get"])
    log("spray HEAD req/s (without, with):", got["head"])
    log("spray guesses/s:", [round(x) for x in got["spray_rps"]])
    notes.append(
        f"Spray: wrk -t2 -c{SPRAY_CONNS} sending /auth, each request a new unknown user "
        f"with a wrong password, from 127.0.0.1 (one address), started 2 s before the "
        f"measurement; it sent {statistics.median(got['spray_rps']) if got['spray_rps'] else 0:,.0f} "
        f"guesses/s (median). Medians of {rounds} rounds, each measured without and then "
        "during a spray. The spray's load generator shares the 2 cores too.")
    return got


def render_spray(got, label):
    rows = [
        (f"blob GET 1 GiB, 1 stream, {label}", "MiB/s", got["get"], 0.70),
        (f"manifest HEAD, 32 conns, {label}", "req/s", got["head"], 0.50),
    ]
    out = ["", f"During a password spray ({SPRAY_CONNS} connections of unknown users on "
                "/auth), regate's throughput against its own without the spray:", "",
           "| measurement | unit | without spray | during spray | ratio | target | |",
           "|---|---|--:|--:|--:|---|---|"]
    table = []
    for name, unit, (without, with_), target in rows:
        a = statistics.median(without) if without else None
        b = statistics.median(with_) if with_ else None
        r = ratio(b, a)
        verdict = "PASS" if r is not None and r >= target else "MISS"
        out.append(f"| {name} | {unit} | {fmt(a, unit)} | {fmt(b, unit)} | "
                   f"{'—' if r is None else format(r, '.2f')} | ≥ {target:.2f} | {verdict} |")
        table.append({"name": name, "unit": unit, "without": a, "during": b, "ratio": r,
                      "target": target, "verdict": verdict})
    return "\n".join(out) + "\n", table


# ----------------------------------------------------------------------------- edge cache

# Issue #19: what regate's edge cache does for manifests and small blobs, measured with
# benches/storm.rs (hey and wrk fall short: wrk 4.1 cannot read HEAD answers, hey fetches
# one URL, and both spend more CPU per request than the fronts they measure).


def storm(argv):
    """Runs benches/storm.rs; returns its JSON result (objects/s as rps, p50_ms, p99_ms)."""
    r = subprocess.run([STORM] + argv, capture_output=True, text=True, preexec_fn=prioritised)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"storm {' '.join(argv[:3])}: {r.stderr[-500:]}")
    v = json.loads(lines[-1])
    if v["objects"] == 0 or v["errors"] > v["objects"] // 100:
        raise RuntimeError(f"storm {' '.join(argv[:3])}: {v}")
    return v


def cache_plans(manifest_digest):
    """(id, what, clients, argv for a front): the edge cache's measurements."""
    blob_manifests = f"/v2/{BLOB_REPO}/manifests"

    def url(path, method, clients):
        return lambda f, secs: (["url", "--url", f"{f.base}{path}", "--method", method,
                                 "--clients", str(clients), "--seconds", str(secs)]
                                + bearer(f, f"repository:{BLOB_REPO}:pull"))

    def pull(f, secs):
        return (["pull", "--base", f.base, "--repo", STORM_REPO, "--tag", "latest",
                 "--clients", str(STORM_CLIENTS), "--seconds", str(secs)]
                + bearer(f, f"repository:{STORM_REPO}:pull"))

    return [
        ("storm", pull),
        ("m_head_digest", url(f"{blob_manifests}/{manifest_digest}", "HEAD", 32)),
        ("m_get_digest", url(f"{blob_manifests}/{manifest_digest}", "GET", 32)),
        ("m_head_tag", url(f"{blob_manifests}/latest", "HEAD", 32)),
        ("m_get_tag", url(f"{blob_manifests}/latest", "GET", 32)),
        # A few clients, so that latency is the path's and not a queue's (closed loop:
        # with 32 connections latency is 32 / throughput whatever the path costs).
        ("m_get_digest_4", url(f"{blob_manifests}/{manifest_digest}", "GET", 4)),
    ]


# The latency row is for the slow registry only (item 5: a cached manifest's p99 there).
FAST_PLANS = ("storm", "m_head_digest", "m_get_digest", "m_head_tag", "m_get_tag")


def bearer(f, scope):
    if not f.auth:
        return []
    return ["--header", f"Authorization: Bearer {f.token(scope)}"]


CACHE_FRONTS = ["direct", "nginx_http", "regate_http", "regate_nocache"]
SLOW_FRONTS = ["direct_slow", "nginx_slow", "regate_slow"]
SLOW_PLANS = ("storm", "m_get_digest", "m_get_tag", "m_get_digest_4")


def measure_cache(load, fr, manifest_digest, secs, rounds, lim, notes):
    """Every cache measurement through each front, fronts interleaved in each round;
    returns {(plan id, front key): {rps, p50_ms, p99_ms}} (medians over rounds)."""
    plans = cache_plans(manifest_digest)
    runs = [(pid, k, argv) for pid, argv in plans if pid in FAST_PLANS for k in CACHE_FRONTS]
    runs += [(pid, k, argv) for pid, argv in plans if pid in SLOW_PLANS for k in SLOW_FRONTS]
    # Warm-up: every front has answered each request once (regate's cache is filled, the
    # registry's own descriptor cache too).
    for pid, k, argv in runs:
        storm(argv(fr[k], 0.3))
    got = {}
    cpu = {}
    for rnd in range(rounds):
        for pid, k, argv in runs:
            log(f"cache round {rnd + 1}/{rounds}: {pid} via {fr[k].label} ({secs}s)")
            try:
                v = load.measure(f"{pid} {k}", lambda: storm(argv(fr[k], secs)), lim)
            except RuntimeError as e:
                log(str(e))
                notes.append(f"{pid} via {fr[k].label} failed: {str(e)[:200]}")
                continue
            got.setdefault((pid, k), []).append(v)
            cpu.setdefault(pid, []).append(v["client_cpu_s"] / v["seconds"])
    out = {}
    for key, vs in got.items():
        out[key] = {m: statistics.median(v[m] for v in vs) for m in ("rps", "p50_ms", "p99_ms")}
    log("cache rows (objects/s):", {f"{p} {k}": [round(v["rps"]) for v in vs]
                                    for (p, k), vs in got.items()})
    notes.append(
        f"Edge cache rows: benches/storm.rs (Rust, hyper, one thread, keep-alive), fronts "
        f"interleaved, median of {rounds} runs of {secs} s after a warm-up. Pull storm: "
        f"{STORM_CLIENTS} clients, each walking HEAD and GET of {STORM_REPO}:latest (an OCI "
        f"index), GET of its linux/amd64 manifest by digest, its config and {STORM_LAYERS} "
        f"layers of {STORM_LAYER_BYTES // 1024} KiB, over and over; objects/s counts every "
        f"answer, HEADs included. Manifest rows: {BLOB_REPO}'s OCI manifest, 32 clients "
        f"(4 for the latency row). The load generator used "
        f"{statistics.median(cpu.get('storm', [0])):.2f} core during the storm runs.")
    notes.append(
        f"Slow storage: the registry behind benches/storm.rs's delay relay, which holds "
        f"every request {SLOW_DELAY_MS} ms before passing it on (what S3-backed registries "
        f"see per request; this kernel has no netem); nginx and regate have their own "
        f"instances in front of the same relay.")
    return out


def cache_rows(cache):
    """The table's rows for the edge cache (issue #19 item 4) with its targets (item 5)."""
    def val(pid, k, m):
        v = cache.get((pid, k))
        return v[m] if v else None

    def row(id_, name, unit, pid, m, target=None, slow=False):
        d, n, r = (("direct_slow", "nginx_slow", "regate_slow") if slow
                   else ("direct", "nginx_http", "regate_http"))
        return {"id": id_, "name": name, "unit": unit, "direct": val(pid, d, m),
                "nginx": val(pid, n, m), "regate": val(pid, r, m), "target": target}

    rows = []
    for slow in (False, True):
        where = f", slow storage ({SLOW_DELAY_MS} ms)" if slow else ""
        sid = "slow_" if slow else ""
        rows.append(row(f"{sid}storm", f"pull storm, {STORM_CLIENTS} clients{where}",
                        "objects/s", "storm", "rps", None if slow else ("ge_direct", 3),
                        slow))
        rows.append(row(f"{sid}storm_p99", "… p99 latency", "ms", "storm", "p99_ms", None, slow))
        for pid, name, target in (
                ("m_head_digest", "manifest HEAD by digest, 32 conns", ("ge_direct", 3)),
                ("m_get_digest", "manifest GET by digest, 32 conns", ("ge_direct", 3)),
                ("m_head_tag", "manifest HEAD by tag, 32 conns", ("ge_direct", 1.5)),
                ("m_get_tag", "manifest GET by tag, 32 conns", ("ge_direct", 1.5))):
            if slow and pid not in SLOW_PLANS:
                continue
            rows.append(row(f"{sid}{pid}", name + where, "req/s", pid, "rps",
                            None if slow else target, slow))
            rows.append(row(f"{sid}{pid}_p99", "… p99 latency", "ms", pid, "p99_ms", None, slow))
    # The latency of a cached manifest where the registry is slow (item 5: p99 < 2 ms).
    rows.append(row("slow_m_get_digest_4_p50", f"manifest GET by digest, 4 conns, slow storage "
                    f"({SLOW_DELAY_MS} ms): p50", "ms", "m_get_digest_4", "p50_ms", None, True))
    rows.append(row("slow_m_get_digest_4_p99", "… p99 (regate: from its cache)", "ms",
                    "m_get_digest_4", "p99_ms", ("lt_abs", 2), True))
    return rows


def cache_notes(cache):
    """What the same regate does with its cache off, beside the rows."""
    out = []
    for pid, what in (("storm", "pull storm"), ("m_get_digest", "manifest GET by digest"),
                      ("m_get_tag", "manifest GET by tag")):
        off, on, d = (cache.get((pid, k)) for k in ("regate_nocache", "regate_http", "direct"))
        if off and on and d:
            out.append(f"{what}: {off['rps']:,.0f}/s with the cache off ({off['rps'] / d['rps']:.2f}× "
                       f"direct, p99 {off['p99_ms']:.2f} ms), {on['rps']:,.0f}/s with it on "
                       f"({on['rps'] / d['rps']:.2f}×)")
    return ["regate with `cache: {max_bytes: 0}`, same run: " + "; ".join(out) + "."] if out else []


# ----------------------------------------------------------------------------- push


def make_oci_layout(d, base_file, base_size, nonce):
    """An OCI layout with one uncompressed tar layer of base_size bytes plus a small file
    holding `nonce`, so every layout's layer has a digest the registry has never seen."""
    blobs = os.path.join(d, "blobs", "sha256")
    os.makedirs(blobs)
    tmp_layer = os.path.join(d, "layer.tmp")
    h = hashlib.sha256()
    size = 0

    def put(out, b):
        nonlocal size
        h.update(b)
        out.write(b)
        size += len(b)

    with open(tmp_layer, "wb") as out:
        n = f"{nonce} {time.time_ns()}\n".encode()
        ti = tarfile.TarInfo("nonce")
        ti.size, ti.mtime = len(n), 0
        put(out, ti.tobuf(format=tarfile.PAX_FORMAT))
        put(out, n + b"\0" * (-len(n) % 512))
        ti = tarfile.TarInfo("data.bin")
        ti.size, ti.mtime = base_size, 0
        put(out, ti.tobuf(format=tarfile.PAX_FORMAT))
        with open(base_file, "rb") as src:
            while True:
                b = src.read(4 * MIB)
                if not b:
                    break
                put(out, b)
        put(out, b"\0" * (-base_size % 512) + b"\0" * 1024)
    layer = "sha256:" + h.hexdigest()
    os.rename(tmp_layer, os.path.join(blobs, layer[7:]))

    def blob(obj):
        b = json.dumps(obj).encode()
        dg = hashlib.sha256(b).hexdigest()
        with open(os.path.join(blobs, dg), "wb") as f:
            f.write(b)
        return "sha256:" + dg, len(b)

    cdg, clen = blob({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": [layer]}})
    mdg, mlen = blob({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": cdg, "size": clen},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                  "digest": layer, "size": size}]})
    with open(os.path.join(d, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(d, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": mdg, "size": mlen,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
    return layer, size


def push(front, layout, tag):
    host = front.base.split("://", 1)[1]
    argv = ["skopeo", "--insecure-policy", "copy", "--quiet", "--preserve-digests",
            "--dest-tls-verify=false"]
    if front.auth:
        argv += ["--dest-creds", f"{USER}:{PASSWORD}"]
    argv += [f"oci:{layout}:latest", f"docker://{host}/bench/{tag}:latest"]
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, preexec_fn=prioritised)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{front.label}: skopeo push failed: {r.stderr[-800:]}")
    return dt


# ----------------------------------------------------------------------------- report


def fmt(v, unit):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if unit in ("MiB/s", "req/s", "tokens/s", "objects/s"):
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.2f}"
    if unit == "s":
        return f"{v:.2f}"
    if unit == "MiB":
        return f"{v:.1f}"
    if unit == "CPU s/GiB":
        return f"{v:.2f}"
    return f"{v}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def judge(row):
    t = row.get("target")
    if not t:
        return ""
    kind, x = t
    r = row["regate"]
    if not isinstance(r, (int, float)):
        return "MISS"
    ok = {
        "ge_direct": lambda: ratio(r, row["direct"]) is not None and ratio(r, row["direct"]) >= x,
        "ge_nginx": lambda: ratio(r, row["nginx"]) is not None and ratio(r, row["nginx"]) >= x,
        "le_direct": lambda: ratio(r, row["direct"]) is not None and ratio(r, row["direct"]) <= x,
        "ge_relay": lambda: ratio(r, row.get("relay")) is not None
        and ratio(r, row.get("relay")) >= x,
        "le_nginx": lambda: ratio(r, row["nginx"]) is not None and ratio(r, row["nginx"]) <= x,
        "ge_abs": lambda: r >= x,
        "le_abs": lambda: r <= x,
        "lt_abs": lambda: r < x,
    }[kind]()
    return "PASS" if ok else "MISS"


def target_text(row):
    t = row.get("target")
    if not t:
        return ""
    kind, x = t
    return {"ge_direct": f"≥ {x}× direct", "ge_nginx": f"≥ {x}× nginx",
            "le_direct": f"≤ {x}× direct", "ge_relay": f"≥ {x}× relay",
            "le_nginx": f"≤ {x}× nginx", "ge_abs": f"≥ {x:,}", "le_abs": f"≤ {x}",
            "lt_abs": f"< {x}"}[kind]


LOWER_IS_BETTER = ("s", "ms", "MiB", "CPU s/GiB")


def render(rows, meta, baseline):
    out = []
    out.append(f"Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['mem_gib']:.0f} GiB, "
               f"kernel {meta['kernel']}. **Load generators (curl, wrk, skopeo), the registry, "
               f"nginx and regate all share these {meta['nproc']} cores.**")
    out.append(f"Date: {meta['date']}. Command: `{meta['command']}`. Temp dir on {meta['tmpfs']}.")
    out.append(f"Versions: {meta['versions']}.")
    out.append("")
    out.append("| measurement | unit | direct | nginx | regate | regate/direct | regate/nginx "
               "| target | |")
    out.append("|---|---|--:|--:|--:|--:|--:|---|---|")
    for row in rows:
        u = row["unit"]
        rd, rn = ratio(row["regate"], row["direct"]), ratio(row["regate"], row["nginx"])
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            row["name"], u, fmt(row["direct"], u), fmt(row["nginx"], u), fmt(row["regate"], u),
            f"{rd:.2f}" if rd is not None else "—", f"{rn:.2f}" if rn is not None else "—",
            target_text(row), judge(row)))
    notes = meta.get("notes", [])
    if notes:
        out.append("")
        out.extend(f"- {n}" for n in notes)
    if baseline:
        out.append("")
        out.append(f"Against the baseline ({baseline.get('date', '?')}). *change*: regate's own "
                   "number; *vs direct*: regate's ratio to registry:2 measured in the same run, "
                   "which cancels a machine that is slower or faster overall. A row is flagged "
                   "when it is more than 10% worse by *vs direct* (by *change* where there is "
                   "no direct number):")
        out.append("")
        out.append("| measurement | baseline | now | change | vs direct | |")
        out.append("|---|--:|--:|--:|--:|---|")
        base = {r["id"]: r for r in baseline.get("rows", [])}
        for row in rows:
            b = base.get(row["id"])
            now = row["regate"]
            if not b or not isinstance(b.get("regate"), (int, float)) \
                    or not isinstance(now, (int, float)) or not b["regate"]:
                continue
            change = now / b["regate"] - 1
            was, is_ = ratio(b["regate"], b.get("direct")), ratio(now, row["direct"])
            relative = is_ / was - 1 if was and is_ is not None else None
            judged = relative if relative is not None else change
            worse = judged > 0.10 if row["unit"] in LOWER_IS_BETTER else judged < -0.10
            out.append(f"| {row['name']} | {fmt(b['regate'], row['unit'])} | "
                       f"{fmt(now, row['unit'])} | {change:+.0%} | "
                       f"{'—' if relative is None else format(relative, '+.0%')} | "
                       f"{'REGRESSED' if worse else ''} |")
    return "\n".join(out) + "\n"


def machine_meta(args, tmpfs):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) / (1 << 20)

    def ver(argv, pat=r"(\d+\.\d+[\w.+~-]*)"):
        try:
            r = subprocess.run(argv, capture_output=True, text=True)
            m = re.search(pat, r.stdout + r.stderr)
            return m.group(1) if m else "?"
        except OSError:
            return "?"

    def commit():
        try:
            h = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                               capture_output=True, text=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src",
                                    "Cargo.toml", "Cargo.lock"], capture_output=True,
                                   text=True).stdout.strip()
            return (h or "?") + (" with uncommitted changes in src/" if dirty else "")
        except OSError:
            return "?"

    versions = ", ".join([
        f"regate at {commit()}",
        "registry " + ver(["docker-registry", "--version"], r"v?(\d+\.\d+\.\d+\S*)"),
        "nginx " + ver(["nginx", "-v"]),
        "regate " + ver([args.regate, "--version"]),
        "curl " + ver(["curl", "--version"]),
        "wrk " + ver(["wrk", "--version"], r"wrk (\S+)"),
        "skopeo " + ver(["skopeo", "--version"]),
    ])
    # The binaries run.sh passes are not options a user gives.
    given, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--regate", "--storm"):
            skip = True
        elif not a.startswith(("--regate=", "--storm=")):
            given.append(a)
    cmd = "benches/run.sh" + "".join(" " + a for a in given)
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "kernel": platform.release(),
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "command": cmd, "versions": versions, "tmpfs": tmpfs}


# ----------------------------------------------------------------------------- idle connections
# Issue #20's rows: the RSS that 4,000 idle keep-alive connections (one request each, then
# idle) add to nginx and to regate, plain HTTP and TLS, in the same run. Each front is a
# fresh process (an allocator that served an earlier measurement would hide the cost),
# warmed up by 64 connections first; the client is `storm idle` (benches/storm/idle.rs).

IDLE_CONNECTIONS = 4000

# The recipe's proxying (see NGINX_CONF), with room for the connections: the recipe's 1,024
# per worker would refuse them.
NGINX_IDLE_CONF = """worker_processes auto;
worker_rlimit_nofile 20000;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
  worker_connections 8192;
}}
http {{
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  access_log off;
  upstream docker-registry {{
    server 127.0.0.1:{reg};
    keepalive 32;
  }}
  server {{
    listen 127.0.0.1:{port}{ssl};
    {tls}
    location /v2/ {{
      proxy_pass                          http://docker-registry;
      proxy_http_version                  1.1;
      proxy_set_header  Connection        "";
      proxy_set_header  Host              $http_host;
      proxy_read_timeout                  900;
      proxy_request_buffering             off;
      proxy_buffering                     off;
    }}
  }}
}}
"""


def rss_kib(pids):
    return sum(status_kib(p, "VmRSS") for p in pids)


def start_idle_nginx(tmp, name, reg, port, tls):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_IDLE_CONF.format(
            user=user, d=d, reg=reg, port=port, ssl=" ssl" if tls else "",
            tls=f"ssl_certificate {tls[0]};\n    ssl_certificate_key {tls[1]};" if tls else ""))
    p = start(name, ["nginx", "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf, "-g",
                     "daemon off;"], os.path.join(d, "stderr.log"))
    scheme = "https" if tls else "http"
    wait_http(f"{scheme}://127.0.0.1:{port}/v2/", p, name, os.path.join(d, "error.log"),
              insecure=bool(tls))
    return p


def hold_idle(addr, n, headers, tls):
    """Runs `storm idle`; returns (its report, a function that ends it and returns the
    count the server still held)."""
    argv = [STORM, "idle", "--addr", addr, "--connections", str(n)]
    for h in headers:
        argv += ["--header", h]
    if tls:
        argv.append("--tls")
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=prioritised)
    report = json.loads(p.stdout.readline() or "{}")

    def end():
        p.stdin.close()
        last = p.stdout.readline()
        p.wait()
        return json.loads(last).get("still_open") if last else None
    return report, end


def measure_idle_one(tmp, kind, tls, reg, pwhash, regate_bin):
    """RSS added by IDLE_CONNECTIONS idle connections to a fresh `kind` front."""
    port = free_port()
    name = f"idle-{kind}-{'https' if tls else 'http'}"
    if kind == "nginx":
        proc = start_idle_nginx(tmp, name, reg, port, tls)
        pids = lambda: [proc.pid] + children(proc.pid)  # noqa: E731
        headers = []
    else:
        proc = start_regate(regate_bin, tmp, name, port, reg, pwhash, tls=tls)
        pids = lambda: [proc.pid]  # noqa: E731
        scheme = "https" if tls else "http"
        tok = Front(name, name, f"{scheme}://127.0.0.1:{port}", proc, auth=True,
                    tls=bool(tls)).token()
        headers = [f"Authorization: Bearer {tok}"]
    addr = f"127.0.0.1:{port}"
    try:
        _, end = hold_idle(addr, 64, headers, bool(tls))  # warm-up
        end()
        time.sleep(1)
        before = rss_kib(pids())
        report, end = hold_idle(addr, IDLE_CONNECTIONS, headers, bool(tls))
        time.sleep(1)  # settled: every answer is written, nothing in flight
        during = rss_kib(pids())
        still = end()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    opened = report.get("opened", 0)
    log(f"idle {name}: {report}, RSS {before} -> {during} KiB, still open at the end: {still}")
    return {"before_kib": before, "during_kib": during, "opened": opened,
            "answered": report.get("answered"), "open_seconds": report.get("seconds"),
            "still_open": still,
            "per_conn_kib": round((during - before) / opened, 1) if opened else None}


def measure_idle(tmp, reg, pwhash, regate_bin, cert, key):
    got = {}
    for tls in (False, True):
        for kind in ("nginx", "regate"):
            got[(kind, tls)] = measure_idle_one(tmp, kind, (cert, key) if tls else None, reg,
                                                pwhash, regate_bin)
    return got


def idle_rows(got):
    rows = []
    for tls, target in ((False, 4), (True, 40)):
        label = "HTTPS (TLS, HTTP/1.1)" if tls else "HTTP"
        rows.append({"id": f"idle_{'https' if tls else 'http'}",
                     "name": f"RSS per idle keep-alive connection ({IDLE_CONNECTIONS:,}, one "
                             f"request each), {label}",
                     "unit": "KiB/conn", "direct": None,
                     "nginx": got[("nginx", tls)]["per_conn_kib"],
                     "regate": got[("regate", tls)]["per_conn_kib"],
                     "target": ("le_abs", target)})
    return rows


def idle_notes(got):
    parts = []
    for (kind, tls), g in got.items():
        parts.append(f"{kind} {'HTTPS' if tls else 'HTTP'}: {g['before_kib'] / 1024:.1f} -> "
                     f"{g['during_kib'] / 1024:.1f} MiB with {g['opened']:,} open "
                     f"({g['answered']:,} answered in {g['open_seconds']:.1f} s; "
                     f"{g['still_open']} still open when they closed)")
    return ["Idle connections: RSS (VmRSS; nginx: master and workers) of a fresh front after "
            f"64 warm-up connections, then with {IDLE_CONNECTIONS:,} connections from `storm "
            "idle` (each one GET /v2/ answered, then idle 1 s); nginx with the recipe's proxying "
            "and worker_connections 8192. " + "; ".join(parts) + "."]


def run_connections_only(args, tmp, tmpfs, t_start):
    """--connections-only: the idle-connection rows alone (about a minute)."""
    reg_port = free_port()
    cert, key = make_cert(tmp)
    pwhash = bcrypt_hash()
    start_registry(tmp, reg_port)
    got = measure_idle(tmp, reg_port, pwhash, args.regate, cert, key)
    meta = machine_meta(args, tmpfs)
    meta["notes"] = idle_notes(got)
    text = render(idle_rows(got), meta, None)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(os.path.splitext(args.out)[0] + "-connections.md", "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + "-connections.json", "w") as f:
        json.dump({"meta": meta, "rows": idle_rows(got),
                   "samples": {f"{k} {'https' if t else 'http'}": v
                               for (k, t), v in got.items()}}, f, indent=1, default=str)
    log(f"took {time.time() - t_start:.0f} s")


# ----------------------------------------------------------------------------- main


def serve_forever(fr, digest, tmp):
    """--serve: the stack stays up for profiling by hand (perf, strace) until Ctrl-C."""
    print(f"temp dir: {tmp}")
    for k in ("direct", "relay", "nginx_http", "nginx_https", "regate_http", "regate_https",
              "regate_nocache", "direct_slow", "nginx_slow", "regate_slow"):
        f = fr[k]
        print(f"{f.label:24} {f.base}  pid {f.proc.pid}")
    tok = fr["regate_http"].token()
    print(f"blob:     /v2/{BLOB_REPO}/blobs/{digest}")
    print(f"manifest: /v2/{BLOB_REPO}/manifests/latest (Accept: {OCI_MANIFEST})")
    print(f"pull storm: {STORM} pull --base URL --repo {STORM_REPO} --tag latest "
          f"[--header 'Authorization: Bearer ...']")
    print(f"user {USER}, password {PASSWORD}")
    print(f"a token for {BLOB_REPO} from regate HTTP: {tok}")
    print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
    while True:
        time.sleep(3600)




def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regate", required=True, help="the regate binary")
    ap.add_argument("--storm", required=True, help="benches/storm.rs's binary (run.sh builds it)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer rounds, 3 s load runs, one push per front (~2-3 min)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    ap.add_argument("--tmpdir", help="where the temp dir goes (default: /dev/shm if it has "
                                     "room, else $TMPDIR)")
    ap.add_argument("--blob-mib", type=int, default=1024, help="blob and layer size (1024)")
    ap.add_argument("--serve", action="store_true",
                    help="start and seed everything, print the endpoints, and wait (for "
                         "profiling by hand) instead of measuring")
    ap.add_argument("--max-wait", type=float, default=10,
                    help="seconds to wait for a quiet machine before each measurement (10)")
    ap.add_argument("--wait-budget", type=float, default=120,
                    help="seconds of waiting for quiet in the whole run, after which "
                         "measurements go ahead (flagged) (120)")
    ap.add_argument("--nice", type=int, default=-15,
                    help="scheduling priority of the servers and load generators (-15; as "
                         "root only, 0 to leave it): on a shared machine other processes "
                         "then take little CPU from the measurements")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "latest.md"),
                    help="the table (and, beside it, .json with every sample)")
    ap.add_argument("--save-baseline", action="store_true",
                    help="also write the results as benches/baseline.json")
    ap.add_argument("--cache-only", action="store_true",
                    help="measure only the edge cache's rows (pull storm, manifests by digest "
                         "and by tag, slow storage; about 4 minutes)")
    ap.add_argument("--scale-only", action="store_true",
                    help="measure only issue #20's rows: /auth with 10,000 users and 50 vs "
                         "5,000 rules, loading 100,000 users, /auth during reloads (regate "
                         "alone, no registry; about 4 minutes, 2 with --quick)")
    ap.add_argument("--connections-only", action="store_true",
                    help="measure only the idle-connection rows (RSS added by 4,000 idle "
                         "keep-alive connections to nginx and regate, HTTP and HTTPS)")
    ap.add_argument("--spray-only", action="store_true",
                    help="measure only the password-spray rows (GET and HEAD through regate "
                         "HTTP without and during a spray of unknown users on /auth)")
    args = ap.parse_args()

    rounds1 = 2 if args.quick else 5  # single-stream GETs
    rounds4 = 1 if args.quick else 3  # 4-stream GETs
    head_rounds = 1 if args.quick else 2
    pushes = 1 if args.quick else 3
    wrk_secs = 3 if args.quick else 10
    cache_secs = 3 if args.quick else 5
    cache_rounds = 1 if args.quick else 2
    global STORM
    STORM = args.storm
    size = args.blob_mib * MIB

    parent = args.tmpdir
    if not parent:
        parent = tempfile.gettempdir()
        try:
            st = os.statvfs("/dev/shm")
            if st.f_bavail * st.f_frsize > 6 * GIB + 4 * size:
                parent = "/dev/shm"
        except OSError:
            pass
    tmp = tempfile.mkdtemp(prefix="regate-bench-", dir=parent)
    tmpfs = "tmpfs (/dev/shm)" if parent.startswith("/dev/shm") else parent

    def cleanup():
        stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    atexit.register(cleanup)
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: sys.exit(130))
    t_start = time.time()
    load = Load()
    load.budget = args.wait_budget
    global PRIORITY
    if args.nice == 0:
        nice_note = "servers and clients ran at normal priority (--nice 0)"
    elif os.geteuid() == 0:
        PRIORITY = args.nice
        nice_note = (f"servers and clients ran at nice {args.nice}, each in a session and "
                     f"autogroup of its own")
    else:
        nice_note = "not root: servers and clients ran at normal priority"
    log(nice_note)
    if args.connections_only:
        run_connections_only(args, tmp, tmpfs, t_start)
        return

    scale_rounds = 1 if args.quick else 3
    if args.scale_only:
        notes = []
        got = scale.measure(sys.modules[__name__], args.regate, tmp, load, bcrypt_hash(),
                            wrk_secs, scale_rounds, args.max_wait, notes)
        text, table = scale.render(got)
        busy = sorted((f, k) for k, f in load.worst.items() if f > 0.2)
        if busy:
            notes.append("measured while other processes still used CPU (cores, worst kept "
                         "sample): " + ", ".join(f"{k} {f:.2f}" for f, k in busy))
        notes.append(f"Other processes on this machine: {nice_note}; waiting for quiet took "
                     f"{load.waited:.0f} s of this run.")
        meta = machine_meta(args, tmpfs)
        text = text + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        print(text)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(os.path.splitext(args.out)[0] + "-scale.md", "w") as f:
            f.write(f"Date: {meta['date']}. Command: `{meta['command']}`. Machine: "
                    f"{meta['nproc']} cores ({meta['cpu']}), kernel {meta['kernel']}.\n" + text)
        with open(os.path.splitext(args.out)[0] + "-scale.json", "w") as f:
            json.dump({"meta": meta, "rows": table, "samples": got}, f, indent=1, default=str)
        log(f"took {time.time() - t_start:.0f} s")
        return

    ports = {k: free_port() for k in ("reg", "nginx_http", "nginx_https", "regate_http",
                                      "regate_https", "relay", "slow_reg", "nginx_slow",
                                      "regate_slow", "regate_nocache")}
    cert, key = make_cert(tmp)
    pwhash = bcrypt_hash()
    log(f"temp dir {tmp}; ports {ports}")
    reg = start_registry(tmp, ports["reg"])
    slow_log = os.path.join(tmp, "delay-relay.log")
    slow = start("delay relay", [STORM, "delay", "--listen", f"127.0.0.1:{ports['slow_reg']}",
                                 "--upstream", f"127.0.0.1:{ports['reg']}", "--delay-ms",
                                 str(SLOW_DELAY_MS)], slow_log)
    wait_http(f"http://127.0.0.1:{ports['slow_reg']}/v2/", slow, "delay relay", slow_log)
    ngx = start_nginx(tmp, ports["reg"], ports["nginx_http"], ports["nginx_https"], cert, key,
                      ports["slow_reg"], ports["nginx_slow"])
    rg_http = start_regate(args.regate, tmp, "regate-http", ports["regate_http"], ports["reg"],
                           pwhash)
    rg_https = start_regate(args.regate, tmp, "regate-https", ports["regate_https"], ports["reg"],
                            pwhash, tls=(cert, key))
    # The same regate with the cache off (the RSS target without it, and what the cache
    # buys), and one in front of the slow registry.
    rg_nocache = start_regate(args.regate, tmp, "regate-nocache", ports["regate_nocache"],
                              ports["reg"], pwhash, extra="cache:\n  max_bytes: 0\n")
    rg_slow = start_regate(args.regate, tmp, "regate-slow", ports["regate_slow"],
                           ports["slow_reg"], pwhash)
    relay_log = os.path.join(tmp, "relay.log")
    relay = start("relay", [sys.executable, os.path.join(HERE, "relay.py"), str(ports["relay"]),
                            str(ports["reg"])], relay_log)
    wait_http(f"http://127.0.0.1:{ports['relay']}/v2/", relay, "relay", relay_log)

    def nginx_pids():
        return [ngx.pid] + children(ngx.pid)

    fr = {
        "direct": Front("direct", "registry", f"http://127.0.0.1:{ports['reg']}", reg),
        "nginx_http": Front("nginx_http", "nginx HTTP", f"http://127.0.0.1:{ports['nginx_http']}",
                            ngx, cpu_pids=nginx_pids),
        "nginx_https": Front("nginx_https", "nginx HTTPS",
                             f"https://127.0.0.1:{ports['nginx_https']}", ngx, tls=True,
                             cpu_pids=nginx_pids),
        "regate_http": Front("regate_http", "regate HTTP",
                             f"http://127.0.0.1:{ports['regate_http']}", rg_http, auth=True),
        "regate_https": Front("regate_https", "regate HTTPS",
                              f"https://127.0.0.1:{ports['regate_https']}", rg_https, auth=True,
                              tls=True),
        "regate_https_h1": Front("regate_https_h1", "regate HTTPS, HTTP/1.1",
                                 f"https://127.0.0.1:{ports['regate_https']}", rg_https, auth=True,
                                 tls=True, http1=True),
        "relay": Front("relay", "bare TCP relay", f"http://127.0.0.1:{ports['relay']}", relay),
        "regate_nocache": Front("regate_nocache", "regate HTTP, cache off",
                                f"http://127.0.0.1:{ports['regate_nocache']}", rg_nocache,
                                auth=True),
        "direct_slow": Front("direct_slow", "registry, slow storage",
                             f"http://127.0.0.1:{ports['slow_reg']}", slow),
        "nginx_slow": Front("nginx_slow", "nginx, slow storage",
                            f"http://127.0.0.1:{ports['nginx_slow']}", ngx, cpu_pids=nginx_pids),
        "regate_slow": Front("regate_slow", "regate, slow storage",
                             f"http://127.0.0.1:{ports['regate_slow']}", rg_slow, auth=True),
    }
    digest, manifest_digest = seed_registry(fr["direct"].base, tmp, size)
    seed_storm(fr["direct"].base)
    if args.serve:
        serve_forever(fr, digest, tmp)
    notes = []
    results = {}  # (measurement, front key) -> value

    load.server_pids = lambda: [reg.pid, rg_http.pid, rg_https.pid, relay.pid, slow.pid,
                                rg_nocache.pid, rg_slow.pid] + nginx_pids()
    lim = args.max_wait
    spray_rounds = 1 if args.quick else 3
    if args.spray_only:
        fetch(fr["regate_http"], digest, size, 1)  # warm-up
        got = measure_spray(load, tmp, fr["regate_http"], digest, size, spray_rounds, wrk_secs,
                            lim, notes)
        text, table = render_spray(got, "HTTP")
        meta = machine_meta(args, tmpfs)
        text = text + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
        print(text)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(os.path.splitext(args.out)[0] + "-spray.md", "w") as f:
            f.write(f"Date: {meta['date']}. Command: `{meta['command']}`.\n" + text)
        with open(os.path.splitext(args.out)[0] + "-spray.json", "w") as f:
            json.dump({"meta": meta, "rows": table, "samples": got}, f, indent=1, default=str)
        log(f"took {time.time() - t_start:.0f} s")
        return
    if args.cache_only:
        cache = measure_cache(load, fr, manifest_digest, cache_secs, cache_rounds, lim, notes)
        meta = machine_meta(args, tmpfs)
        rows = cache_rows(cache)
        busy = sorted((f, k) for k, f in load.worst.items() if f > 0.2)
        if busy:
            notes.append("measured while other processes still used CPU (cores, worst kept "
                         "sample): " + ", ".join(f"{k} {f:.2f}" for f, k in busy))
        notes.append(f"Other processes on this machine: {nice_note}; waiting for quiet took "
                     f"{load.waited:.0f} s of this run.")
        meta["notes"] = notes
        text = render(rows, meta, None)
        print(text)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(os.path.splitext(args.out)[0] + "-cache.md", "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + "-cache.json", "w") as f:
            json.dump({"meta": meta, "rows": rows, "samples": {f"{p} {k}": v for (p, k), v
                                                               in cache.items()}},
                      f, indent=1, default=str)
        log(f"took {time.time() - t_start:.0f} s")
        return

    # --- blob GETs -----------------------------------------------------------------------
    get_fronts = ["direct", "relay", "nginx_http", "regate_http", "nginx_https", "regate_https",
                  "regate_https_h1", "regate_nocache"]
    for k in get_fronts:  # warm-up and sanity: one GET through each front
        fetch(fr[k], digest, size, 1)
    single = {k: [] for k in get_fronts}
    multi = {k: [] for k in get_fronts}
    cpu = {k: [0.0, 0] for k in get_fronts}  # CPU seconds, bytes, single-stream GETs
    hwm = {}
    versions = {}

    def get1(f):
        c0 = cpu_seconds(f.cpu_pids())
        v, version = fetch(f, digest, size, 1)
        return v, version, cpu_seconds(f.cpu_pids()) - c0

    def get4(f):
        if f.key.startswith("regate") and not reset_hwm(f.proc.pid):
            notes.append("could not reset VmHWM (clear_refs); peak RSS is since start")
        v, _ = fetch(f, digest, size, 4)
        peak = status_kib(f.proc.pid, "VmHWM") if f.key.startswith("regate") else 0
        return v, peak

    for rnd in range(max(rounds1, rounds4)):
        log(f"blob GET round {rnd + 1}/{max(rounds1, rounds4)}")
        if rnd < rounds1:
            for k in get_fronts:
                v, versions[k], c = load.measure(f"get1 {k}", lambda: get1(fr[k]), lim)
                cpu[k][0] += c
                cpu[k][1] += size
                single[k].append(v)
        if rnd < rounds4:
            for k in get_fronts:
                v, peak = load.measure(f"get4 {k}", lambda: get4(fr[k]), lim)
                multi[k].append(v)
                if k.startswith("regate"):
                    hwm[k] = max(hwm.get(k, 0), peak)
    for k in get_fronts:
        results[("get1", k)] = statistics.median(single[k])
        results[("get4", k)] = statistics.median(multi[k])
        results[("cpu", k)] = cpu[k][0] / (cpu[k][1] / GIB)
    log("GET MiB/s single:", {k: [round(x) for x in v] for k, v in single.items()})
    log("GET MiB/s x4:", {k: [round(x) for x in v] for k, v in multi.items()})

    # --- manifest HEAD and /auth ---------------------------------------------------------
    head_fronts = ["direct", "nginx_http", "regate_http", "nginx_https", "regate_https"]
    heads = {k: [] for k in head_fronts}
    for rnd in range(head_rounds):
        for k in head_fronts:
            f = fr[k]
            tok = f.token()
            log(f"manifest HEAD via {f.label} ({wrk_secs}s, 32 connections), "
                f"round {rnd + 1}/{head_rounds}")
            try:
                heads[k].append(load.measure(
                    f"head {k}",
                    lambda: hey(f"{f.base}/v2/{BLOB_REPO}/manifests/latest", wrk_secs, 32,
                                method="HEAD", accept=OCI_MANIFEST,
                                auth=f"Bearer {tok}" if tok else None), lim))
            except RuntimeError as e:
                log(str(e))
                notes.append(f"manifest HEAD via {f.label} failed: {e}")
    for k in head_fronts:
        h = heads[k]
        results[("head", k)] = {m: statistics.median(x[m] for x in h)
                                for m in ("rps", "p50_ms", "p99_ms")} if h else "ERR"
    log("HEAD req/s:", {k: [round(x["rps"]) for x in v] for k, v in heads.items()})
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    for k in ("regate_http", "regate_https"):
        f = fr[k]
        f.token()  # the first request: bcrypt runs, the credential is cached
        url = (f"{f.base}/auth?service={SERVICE.replace(' ', '%20')}"
               f"&scope=repository:{BLOB_REPO}:pull,push")
        log(f"/auth via {f.label} ({wrk_secs}s, 32 connections)")
        try:
            results[("auth", k)] = load.measure(f"auth {k}",
                                                lambda: wrk(tmp, url, wrk_secs, 32, auth=basic),
                                                lim)
        except RuntimeError as e:
            log(str(e))
            results[("auth", k)] = "ERR"

    # --- skopeo pushes -------------------------------------------------------------------
    push_fronts = ["direct", "nginx_http", "regate_http", "nginx_https", "regate_https"]
    base_file = os.path.join(tmp, "layer-data.bin")
    random_file(base_file, size)
    times = {k: [] for k in push_fronts}
    pcpu = {k: [] for k in push_fronts}  # the front's CPU seconds per push
    n = 0
    for rnd in range(pushes):
        for k in push_fronts:
            log(f"push {rnd + 1}/{pushes} via {fr[k].label}")

            def one():
                nonlocal n
                n += 1
                layout = os.path.join(tmp, f"oci-{n}")
                layer, _ = make_oci_layout(layout, base_file, size, n)
                try:
                    c0 = cpu_seconds(fr[k].cpu_pids())
                    dt = push(fr[k], layout, f"img-{k.replace('_', '-')}-{n}")
                    pcpu[k].append(cpu_seconds(fr[k].cpu_pids()) - c0)
                    return dt
                finally:
                    shutil.rmtree(layout)
                    # The registry's copy is never read again: free the memory.
                    shutil.rmtree(os.path.join(tmp, "registry", "docker", "registry", "v2",
                                               "blobs", "sha256", layer[7:9], layer[7:]),
                                  ignore_errors=True)

            # The layout is made inside the measured function (so a retry gets a fresh
            # digest), but only skopeo's run is timed.
            try:
                times[k].append(load.measure(f"push {k}", one, lim))
            except RuntimeError as e:
                log(str(e))
                notes.append(str(e).splitlines()[0][:300])
    for k in push_fronts:
        results[("push", k)] = statistics.median(times[k]) if times[k] else "ERR"
        results[("pushcpu", k)] = statistics.median(pcpu[k]) / (size / GIB) if pcpu[k] else "ERR"
    log("push seconds:", {k: [round(x, 2) for x in v] for k, v in times.items()})

    # --- edge cache ----------------------------------------------------------------------
    cache = measure_cache(load, fr, manifest_digest, cache_secs, cache_rounds, lim, notes)

    # --- password spray (last: it locks 127.0.0.1 out of regate-http's /auth) -------------
    # --- many rules, many users (issue #20): regate processes of their own ------------------
    servers = load.server_pids
    scale_got = scale.measure(sys.modules[__name__], args.regate, tmp, load, pwhash, wrk_secs,
                              scale_rounds, lim, notes)
    load.server_pids = servers

    spray_got = measure_spray(load, tmp, fr["regate_http"], digest, size, spray_rounds,
                              wrk_secs, lim, notes)

    # --- idle connections (fresh fronts of their own) -------------------------------------
    idle_got = measure_idle(tmp, ports["reg"], pwhash, args.regate, cert, key)

    # --- table ---------------------------------------------------------------------------
    gib = f"{size // MIB} MiB" if size != GIB else "1 GiB"

    def row(id_, name, unit, d, n_, r, target=None, get=lambda x: x):
        def val(k):
            if k is None:
                return None
            v = results.get(k)
            if v is None or isinstance(v, str):
                return v
            return get(v)
        return {"id": id_, "name": name, "unit": unit, "direct": val(d), "nginx": val(n_),
                "regate": val(r), "target": target}

    h = lambda m: (lambda v: v[m])  # noqa: E731
    v_https = versions.get("regate_https", "?")
    # Targets: issue #19 item 5 (blob GETs against the bare relay and nginx, pushes against
    # nginx, /auth, RSS, the cache rows); the manifest HEAD rows keep issue #6's.
    rows = [
        row("get1_http", f"blob GET {gib}, 1 stream, HTTP", "MiB/s", ("get1", "direct"),
            ("get1", "nginx_http"), ("get1", "regate_http"), ("ge_relay", 0.95)),
        row("get4_http", f"blob GET {gib}, 4 streams (aggregate), HTTP", "MiB/s",
            ("get4", "direct"), ("get4", "nginx_http"), ("get4", "regate_http"),
            ("ge_relay", 0.95)),
        row("get1_https", f"blob GET {gib}, 1 stream, HTTPS (regate: HTTP/{v_https})", "MiB/s",
            ("get1", "direct"), ("get1", "nginx_https"), ("get1", "regate_https"),
            ("ge_nginx", 1.8)),
        row("get4_https", f"blob GET {gib}, 4 streams, HTTPS (regate: HTTP/{v_https})", "MiB/s",
            ("get4", "direct"), ("get4", "nginx_https"), ("get4", "regate_https"),
            ("ge_nginx", 2)),
        row("get1_https_h1", f"blob GET {gib}, 1 stream, HTTPS, HTTP/1.1", "MiB/s",
            ("get1", "direct"), ("get1", "nginx_https"), ("get1", "regate_https_h1"),
            ("ge_nginx", 1.8)),
        row("get4_https_h1", f"blob GET {gib}, 4 streams, HTTPS, HTTP/1.1", "MiB/s",
            ("get4", "direct"), ("get4", "nginx_https"), ("get4", "regate_https_h1"),
            ("ge_nginx", 2)),
        row("push_http", f"skopeo push {gib} layer, HTTP (median of {pushes})", "s",
            ("push", "direct"), ("push", "nginx_http"), ("push", "regate_http"),
            ("le_nginx", 1.05)),
        row("push_https", f"skopeo push {gib} layer, HTTPS (median of {pushes})", "s",
            ("push", "direct"), ("push", "nginx_https"), ("push", "regate_https"),
            ("le_nginx", 1.05)),
        row("head_http", "manifest HEAD, 32 conns, HTTP", "req/s", ("head", "direct"),
            ("head", "nginx_http"), ("head", "regate_http"), ("ge_direct", 0.95), get=h("rps")),
        row("head_http_p50", "… p50 latency", "ms", ("head", "direct"), ("head", "nginx_http"),
            ("head", "regate_http"), get=h("p50_ms")),
        row("head_http_p99", "… p99 latency", "ms", ("head", "direct"), ("head", "nginx_http"),
            ("head", "regate_http"), get=h("p99_ms")),
        row("head_https", "manifest HEAD, 32 conns, HTTPS", "req/s", ("head", "direct"),
            ("head", "nginx_https"), ("head", "regate_https"), ("ge_direct", 0.95),
            get=h("rps")),
        row("head_https_p50", "… p50 latency", "ms", ("head", "direct"), ("head", "nginx_https"),
            ("head", "regate_https"), get=h("p50_ms")),
        row("head_https_p99", "… p99 latency", "ms", ("head", "direct"), ("head", "nginx_https"),
            ("head", "regate_https"), get=h("p99_ms")),
        row("auth_http", "/auth tokens with credentials, 32 conns, HTTP", "tokens/s", None, None,
            ("auth", "regate_http"), ("ge_abs", 20000), get=h("rps")),
        row("auth_https", "/auth tokens with credentials, 32 conns, HTTPS", "tokens/s", None,
            None, ("auth", "regate_https"), ("ge_abs", 20000), get=h("rps")),
        row("pushcpu_http", "front's CPU per GiB pushed, HTTP", "CPU s/GiB",
            ("pushcpu", "direct"), ("pushcpu", "nginx_http"), ("pushcpu", "regate_http")),
        row("pushcpu_https", "front's CPU per GiB pushed, HTTPS", "CPU s/GiB",
            ("pushcpu", "direct"), ("pushcpu", "nginx_https"), ("pushcpu", "regate_https")),
        row("cpu_http", "front's CPU per GiB, 1 stream GET, HTTP", "CPU s/GiB", ("cpu", "direct"),
            ("cpu", "nginx_http"), ("cpu", "regate_http")),
        row("cpu_https", "front's CPU per GiB, 1 stream GET, HTTPS", "CPU s/GiB",
            ("cpu", "direct"), ("cpu", "nginx_https"), ("cpu", "regate_https")),
        row("cpu_https_h1", "front's CPU per GiB, 1 stream GET, HTTPS, HTTP/1.1", "CPU s/GiB",
            ("cpu", "direct"), ("cpu", "nginx_https"), ("cpu", "regate_https_h1")),
    ]
    for k, label, limit in (
            ("regate_http", f"HTTP, cache on ({CACHE_MAX_MIB} MiB)", 64 + CACHE_MAX_MIB),
            ("regate_https", f"HTTPS, HTTP/{v_https}, cache on", 64 + CACHE_MAX_MIB),
            ("regate_https_h1", "HTTPS, HTTP/1.1, cache on", 64 + CACHE_MAX_MIB),
            ("regate_nocache", "HTTP, cache off", 64)):
        rows.append({"id": f"rss_{k}", "name": f"regate peak RSS, 4 streams ({4 * size // GIB if size >= GIB else 4 * size / GIB:g} GiB), {label}",
                     "unit": "MiB", "direct": None, "nginx": None,
                     "regate": hwm.get(k, 0) / 1024 if k in hwm else None,
                     "target": ("le_abs", limit)})
    rl1, rl4 = results.get(("get1", "relay")), results.get(("get4", "relay"))
    for r in rows:
        if r["id"] in ("get1_http", "get4_http"):
            r["relay"] = rl1 if r["id"] == "get1_http" else rl4
    rows += cache_rows(cache)
    notes += cache_notes(cache)
    rows += idle_rows(idle_got)
    notes += idle_notes(idle_got)
    g1n, g4n = results.get(("get1", "regate_nocache")), results.get(("get4", "regate_nocache"))
    if g1n and g4n:
        notes.append(f"regate with the cache off moved {g1n:,.0f} MiB/s on 1 stream and "
                     f"{g4n:,.0f} on 4 (blobs over `max_object_bytes` are streamed as before).")
    d1, d4 = results.get(("get1", "direct")), results.get(("get4", "direct"))
    notes.append(
        f"Reference for any user-space proxy: a bare TCP relay (benches/relay.py: recv/send, "
        f"1 MiB buffer, no HTTP) in front of the same registry moved {rl1:,.0f} MiB/s on 1 "
        f"stream ({rl1 / d1:.2f}× direct) and {rl4:,.0f} MiB/s on 4 ({rl4 / d4:.2f}× direct), "
        f"at {results[('cpu', 'relay')]:.2f} CPU s/GiB.")
    notes += [
        "direct = registry:2 on plain HTTP with no auth (its HTTPS rows repeat its HTTP number "
        "as the reference); nginx has no auth either; regate requests carry a Bearer token "
        "(GETs, HEADs, pushes) and /auth requests carry Basic credentials.",
        f"Blob GET: curl to /dev/null; median of {rounds1} single-stream and {rounds4} "
        "4-stream rounds, fronts interleaved in each round; 4 streams = 4 curls at once, "
        f"bytes / wall time. nginx speaks HTTP/{versions.get('nginx_https', '?')} (the recipe "
        "has no http2); regate offers h2 by ALPN and curl takes it unless told --http1.1.",
        "CPU per GiB is utime+stime of the front's processes (nginx: master and workers; "
        "direct: the registry itself) over the single-stream GETs, or the median push.",
        f"Manifest HEAD: hey -c 32 -z {wrk_secs}s (HTTP/1.1 keep-alive; wrk 4.1 cannot parse "
        f"HEAD answers). /auth: wrk -t2 -c32 -d{wrk_secs}s, after one request that "
        "caches the credential. skopeo push: fresh repository and a layer with a never-seen "
        "digest each time (no mounts, no skipped blobs), --preserve-digests so skopeo sends the "
        "uncompressed layer as is.",
        "Peak RSS: VmHWM, reset through /proc/PID/clear_refs before each 4-stream GET, "
        "maximum over rounds.",
    ]
    busy = sorted((f, k) for k, f in load.worst.items() if f > 0.2)
    if busy:
        notes.append("measured while other processes still used CPU (cores, worst kept "
                     "sample): " + ", ".join(f"{k} {f:.2f}" for f, k in busy))
    notes.append(f"Other processes on this machine: {nice_note}; each measurement waited "
                 f"(up to {args.max_wait:.0f} s) for other processes to use < 0.2 core "
                 f"and was repeated (once) when they took > 0.5 core while "
                 f"it ran; waiting took {load.waited:.0f} s of this run.")
    meta = machine_meta(args, tmpfs)
    meta["notes"] = notes
    baseline = None
    bpath = os.path.join(HERE, "baseline.json")
    if os.path.exists(bpath) and not args.save_baseline:
        with open(bpath) as f:
            baseline = json.load(f)
    text = render(rows, meta, baseline)
    scale_text, scale_table = scale.render(scale_got)
    spray_text, spray_table = render_spray(spray_got, "HTTP")
    text += scale_text + spray_text
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    raw = {"date": meta["date"], "meta": meta, "rows": [{k: v for k, v in r.items()}
                                                         for r in rows],
           "samples": {"get1": single, "get4": multi, "push": times, "spray": spray_got,
                       "scale": scale_got},
           "spray": spray_table, "scale": scale_table}
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(raw, f, indent=1, default=str)
    if args.save_baseline:
        with open(bpath, "w") as f:
            json.dump(raw, f, indent=1, default=str)
        log(f"baseline written to {bpath}")
    log(f"wrote {args.out}; took {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
