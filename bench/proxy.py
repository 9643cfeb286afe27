#!/usr/bin/env python3
"""Side-by-side proxy benchmark on loopback: direct, Shakedown, nginx, HAProxy, Envoy.

Run it through `bash bench/proxy.sh` (installs the peers, builds the release binary, raises the
fd limit). Every target forwards every path to the same upstream (`shakedown stub`). Per round,
in an order that rotates between rounds (so no target always runs first or last), each target
gets:

* a saturation run (wrk, fixed connections) -> requests/s, and the proxy's CPU time per
  request: utime+stime of its whole process tree (master and workers) from /proc/PID/stat over
  the run, divided by the requests completed. On two shared cores this ranks proxies better
  than raw throughput, because the load generator and the upstream compete for the same cores;
* a fixed-rate run (oha -q, latency corrected, open model) -> p50/p99, reported as added
  latency over the direct run of the same round.

Then, for Shakedown only: its Prometheus metrics are scraped to prove they were live; resident
memory idle and with 1000 open keep-alive connections (from a fresh start and after the load);
the precision of a 100 ms fixed delay; and the abort fraction of a 10 % abort over exactly
100 000 requests against three standard deviations. Medians over rounds are printed as a
markdown table and written to bench/results/.

Only 127.0.0.1 is ever targeted; every load run is bounded in time or count, and every
subprocess has a timeout. Every process started here is stopped on exit, also on failure,
Ctrl-C, SIGTERM or SIGHUP (and the direct children die with this process even on SIGKILL).
"""

import argparse
import ctypes
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SHAKEDOWN = ROOT / "target" / "release" / "shakedown"
ENVOY = BENCH / ".venv" / "bin" / "envoy"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOOPBACK = "127.0.0.1"

# Fault precision targets (from the project's goals).
DELAY_MS = 100.0
DELAY_SLACK_MS = 2.0
ABORT_P = 0.10
ABORT_N = 100_000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and /proc


def free_port():
    """A port the kernel says is free right now (bind to port 0 and read it back)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before listening on {LOOPBACK}:{port}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


def tree(pid):
    """The pid and all its descendants (nginx's and HAProxy's workers are the master's children)."""
    children = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid):
    """utime + stime of the whole process tree, in seconds."""
    total = 0
    for p in tree(pid):
        try:
            # The command name (field 2) may contain spaces: split after its closing paren.
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime = fields 14, 15
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


def rss_kib(pid):
    """VmRSS summed over the process tree, in KiB."""
    total = 0
    for p in tree(pid):
        try:
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


_libc = ctypes.CDLL(None, use_errno=True)


def cpu_busy(seconds=1.0):
    """Fraction of all CPU time that was not idle over a short window (from /proc/stat)."""
    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f), f[3] + f[4]  # total, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def machine_cpu_seconds():
    """Busy time of the whole machine so far, in CPU-seconds (from /proc/stat): user, nice,
    system, and irq + softirq, which the kernel charges to the interrupted task's stime too
    (loopback TCP is mostly softirq work)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6]) / CLK_TCK


def own_cpu_seconds(procs):
    """CPU-seconds of this run: this process, its reaped children (wrk, oha, stopped servers) and
    the servers still running (with their workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(cpu_seconds(p.pid) for p in procs.procs if p.poll() is None)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


def _die_with_parent():
    # PR_SET_PDEATHSIG: if this harness is killed outright (SIGKILL), the kernel sends SIGTERM
    # to the server it started, so nothing is left listening.
    _libc.prctl(1, signal.SIGTERM)


class Procs:
    """Every server this run starts, each in its own process group, with its output in a log file."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, args):
        logf = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        logf.close()
        p.bench_name = name
        self.procs.append(p)
        return p

    def log_tail(self, name, lines=15):
        try:
            return "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, p):
        """Stops one server early (it is then no longer expected to be alive)."""
        self.procs.remove(p)
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)

    def check_alive(self):
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} exited with code {p.returncode}:\n{self.log_tail(p.bench_name)}")

    def stop_all(self):
        # Kill the whole group: nginx's and HAProxy's workers go with their master.
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


def run(cmd, timeout):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=_die_with_parent)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout


# ---------------------------------------------------------------- configs


def shakedown_config(port, admin, upstream, extra=""):
    return (
        f"admin: {{address: {LOOPBACK}:{admin}}}\n"
        f"listeners:\n  - name: bench\n    address: {LOOPBACK}:{port}\n"
        f"    routes: [{{match: {{prefix: /}}, cluster: upstream}}]\n"
        f"clusters:\n  - name: upstream\n    endpoints: [{LOOPBACK}:{upstream}]\n" + extra
    )


def nginx_config(tmp, port, upstream):
    # worker_processes auto = one worker per core (2 here). Keep-alive to the upstream needs
    # an upstream block with `keepalive`, HTTP/1.1 and an empty Connection header.
    return f"""
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 65536;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream up {{ server {LOOPBACK}:{upstream}; keepalive 128; }}
  server {{
    listen {LOOPBACK}:{port};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def haproxy_config(port, upstream):
    # nbthread left at its default (one thread per available core).
    return f"""
global
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend bench
  bind {LOOPBACK}:{port}
  default_backend up
backend up
  server s1 {LOOPBACK}:{upstream}
"""


def envoy_config(port, admin, upstream):
    # Minimal static bootstrap: listener -> HTTP connection manager -> router -> one STATIC cluster.
    return f"""
admin: {{address: {{socket_address: {{address: {LOOPBACK}, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: {LOOPBACK}, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config: {{virtual_hosts: [{{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, route: {{cluster: upstream}}}}]}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {LOOPBACK}, port_value: {upstream}}}}}}}}}]}}]
"""


# ---------------------------------------------------------------- load generators


def wrk(port, seconds, connections=64):
    """Saturation run: returns (requests/s, requests completed)."""
    out = run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://{LOOPBACK}:{port}/"], timeout=seconds + 30)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if total == 0:
        raise RuntimeError(f"no request completed on port {port}:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} non-2xx responses under load on port {port}:\n{out}")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock and sum(map(int, sock.groups())) > 0:
        log(f"  warning: wrk socket errors on port {port}: {sock.group(0)}")
    return rps, total


def oha(port, *args, timeout=120, allow=("200",)):
    """Runs oha with JSON output; returns the parsed report after checking every answer was allowed."""
    cmd = ["oha", "--no-tui", "--output-format", "json", *args, f"http://{LOOPBACK}:{port}/"]
    report = json.loads(run(cmd, timeout=timeout))
    codes = report.get("statusCodeDistribution", {})
    errors = report.get("errorDistribution", {})
    unexpected = {c: n for c, n in codes.items() if c not in allow}
    # oha -z cancels the requests in flight when time is up and reports them as errors; only
    # other errors count.
    errors = {e: n for e, n in errors.items() if "aborted due to deadline" not in e}
    if unexpected or errors:
        raise RuntimeError(f"oha {' '.join(args)} on port {port}: unexpected statuses {unexpected}, errors {errors}")
    return report


def percentiles_ms(report):
    p = report["latencyPercentiles"]
    return p["p50"] * 1000, p["p99"] * 1000


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response with a content-length; returns (status, leftover bytes)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed in the response body")
        rest += chunk
    return status, rest[length:]


def hold_connections(port, n):
    """Opens n keep-alive connections, each with one answered request; returns the open sockets."""
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection((LOOPBACK, port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")  # HTTP/1.1: keep-alive by default
            socks.append(s)
        for s in socks:
            status, _ = read_response(s)
            if status != 200:
                raise RuntimeError(f"status {status} on a held connection to port {port}")
    except BaseException:
        close_all(socks)
        raise
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def memory_with_connections(pid, port, n=1000):
    """(RSS idle, RSS with n open keep-alive connections), KiB."""
    idle = rss_kib(pid)
    socks = hold_connections(port, n)
    try:
        time.sleep(0.5)  # let the server settle its per-connection buffers
        return idle, rss_kib(pid)
    finally:
        close_all(socks)


def scrape_upstream_rq_total(admin):
    """Sum of envoy_cluster_upstream_rq_total over all series on the Shakedown admin endpoint."""
    with urllib.request.urlopen(f"http://{LOOPBACK}:{admin}/stats/prometheus", timeout=10) as r:
        text = r.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("envoy_cluster_upstream_rq_total")]
    return sum(values), len(values)


def version(cmd, pattern):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        m = re.search(pattern, out.stdout + out.stderr)
        return m.group(1) if m else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------- the benchmark


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test, < 2 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    sat_s = 3 if args.quick else 10
    rate_s = 3 if args.quick else 10

    for tool in ("wrk", "oha", "nginx", "haproxy"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} missing: run bash bench/setup.sh")
    if not SHAKEDOWN.exists():
        sys.exit(f"{SHAKEDOWN} missing: cargo build --release -p shakedown")

    harness("proxy", args.quick, lambda tmp, procs: bench(rounds, sat_s, rate_s, tmp, procs), render)


def harness(kind, quick, work, render_fn):
    """Runs `work(tmp, procs)` with what every benchmark here needs around it: signals unwind
    into the cleanup, a warning when the CPUs are busy before or other processes take CPU during
    the run, the rendered report printed and written to bench/results/<kind>-<date>[-quick].md,
    and every process started stopped and the temp directory removed, whatever happens."""
    # A Ctrl-C, SIGTERM or SIGHUP unwinds through the `finally` below, which stops every server
    # (and subprocess.run kills a load generator it is waiting for).
    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)

    busy = cpu_busy()
    if busy > 0.10:
        log(f"warning: the CPUs are {busy:.0%} busy before the run; another job on these cores skews the numbers")

    tmp = Path(tempfile.mkdtemp(prefix=f"shakedown-bench-{kind}-"))
    procs = Procs(tmp)
    started, machine0, own0 = time.time(), machine_cpu_seconds(), own_cpu_seconds(procs)
    try:
        results = work(tmp, procs)
        results["busy"] = busy
        results["elapsed_s"] = time.time() - started
        # CPU the rest of the machine used meanwhile (a build, a test suite): the numbers are only
        # comparable between runs where this is near zero.
        results["foreign_s"] = (machine_cpu_seconds() - machine0) - (own_cpu_seconds(procs) - own0)
        if skewed(results["foreign_s"], results["elapsed_s"]):
            log(f"warning: other processes used {results['foreign_s']:.1f} CPU-s during the run; the numbers are skewed")
        report = render_fn(**results)
        print(report)
        out = BENCH / "results"
        out.mkdir(exist_ok=True)
        path = out / f"{kind}-{datetime.date.today().isoformat()}{'-quick' if quick else ''}.md"
        path.write_text(report)
        log(f"written to {path.relative_to(ROOT)} in {time.time() - started:.0f}s")
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        log(f"bench failed: {e}")
        sys.exit(1)
    finally:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the cleanup
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def skewed(foreign_s, elapsed_s):
    """Whether other processes (a build, a test suite) used enough CPU to skew the numbers."""
    return foreign_s > 0.02 * elapsed_s * os.cpu_count()


def start_target(procs, name, args, port):
    p = procs.start(name, args)
    try:
        wait_port(port, p)
    except RuntimeError as e:
        raise RuntimeError(f"{name} did not start: {e}\n{procs.log_tail(name)}") from None
    return p


def bench(rounds, sat_s, rate_s, tmp, procs):
    # Run a private copy: a rebuild of target/release during the run (someone else's cargo) must
    # not put a different binary under the later measurements.
    version_sd = version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], r"(\S+)")
    sd = str(tmp / "shakedown")
    shutil.copy2(SHAKEDOWN, sd)
    up = free_port()
    start_target(procs, "upstream", [sd, "stub", "--listen", f"{LOOPBACK}:{up}"], up)

    # name -> (port, process whose tree is measured; None for the upstream itself)
    targets = {"direct": (up, None)}

    sd_port, sd_admin = free_port(), free_port()
    (tmp / "shakedown.yaml").write_text(shakedown_config(sd_port, sd_admin, up))
    targets["shakedown"] = (sd_port, start_target(procs, "shakedown", [sd, "proxy", "--config", str(tmp / "shakedown.yaml"), "--log", "warn"], sd_port))

    ng_port = free_port()
    (tmp / "nginx.conf").write_text(nginx_config(tmp, ng_port, up))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    targets["nginx"] = (ng_port, start_target(procs, "nginx", [nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)], ng_port))

    hp_port = free_port()
    (tmp / "haproxy.cfg").write_text(haproxy_config(hp_port, up))
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    targets["haproxy"] = (hp_port, start_target(procs, "haproxy", [haproxy, "-db", "-f", str(tmp / "haproxy.cfg")], hp_port))

    if ENVOY.exists():
        ev_port, ev_admin = free_port(), free_port()
        (tmp / "envoy.yaml").write_text(envoy_config(ev_port, ev_admin, up))
        # A distinct --base-id so it never clashes with another Envoy's shared memory on the box.
        targets["envoy"] = (ev_port, start_target(procs, "envoy", [str(ENVOY), "-c", str(tmp / "envoy.yaml"), "--log-level", "error", "--base-id", str(os.getpid() % 60000)], ev_port))
    else:
        log("envoy missing (bash bench/setup.sh); skipping it")

    # Memory of a Shakedown proxy that has served nothing yet, from a second, fresh instance.
    fresh_port, fresh_admin = free_port(), free_port()
    (tmp / "fresh.yaml").write_text(shakedown_config(fresh_port, fresh_admin, up))
    fresh = start_target(procs, "shakedown-fresh", [sd, "proxy", "--config", str(tmp / "fresh.yaml"), "--log", "warn"], fresh_port)
    time.sleep(0.3)
    rss_fresh = memory_with_connections(fresh.pid, fresh_port)
    procs.stop(fresh)

    sent_through_shakedown = 0
    for name, (port, _) in targets.items():
        _, n = wrk(port, 1, 16)  # warm up pools and caches
        if name == "shakedown":
            sent_through_shakedown += n

    results = {name: {"rps": [], "cpu_us": [], "p50": [], "p99": []} for name in targets}
    names = list(targets)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            port, proc = targets[name]
            before = cpu_seconds(proc.pid) if proc else 0.0
            rps, total = wrk(port, sat_s)
            after = cpu_seconds(proc.pid) if proc else 0.0
            results[name]["rps"].append(rps)
            if proc:
                results[name]["cpu_us"].append((after - before) * 1e6 / total)
            rep = oha(port, "-z", f"{rate_s}s", "-q", "1000", "-c", "16", "--latency-correction", timeout=rate_s + 60)
            p50, p99 = percentiles_ms(rep)
            results[name]["p50"].append(p50)
            results[name]["p99"].append(p99)
            if name == "shakedown":
                sent_through_shakedown += total + sum(int(v) for v in rep["statusCodeDistribution"].values())
            procs.check_alive()
            cpu = f"{results[name]['cpu_us'][-1]:6.1f}" if proc else "     —"
            log(f"round {r + 1}/{rounds} {name:9} {rps:9.0f} req/s  cpu {cpu} µs/req  p50 {p50:.3f} ms  p99 {p99:.3f} ms")

    med = {n: {k: statistics.median(v) if v else None for k, v in m.items()} for n, m in results.items()}

    # Metrics are always on in Shakedown: prove they were live under the load just measured.
    rq_total, series = scrape_upstream_rq_total(sd_admin)
    if rq_total <= 0:
        raise RuntimeError(f"envoy_cluster_upstream_rq_total is {rq_total} after the load ({series} series)")

    # Memory after the load, with the same 1000 connections, for Shakedown and each peer.
    rss = {name: memory_with_connections(proc.pid, port) for name, (port, proc) in targets.items() if proc}
    log(f"memory: fresh shakedown {rss_fresh[0] / 1024:.1f}/{rss_fresh[1] / 1024:.1f} MiB; "
        + ", ".join(f"{k} {a / 1024:.1f}/{b / 1024:.1f} MiB" for k, (a, b) in rss.items()) + " (idle/1000 conns)")

    # Fault precision: a 100 ms fixed delay on every request, at a moderate fixed rate.
    fp, fa = free_port(), free_port()
    (tmp / "delay.yaml").write_text(shakedown_config(fp, fa, up, "faults:\n  - name: delay100\n    delay: {fixed_delay: 100ms, percentage: 100}\n"))
    start_target(procs, "shakedown-delay", [sd, "proxy", "--config", str(tmp / "delay.yaml"), "--log", "warn"], fp)
    # 200 req/s x 100 ms = 20 requests in flight on average; 64 connections leave room for bursts.
    d50, d99 = percentiles_ms(oha(fp, "-z", f"{rate_s}s", "-q", "200", "-c", "64", "--latency-correction", timeout=rate_s + 60))
    log(f"delay 100 ms: p50 {d50:.2f} ms, p99 {d99:.2f} ms")

    # A 10 % abort over exactly 100 000 requests, seeded, against 3 standard deviations.
    ap_, aa = free_port(), free_port()
    (tmp / "abort.yaml").write_text(shakedown_config(ap_, aa, up, "seed: 7\nfaults:\n  - name: abort10\n    abort: {http_status: 503, percentage: 10}\n"))
    start_target(procs, "shakedown-abort", [sd, "proxy", "--config", str(tmp / "abort.yaml"), "--log", "warn"], ap_)
    rep = oha(ap_, "-n", str(ABORT_N), "-c", "32", timeout=600, allow=("200", "503"))
    dist = rep["statusCodeDistribution"]
    n503, n_all = int(dist.get("503", 0)), sum(int(v) for v in dist.values())
    if n_all != ABORT_N:
        raise RuntimeError(f"abort run answered {n_all} of {ABORT_N} requests")
    procs.check_alive()

    return dict(
        med=med, rounds=rounds, sat_s=sat_s, rate_s=rate_s, rss_fresh=rss_fresh, rss=rss,
        rq_total=rq_total, sent=sent_through_shakedown, d50=d50, d99=d99, n503=n503, n_all=n_all,
        versions=dict(
            shakedown=version_sd,
            nginx=version([shutil.which("nginx") or "/usr/sbin/nginx", "-v"], r"nginx/(\S+)"),
            haproxy=version([shutil.which("haproxy") or "/usr/sbin/haproxy", "-v"], r"version (\S+)"),
            envoy=version([str(ENVOY), "--version"], r"/(\d+\.\d+\.\d+)/"),
            wrk=version(["wrk", "-v"], r"wrk (\S+)"),
            oha=version(["oha", "--version"], r"oha (\S+)"),
        ),
    )


def render(med, rounds, sat_s, rate_s, rss_fresh, rss, rq_total, sent, d50, d99, n503, n_all, versions, busy, elapsed_s, foreign_s):
    ng, direct = med["nginx"], med["direct"]
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    v = versions
    lines = [
        f"{datetime.date.today().isoformat()}, Shakedown {v['shakedown']}; nginx {v['nginx']} (`worker_processes auto` = "
        f"{os.cpu_count()} workers, upstream keep-alive), HAProxy {v['haproxy']} (`http-reuse always`, default nbthread), "
        f"Envoy {v['envoy']} (static bootstrap, default concurrency); wrk {v['wrk']}, oha {v['oha']}.",
        f"Loopback, {os.cpu_count()} cores shared by load generator, proxy and upstream (`shakedown stub`); "
        f"medians of {rounds} interleaved round(s); CPUs {busy:.0%} busy just before; {elapsed_s:.0f} s in all, during which other processes "
        f"used {foreign_s:.1f} CPU-s ({foreign_s / (elapsed_s * os.cpu_count()):.1%} of the machine).",
        f"Saturation: `wrk -t2 -c64 -d{sat_s}s`; CPU = utime+stime of the proxy's process tree over that run ÷ requests. "
        f"Latency: `oha -q 1000 -c 16 -z {rate_s}s --latency-correction`; added = target − direct, same round.",
        "",
        "| target | req/s | vs nginx | CPU µs/req | vs nginx | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        cpu = m["cpu_us"]
        cpu_abs = "—" if cpu is None else f"{cpu:.1f}"
        cpu_rel = "—" if cpu is None else f"{cpu / ng['cpu_us']:.2f}×"
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['rps'] / ng['rps']:.2f}× | {cpu_abs} | {cpu_rel} | "
            f"{m['p50']:.3f} | {m['p99']:.3f} | {m['p50'] - direct['p50']:+.3f} | {m['p99'] - direct['p99']:+.3f} |"
        )
    sd_idle, sd_1k = rss["shakedown"]
    peers = ", ".join(f"{k} {mib(b)}" for k, (_, b) in rss.items() if k != "shakedown")
    delay_limit = DELAY_MS + DELAY_SLACK_MS + direct["p99"]
    sd_ = (ABORT_P * (1 - ABORT_P) / n_all) ** 0.5
    frac = n503 / n_all
    z = (frac - ABORT_P) / sd_
    lines += [
        "",
        f"Resident memory (VmRSS), Shakedown: fresh start {mib(rss_fresh[0])} MiB idle, {mib(rss_fresh[1])} MiB with 1000 open "
        f"keep-alive connections; after the load {mib(sd_idle)} MiB idle, {mib(sd_1k)} MiB with 1000 "
        f"(after the load, with the same 1000: {peers} MiB).",
        "",
        f"Metrics live: `envoy_cluster_upstream_rq_total` = {rq_total:.0f} on `/stats/prometheus` "
        f"(the load generators counted {sent} completed requests through Shakedown).",
        "",
        f"Fault precision: 100 ms fixed delay, `oha -q 200 -c 64 -z {rate_s}s --latency-correction` → p50 {d50:.2f} ms "
        f"({d50 - DELAY_MS:+.2f}), p99 {d99:.2f} ms ({d99 - DELAY_MS:+.2f}); target p99 ≤ 100 + 2 + direct p99 = "
        f"{delay_limit:.2f} ms: {'met' if d99 <= delay_limit else '**not met**'}.",
        f"10 % abort (seed 7), `oha -n {n_all} -c 32`: {n503} × 503 = {frac:.4f}; σ = {sd_:.4f}, z = {z:+.2f}: "
        f"{'within' if abs(z) <= 3 else '**outside**'} 3σ.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
