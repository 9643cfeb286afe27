#!/usr/bin/env python3
"""Side-by-side proxy benchmark on loopback: direct, Shakedown, nginx, HAProxy, Envoy.

Every target forwards every path to the same upstream (`shakedown stub`). Per round, in an
order that rotates between rounds, each target gets:

* a saturation run (wrk, fixed connections) -> requests/s, and the proxy's CPU time per
  request: utime+stime of its whole process tree from /proc/PID/stat over the run, divided by
  the requests served. On two shared cores this ranks proxies better than raw throughput,
  because the load generator and the upstream compete for the same cores;
* a fixed-rate run (oha -q, latency corrected, open model) -> p50/p99, reported as added
  latency over the direct run of the same round.

Then, for Shakedown only: resident memory idle and with 1000 open keep-alive connections, the
precision of a 100 ms fixed delay (p99 over 100 ms), and the abort fraction of a 10 % abort over
100 000 requests against three standard deviations. Medians over rounds are printed as a
markdown table and written to bench/results/.

Only 127.0.0.1 is ever targeted; every run is bounded in time or count.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SHAKEDOWN = ROOT / "target" / "release" / "shakedown"
ENVOY = BENCH / ".venv" / "bin" / "envoy"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def tree(pid):
    """The pid and all its descendants."""
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
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            pass
    return total / CLK_TCK


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        try:
            m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)


def shakedown_config(port, admin, upstream, faults=""):
    return (
        f"admin: {{address: 127.0.0.1:{admin}}}\nseed: 7\n"
        f"listeners:\n  - name: bench\n    address: 127.0.0.1:{port}\n"
        f"    routes: [{{match: {{prefix: /}}, cluster: upstream}}]\n"
        f"clusters:\n  - name: upstream\n    endpoints: [127.0.0.1:{upstream}]\n" + faults
    )


def nginx_config(tmp, port, upstream):
    return f"""
daemon off;
master_process on;
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
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
  bind 127.0.0.1:{port}
  default_backend up
backend up
  server s1 127.0.0.1:{upstream}
"""


def envoy_config(port, admin, upstream):
    return f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
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
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream}}}}}}}}}]}}]
"""


def wrk(port, seconds, connections=64):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, int(errors.group(1)) if errors else 0


def oha(url, *args, timeout=120):
    """Runs oha with JSON output; returns the parsed summary."""
    cmd = ["oha", "--no-tui", "--output-format", "json", *args, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    return json.loads(out)


def percentiles_ms(summary):
    p = summary["latencyPercentiles"]
    return p["p50"] * 1000, p["p99"] * 1000


def hold_connections(port, n):
    """Opens n keep-alive connections, each with one answered request; returns the sockets."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf or not buf.endswith(b"ok\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return socks


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    sat_s = 3 if args.quick else 10
    rate_s = 3 if args.quick else 10
    abort_n = 20_000 if args.quick else 100_000

    for tool in ("wrk", "oha", "nginx", "haproxy"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            sys.exit(f"{tool} missing: run bash bench/setup.sh")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "shakedown"], cwd=ROOT, check=True)

    tmp = Path(tempfile.mkdtemp(prefix="shakedown-bench-"))
    procs = Procs()
    try:
        up = free_port()
        procs.start([str(SHAKEDOWN), "stub", "--listen", f"127.0.0.1:{up}"])
        wait_port(up)

        targets = {"direct": (up, None)}
        sd_port, sd_admin = free_port(), free_port()
        (tmp / "shakedown.yaml").write_text(shakedown_config(sd_port, sd_admin, up))
        p = procs.start([str(SHAKEDOWN), "proxy", "--config", str(tmp / "shakedown.yaml"), "--log", "warn"])
        targets["shakedown"] = (sd_port, p)

        ng_port = free_port()
        (tmp / "nginx.conf").write_text(nginx_config(tmp, ng_port, up))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        targets["nginx"] = (ng_port, procs.start([nginx, "-c", str(tmp / "nginx.conf"), "-p", str(tmp)]))

        hp_port = free_port()
        (tmp / "haproxy.cfg").write_text(haproxy_config(hp_port, up))
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        targets["haproxy"] = (hp_port, procs.start([haproxy, "-db", "-f", str(tmp / "haproxy.cfg")]))

        if ENVOY.exists():
            ev_port, ev_admin = free_port(), free_port()
            (tmp / "envoy.yaml").write_text(envoy_config(ev_port, ev_admin, up))
            targets["envoy"] = (ev_port, procs.start([str(ENVOY), "-c", str(tmp / "envoy.yaml"), "--log-level", "error", "--base-id", str(os.getpid() % 60000)]))
        else:
            print("envoy missing (bash bench/setup.sh); skipping it", file=sys.stderr)

        for name, (port, proc) in targets.items():
            try:
                wait_port(port)
            except RuntimeError:
                sys.exit(f"{name} did not start (exit code {proc.poll() if proc else '?'})")
            wrk(port, 1, 16)  # warm up pools and caches

        results = {name: {"rps": [], "cpu_us": [], "p50": [], "p99": []} for name in targets}
        names = list(targets)
        for r in range(rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                port, proc = targets[name]
                before = cpu_seconds(proc.pid) if proc else 0.0
                rps, total, errors = wrk(port, sat_s)
                after = cpu_seconds(proc.pid) if proc else 0.0
                if errors:
                    raise RuntimeError(f"{name}: {errors} non-2xx responses under load")
                results[name]["rps"].append(rps)
                if proc:
                    results[name]["cpu_us"].append((after - before) * 1e6 / total)
                p50, p99 = percentiles_ms(oha(f"http://127.0.0.1:{port}/", "-z", f"{rate_s}s", "-q", "1000", "-c", "16", "--latency-correction"))
                results[name]["p50"].append(p50)
                results[name]["p99"].append(p99)
                print(f"round {r + 1} {name:9} {rps:9.0f} req/s  cpu {results[name]['cpu_us'][-1] if proc else 0:6.1f} us/req  p50 {p50:.3f} ms  p99 {p99:.3f} ms", file=sys.stderr)

        med = {n: {k: statistics.median(v) if v else None for k, v in m.items()} for n, m in results.items()}

        # Memory of the Shakedown proxy, idle and with 1000 open keep-alive connections.
        sd_proc = targets["shakedown"][1]
        rss_idle = rss_kib(sd_proc.pid)
        socks = hold_connections(sd_port, 1000)
        time.sleep(0.5)
        rss_1k = rss_kib(sd_proc.pid)
        rss_others = {}
        for name in ("nginx", "haproxy", "envoy"):
            if name in targets:
                s2 = hold_connections(targets[name][0], 1000)
                time.sleep(0.5)
                rss_others[name] = rss_kib(targets[name][1].pid)
                for s in s2:
                    s.close()
        for s in socks:
            s.close()

        # Fault precision: a 100 ms delay, and a 10 % abort over many requests.
        fp, fa = free_port(), free_port()
        (tmp / "delay.yaml").write_text(shakedown_config(fp, fa, up, "faults:\n  - name: delay100\n    delay: {fixed_delay: 100ms, percentage: 100}\n"))
        procs.start([str(SHAKEDOWN), "proxy", "--config", str(tmp / "delay.yaml"), "--log", "warn"])
        wait_port(fp)
        d50, d99 = percentiles_ms(oha(f"http://127.0.0.1:{fp}/", "-z", f"{rate_s}s", "-q", "200", "-c", "64", "--latency-correction"))
        ap_, aa = free_port(), free_port()
        (tmp / "abort.yaml").write_text(shakedown_config(ap_, aa, up, "faults:\n  - name: abort10\n    abort: {http_status: 503, percentage: 10}\n"))
        procs.start([str(SHAKEDOWN), "proxy", "--config", str(tmp / "abort.yaml"), "--log", "warn"])
        wait_port(ap_)
        s = oha(f"http://127.0.0.1:{ap_}/", "-n", str(abort_n), "-c", "32", timeout=600)
        dist = s.get("statusCodeDistribution", {})
        n503 = int(dist.get("503", 0))
        n_all = sum(int(v) for v in dist.values())
        frac = n503 / n_all
        sd = (0.1 * 0.9 / n_all) ** 0.5
        z = (frac - 0.1) / sd

        report = render(med, rounds, sat_s, rate_s, rss_idle, rss_1k, rss_others, d50, d99, n503, n_all, frac, sd, z)
        print(report)
        out = BENCH / "results"
        out.mkdir(exist_ok=True)
        path = out / f"proxy-{datetime.date.today().isoformat()}{'-quick' if args.quick else ''}.md"
        path.write_text(report)
        print(f"written to {path.relative_to(ROOT)}", file=sys.stderr)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def render(med, rounds, sat_s, rate_s, rss_idle, rss_1k, rss_others, d50, d99, n503, n_all, frac, sd, z):
    ng = med["nginx"]
    direct = med["direct"]
    lines = [
        f"Loopback, 2 cores shared by load generator, proxy and upstream; medians of {rounds} interleaved round(s).",
        f"Saturation: `wrk -t2 -c64 -d{sat_s}s`. Added latency: `oha -q 1000 -c 16 -z {rate_s}s --latency-correction`, minus direct.",
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
    lines += [
        "",
        f"Resident memory, Shakedown: {rss_idle / 1024:.1f} MiB idle, {rss_1k / 1024:.1f} MiB with 1000 open keep-alive connections"
        + (" (" + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss_others.items()) + " with the same 1000)" if rss_others else "")
        + ".",
        "",
        f"Fault precision: 100 ms fixed delay at 200 req/s → p50 {d50:.2f} ms, p99 {d99:.2f} ms "
        f"(p99 − 100 ms = {d99 - 100:+.2f} ms; direct p99 {direct['p99']:.2f} ms).",
        f"10 % abort over {n_all} requests (seed 7): {n503} × 503 = {frac:.4f}; σ = {sd:.4f}, z = {z:+.2f} "
        f"({'within' if abs(z) <= 3 else 'OUTSIDE'} 3σ).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
