#!/usr/bin/env python3
"""Side-by-side TCP proxy benchmark on loopback: direct, Shakedown's Toxiproxy-compatible TCP proxy
(`shakedown toxiproxy`), and `fault` (crates.io `fault-cli` 1.x), all in one run.

Run it through `bash bench/tcp.sh` (installs `fault`, builds the release binary). Two upstreams,
both small Python servers started from this file (`_bulk`, `_echo`), sit behind every target:

* bulk: the client sends a 10-byte header (direction, flags, byte count). Server -> client: the
  server streams N bytes with 1 MiB `sendall`s, then half-closes; client -> server: the client
  streams N bytes, half-closes, and the server answers with the count (and a CRC-32 when asked)
  it received. Both ends move 1 MiB per syscall (`sendall` / `recv_into` on a preallocated
  buffer), so Python costs nothing per byte; the direct figure is the check that neither end is
  the bottleneck (an `iperf3 -R` run on the same path each round is shown beside it).
  The payload repeats with a period of 1 MiB + 13 bytes, so a chunk lost, repeated or reordered
  changes the CRC-32.
* echo: answers every byte it reads (epoll, one process), for the connection rate and the latency
  probe.

Each target is one listening port per upstream: direct (the upstream itself), Shakedown (one
`shakedown toxiproxy` server, two proxies created over its REST API, Toxiproxy's), fault (one
`fault run` process, two TCP proxies with no fault, plus a third with the latency fault), and,
for scale only, HAProxy in TCP mode (what a mature userspace proxy moves on the same box; no
latency fault).

Per round, in an order that rotates between rounds (so no target always runs first or last):

* throughput, MB/s (10^6 bytes/s): one bulk transfer server -> client and one client -> server,
  each timed from the header to the last byte (or the server's count), byte counts checked on
  every transfer; the proxy's CPU time (utime + stime of its process tree) per GiB moved;
* connection rate: 4 client processes (--clients), each opening 3000 connections (--conns) one
  after another (connect, 1 byte, its echo, close), started together; rate = all answered
  connections over the wall time from the common start to the last client's end; the proxy's
  CPU per connection;
* latency probe: 8 client processes, started staggered, each taking samples one after another,
  on a fresh connection each: connect, then the time from sending 1 byte to its echo (without a
  fault 100 ms apart, so the probes load the cores the same with and without one). Direct, both
  proxies without a fault, and both proxies with a 100 ms latency fault on the way back to the
  client (Shakedown: a Toxiproxy `latency` toxic, `stream: downstream`, added and removed over
  the API every round, and checked gone right after; fault: `type: latency`, `flow: to-client`,
  a fixed 100 ms, which fault applies once, to the first bytes of each stream, hence a fresh
  connection per sample). Samples are pooled over the rounds; added = target - direct at the
  same percentile; error = added - 100 ms.

Before the rounds every target moves 256 MiB each way with a CRC-32 checked end to end.

Only 127.0.0.1 is ever targeted; every transfer and loop is bounded in bytes or count and every
subprocess has a timeout. Every process started here is stopped on exit, also on failure, Ctrl-C,
SIGTERM or SIGHUP (and dies with this process even on SIGKILL). The process and /proc helpers
are shared with bench/proxy.py.
"""

import argparse
import datetime
import json
import os
import random
import re
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from proxy import (
    BENCH, LOOPBACK, ROOT, SHAKEDOWN, _die_with_parent, cpu_seconds, free_port, harness, log,
    machine_cpu_seconds, own_cpu_seconds, run, start_target, version,
)

FAULT = BENCH / ".venv" / "bin" / "fault"
HERE = Path(__file__).resolve()

CHUNK = 1 << 20                 # bytes per send/recv syscall on both ends
PERIOD = CHUNK + 13             # the payload's period: not a multiple of any chunk size
HEADER = struct.Struct("!ccQ")  # direction (b"S" server->client, b"R" client->server), flags, bytes
REPLY = struct.Struct("!QI")    # client->server: bytes received, CRC-32 (0 unless asked)
F_CRC = b"\x01"
STALL_S = 10                    # a bulk transfer without progress for this long has stalled
GIB = 1 << 30

LATENCY_MS = 100.0
LATENCY_SLACK_MS = 2.0           # target: the 100 ms fault's p99 within +2 ms
TARGET_VS_DIRECT = 0.9           # target: Shakedown's throughput >= 0.9x direct
TARGET_VS_FAULT = 1.0            # ... and >= fault's

TOXIC = {"name": "lat", "type": "latency", "stream": "downstream", "toxicity": 1.0,
         "attributes": {"latency": int(LATENCY_MS), "jitter": 0}}


# ---------------------------------------------------------------- the payload


def payload():
    """Two periods of seeded random bytes back to back: any CHUNK-long window of the stream is
    one slice of it."""
    block = random.Random(20261204).randbytes(PERIOD)
    return memoryview(block + block)


def send_stream(sock, n, data):
    off = 0
    while n:
        k = min(CHUNK, n)
        sock.sendall(data[off:off + k])
        off = (off + k) % PERIOD
        n -= k


def expected_crc(n, data):
    crc, off = 0, 0
    while n:
        k = min(CHUNK, n)
        crc = zlib.crc32(data[off:off + k], crc)
        off = (off + k) % PERIOD
        n -= k
    return crc


class Stalled(Exception):
    def __init__(self, got):
        super().__init__(f"no byte for {STALL_S} s after {got} bytes")
        self.got = got


def recv_stream(sock, buf, crc=False):
    """Reads to EOF: (bytes, CRC-32 or 0). Raises Stalled if a socket timeout passes without a byte."""
    view, got, c = memoryview(buf), 0, 0
    while True:
        try:
            k = sock.recv_into(view)
        except socket.timeout:
            raise Stalled(got) from None
        if not k:
            return got, c
        got += k
        if crc:
            c = zlib.crc32(view[:k], c)


def recv_exact(sock, n):
    b = b""
    while len(b) < n:
        chunk = sock.recv(n - len(b))
        if not chunk:
            return None
        b += chunk
    return b


# ---------------------------------------------------------------- upstreams (child processes)


def serve_bulk(port):
    """The bulk upstream: a thread per connection, blocking sockets, 1 MiB per syscall."""
    data = payload()

    def handle(conn):
        with conn:
            try:
                head = recv_exact(conn, HEADER.size)
                if head is None:
                    return  # a readiness probe: connected and closed
                direction, flags, n = HEADER.unpack(head)
                if direction == b"S":
                    send_stream(conn, n, data)
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(30)
                    while conn.recv(65536):  # until the client closes
                        pass
                elif direction == b"R":
                    got, crc = recv_stream(conn, bytearray(CHUNK), crc=flags == F_CRC)
                    conn.sendall(REPLY.pack(got, crc))
            except OSError:
                pass

    serve(port, lambda conn: threading.Thread(target=handle, args=(conn,), daemon=True).start())


def serve(port, on_conn):
    with socket.socket() as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((LOOPBACK, port))
        ls.listen(4096)
        while True:
            conn, _ = ls.accept()
            on_conn(conn)


def serve_echo(port):
    """The echo upstream: one epoll loop, non-blocking, answers every byte it reads."""
    sel = selectors.DefaultSelector()
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((LOOPBACK, port))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s is ls:
                while True:
                    try:
                        conn, _ = ls.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
                if data:
                    s.send(data)  # a few bytes at a time: always fits the send buffer
                    continue
            except OSError:
                pass
            sel.unregister(s)
            s.close()


# ---------------------------------------------------------------- clients (child processes)


def client_bulk(port, direction, n, crc):
    """One bulk transfer; prints JSON {bytes, seconds, crc_ok, error}. A transfer that makes no
    progress for STALL_S seconds is reported as stalled, with the bytes moved so far."""
    data = payload()
    buf = bytearray(CHUNK)
    got, c, error = 0, 0, None
    t0 = t1 = time.perf_counter()
    with socket.socket() as s:
        s.settimeout(STALL_S)  # a poll before each 1 MiB call: nothing, per byte
        s.connect((LOOPBACK, port))
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            s.sendall(HEADER.pack(direction.encode(), F_CRC if crc else b"\0", n))
            if direction == "S":
                got, c = recv_stream(s, buf, crc)
            else:
                send_stream(s, n, data)
                s.shutdown(socket.SHUT_WR)
                reply = recv_exact(s, REPLY.size)
                if reply is None:
                    error = "closed without the server's count"
                else:
                    got, c = REPLY.unpack(reply)
        except Stalled as e:
            got, error = e.got, str(e)
        except socket.timeout:
            error = f"stalled: no progress for {STALL_S} s"
        except OSError as e:
            error = repr(e)
        t1, c1 = time.perf_counter(), time.process_time()
    crc_ok = (c == expected_crc(n, data)) if crc and error is None else None
    print(json.dumps({"bytes": got, "seconds": t1 - t0, "cpu": c1 - c0, "crc_ok": crc_ok, "error": error}))


def client_crr(port, count, start_at):
    """count connections one after another: connect, 1 byte, its echo, close. Starts at the
    monotonic time start_at (shared by the clients of one run); prints JSON."""
    addr = (LOOPBACK, port)
    ok = errors = 0
    first_error = None
    while time.monotonic() < start_at:
        time.sleep(0.001)
    t0, c0 = time.monotonic(), time.process_time()
    for _ in range(count):
        s = socket.socket()
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect(addr)
            s.send(b"x")
            if s.recv(1) == b"x":
                ok += 1
            else:
                errors += 1
                first_error = first_error or "connection closed before the echo"
        except OSError as e:
            errors += 1
            first_error = first_error or repr(e)
        finally:
            s.close()
    end, cpu = time.monotonic(), time.process_time() - c0
    print(json.dumps({"ok": ok, "errors": errors, "start": t0, "end": end, "cpu": cpu, "first_error": first_error}))


def client_probe(port, count, start_at, pause_ms):
    """count samples, each on a fresh connection: ms from sending 1 byte to its echo, pause_ms
    between samples. Starts at the monotonic time start_at, when every probe process of the run
    has started (a Python starting up on the same cores would otherwise show as latency)."""
    out, errors, first_error = [], 0, None
    while time.monotonic() < start_at:
        time.sleep(0.001)
    for _ in range(count):
        s = socket.socket()
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.connect((LOOPBACK, port))
            t0 = time.perf_counter()
            s.send(b"x")
            b = s.recv(1)
            t1 = time.perf_counter()
            if b == b"x":
                out.append((t1 - t0) * 1000)
            else:
                errors += 1
                first_error = first_error or "connection closed before the echo"
        except OSError as e:
            errors += 1
            first_error = first_error or repr(e)
        finally:
            s.close()
        time.sleep(pause_ms / 1000)
    print(json.dumps({"ms": out, "errors": errors, "first_error": first_error}))


def child(args, timeout):
    """Runs one of this file's client modes in a child process; returns its JSON."""
    return json.loads(run([sys.executable, str(HERE), *map(str, args)], timeout=timeout))


def children(argsets, timeout):
    """Runs several client processes at once; returns their JSON outputs. All are killed on a
    timeout or on this process's exit."""
    ps = [subprocess.Popen([sys.executable, str(HERE), *map(str, a)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, preexec_fn=_die_with_parent) for a in argsets]
    deadline = time.time() + timeout
    try:
        outs = []
        for p in ps:
            out, err = p.communicate(timeout=max(0.1, deadline - time.time()))
            if p.returncode != 0:
                raise RuntimeError(f"client {p.args[2:]} failed ({p.returncode}):\n{err[-2000:]}")
            outs.append(json.loads(out))
        return outs
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
                p.wait()


# ---------------------------------------------------------------- the targets


def http(api_port, method, path, body=None):
    """(status, parsed JSON or None) from the Shakedown Toxiproxy API; no proxy env honoured."""
    req = urllib.request.Request(
        f"http://{LOOPBACK}:{api_port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text.decode(errors="replace")


def expect(api_port, method, path, body, status):
    got, data = http(api_port, method, path, body)
    if got != status:
        raise RuntimeError(f"shakedown toxiproxy: {method} {path} answered {got} (expected {status}): {data}")
    return data


def start_shakedown(procs, sd, api, upstreams):
    """`shakedown toxiproxy` on api, one proxy per upstream; returns (process, {name: port})."""
    p = procs.start("shakedown", [sd, "toxiproxy", "--host", LOOPBACK, "--port", str(api), "--log", "warn"])
    deadline = time.time() + 20
    while True:
        if p.poll() is not None:
            raise RuntimeError(f"shakedown toxiproxy exited with code {p.returncode}:\n{procs.log_tail('shakedown')}")
        try:
            if http(api, "GET", "/version")[0] == 200:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError(f"shakedown toxiproxy: GET /version not 200 after 20s:\n{procs.log_tail('shakedown')}")
        time.sleep(0.05)
    ports = {}
    for name, up in upstreams.items():
        created = expect(api, "POST", "/proxies", {"name": name, "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{up}"}, 201)
        host, port = created["listen"].rsplit(":", 1)
        if host != LOOPBACK or int(port) == 0:
            raise RuntimeError(f"shakedown toxiproxy: proxy {name} listens on {created['listen']!r}")
        ports[name] = int(port)
    return p, ports


def haproxy_tcp_config(ports, ups):
    """HAProxy 2.6 in TCP mode, one listener per upstream, with `option splice-auto` (it splices
    when it sees a bulk transfer, as Shakedown does on a direction without toxics) and its
    default threads (one per core)."""
    out = ["global", "  maxconn 4096", "defaults", "  mode tcp", "  option splice-auto", "  timeout connect 5s",
           "  timeout client 60s", "  timeout server 60s"]
    for name, port in ports.items():
        out += [f"listen {name}", f"  bind {LOOPBACK}:{port}", f"  server s1 {LOOPBACK}:{ups[name]}"]
    return "\n".join(out) + "\n"


def fault_config(proxies, latency):
    """A fault run file: proxies = {name: (listen port, upstream port)}; the proxies named in
    latency get a fixed 100 ms latency on the path to the client, the others no fault. One
    phase without a duration: it runs until the process is stopped."""
    lines = ["schema_version: 1", "name: shakedown-tcp-bench", "proxies:"]
    for name, (listen, up) in proxies.items():
        lines += [f"  - name: {name}", "    protocol: tcp", f"    listen: {LOOPBACK}:{listen}", f"    upstream: {LOOPBACK}:{up}"]
    lines += ["phases:", "  - name: steady", "    proxies:"]
    for name in proxies:
        lines.append(f"      - proxy: {name}")
        if name in latency:
            lines += ["        faults:", "          - type: latency", "            flow: to-client",
                      f"            distribution: {{type: uniform, min_ms: {LATENCY_MS}, max_ms: {LATENCY_MS}}}"]
        else:
            lines.append("        faults: []")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- measurements


def bulk(port, direction, n, crc=False):
    """One transfer: (MB/s, the client's CPU seconds over it). Fails unless every byte arrived (and the CRC matched)."""
    # The client gives up after STALL_S without progress; this bounds a slow trickle (10 MB/s).
    r = child(["_client_bulk", port, direction, n, int(crc)], timeout=30 + n / 10e6)
    if r["bytes"] != n or r["error"]:
        raise RuntimeError(f"port {port} {'server->client' if direction == 'S' else 'client->server'}: "
                           f"{r['bytes']} of {n} bytes arrived ({r['error'] or 'early EOF'})")
    if crc and not r["crc_ok"]:
        raise RuntimeError(f"port {port} {direction}: all {n} bytes arrived but the CRC-32 differs: data corrupted or reordered")
    return n / r["seconds"] / 1e6, r["cpu"]


def crr(port, clients, conns):
    """((connections/s, errors, first error), the clients' CPU seconds over their loops)."""
    start_at = time.monotonic() + 0.5  # after every client process has started
    outs = children([["_client_crr", port, conns, start_at] for _ in range(clients)], timeout=120)
    ok = sum(o["ok"] for o in outs)
    errors = sum(o["errors"] for o in outs)
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    first = next((o["first_error"] for o in outs if o["first_error"]), None)
    return (ok / wall, errors, first), sum(o["cpu"] for o in outs)


def probe(port, procs_n, samples, fault):
    """Latency samples (ms) from procs_n probe processes: (samples, errors, first error).

    The processes start staggered over one 100 ms period, and without a fault each pauses
    100 ms between samples: with or without the fault, about procs_n samples are in flight per
    100 ms, spread evenly, so the probes do not compete with each other for the two cores, and
    the direct figure is taken under the same conditions as the fault's."""
    per = max(1, samples // procs_n)
    pause = 0 if fault else LATENCY_MS
    start_at = time.monotonic() + 0.5
    outs = children([["_client_probe", port, per, start_at + i * LATENCY_MS / 1000 / procs_n, pause] for i in range(procs_n)],
                    timeout=30 + per * (LATENCY_MS + 50) / 1000 * 2)
    ms = [x for o in outs for x in o["ms"]]
    errors = sum(o["errors"] for o in outs)
    first = next((o["first_error"] for o in outs if o["first_error"]), None)
    return ms, errors, first


def pct(xs, q):
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def iperf3(port, n):
    """MB/s of `iperf3 -R` (server -> client, 1 MiB writes) on the direct path: the cross-check
    that the Python ends are not the bottleneck."""
    out = json.loads(run(["iperf3", "-c", LOOPBACK, "-p", str(port), "-R", "-n", str(n), "-l", str(CHUNK), "-J"],
                         timeout=30 + n / 10e6))
    got = out["end"]["sum_received"]["bytes"]
    if got < n:
        raise RuntimeError(f"iperf3 -R: {got} of {n} bytes")
    return out["end"]["sum_received"]["bits_per_second"] / 8 / 1e6


# ---------------------------------------------------------------- the benchmark


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a child process of this benchmark
        mode, a = sys.argv[1], sys.argv[2:]
        if mode == "_bulk":
            serve_bulk(int(a[0]))
        elif mode == "_echo":
            serve_echo(int(a[0]))
        elif mode == "_client_bulk":
            client_bulk(int(a[0]), a[1], int(a[2]), a[3] == "1")
        elif mode == "_client_crr":
            client_crr(int(a[0]), int(a[1]), float(a[2]))
        elif mode == "_client_probe":
            client_probe(int(a[0]), int(a[1]), float(a[2]), float(a[3]))
        else:
            sys.exit(f"unknown mode {mode}")
        return

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test, about a minute)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 5, --quick 1)")
    ap.add_argument("--gib", type=float, default=None, help="GiB per server->client transfer (default 2, --quick 0.5); client->server moves half")
    ap.add_argument("--conns", type=int, default=None, help="connections per client per rate run (default 3000, --quick 1000)")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients in a rate run (default 4)")
    ap.add_argument("--samples", type=int, default=None, help="latency samples per target with the fault, per round (default 400, --quick 200)")
    ap.add_argument("--no-shakedown", action="store_true", help="direct, fault and HAProxy only (no Shakedown binary needed)")
    args = ap.parse_args()
    cfg = dict(
        rounds=args.rounds or (1 if args.quick else 5),
        n_sc=int((args.gib or (0.5 if args.quick else 2)) * GIB) // CHUNK * CHUNK,
        conns=args.conns or (1000 if args.quick else 3000),
        clients=args.clients,
        samples=args.samples or (200 if args.quick else 400),
        probe_procs=8,
        with_shakedown=not args.no_shakedown,
    )
    cfg["n_cs"] = cfg["n_sc"] // 2 // CHUNK * CHUNK

    if not FAULT.exists():
        sys.exit(f"{FAULT} missing: run bash bench/setup.sh")
    if cfg["with_shakedown"] and not SHAKEDOWN.exists():
        sys.exit(f"{SHAKEDOWN} missing: cargo build --release -p shakedown")

    harness("tcp", args.quick, lambda tmp, procs: bench(cfg, tmp, procs), render)


def bench(cfg, tmp, procs):
    py = sys.executable
    ups = {"bulk": free_port(), "echo": free_port()}
    up_procs = {
        "bulk": start_target(procs, "upstream-bulk", [py, str(HERE), "_bulk", str(ups["bulk"])], ups["bulk"]),
        "echo": start_target(procs, "upstream-echo", [py, str(HERE), "_echo", str(ups["echo"])], ups["echo"]),
    }

    # name -> ({upstream: port}, process whose tree is measured; None for direct)
    targets = {"direct": (dict(ups), None)}

    version_sd = None
    if cfg["with_shakedown"]:
        # A private copy: a rebuild of target/release during the run must not swap the binary.
        version_sd = version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], r"(\S+)")
        sd = str(tmp / "shakedown")
        shutil.copy2(SHAKEDOWN, sd)
        sd_api = free_port()
        sd_proc, sd_ports = start_shakedown(procs, sd, sd_api, ups)
        targets["shakedown"] = (sd_ports, sd_proc)

    # fault: fixed listen ports, picked free just before.
    f_ports = {"bulk": free_port(), "echo": free_port(), "echo-lat": free_port()}
    (tmp / "fault.yaml").write_text(fault_config(
        {"bulk": (f_ports["bulk"], ups["bulk"]), "echo": (f_ports["echo"], ups["echo"]),
         "echo-lat": (f_ports["echo-lat"], ups["echo"])}, latency={"echo-lat"}))
    fault_proc = procs.start("fault", [str(FAULT), "--output", "json", "run", str(tmp / "fault.yaml")])
    for port in f_ports.values():
        try:
            wait_listening(port, fault_proc)
        except RuntimeError as e:
            raise RuntimeError(f"fault did not start: {e}\n{procs.log_tail('fault')}") from None
    targets["fault"] = ({"bulk": f_ports["bulk"], "echo": f_ports["echo"]}, fault_proc)

    # For scale, not a peer: HAProxy in TCP mode, what a mature userspace proxy moves on this box.
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if haproxy:
        h_ports = {"bulk": free_port(), "echo": free_port()}
        (tmp / "haproxy.cfg").write_text(haproxy_tcp_config(h_ports, ups))
        h_proc = procs.start("haproxy", [haproxy, "-db", "-f", str(tmp / "haproxy.cfg")])
        for port in h_ports.values():
            try:
                wait_listening(port, h_proc)
            except RuntimeError as e:
                raise RuntimeError(f"haproxy did not start: {e}\n{procs.log_tail('haproxy')}") from None
        targets["haproxy"] = (h_ports, h_proc)
    else:
        log("haproxy missing (bash bench/setup.sh): no reference row")

    # Correctness first: 256 MiB each way with a CRC-32 checked end to end, and a warm-up.
    n_check = 256 << 20
    for name, (ports, _) in targets.items():
        for d in "SR":
            mbs, _ = bulk(ports["bulk"], d, n_check, crc=True)
            log(f"check {name:9} {d}: {n_check >> 20} MiB, CRC-32 ok ({mbs:.0f} MB/s with the CRC)")
        (_, errors, first), _ = crr(ports["echo"], 2, 200)
        if errors:
            raise RuntimeError(f"{name}: {errors} of 400 warm-up connections failed: {first}")
    procs.check_alive()

    iperf_port = None
    if shutil.which("iperf3"):
        iperf_port = free_port()
        iperf_proc = procs.start("iperf3", ["iperf3", "-s", "-B", LOOPBACK, "-p", str(iperf_port)])
        # Not a connect as readiness probe: iperf3 -s would log it as a failed test.
        wait_listening(iperf_port, iperf_proc)
    else:
        log("iperf3 missing (bash bench/setup.sh): no cross-check of the direct figure")
    iperf = []

    names = list(targets)
    res = {n: {k: [] for k in ("sc", "cs", "cps", "sc_cpu", "cs_cpu", "cps_cpu", "sc_ends", "cs_ends", "cps_ends")}
           for n in names}
    for m in res.values():
        m.update(errors=0, first_error=None)
    # latency: pooled samples per (target, with fault?)
    lat_keys = [(n, f) for n in names for f in ((False, True) if n in ("shakedown", "fault") else (False,))]
    lat = {k: [] for k in lat_keys}
    lat_err = {k: [0, None] for k in lat_keys}
    lat_rounds = {k: [] for k in lat_keys}  # each round's p99
    toxic_checks = []

    def measured(m, key, per, proc, up, fn):
        """Runs fn; records per unit (GiB, connection) the CPU of the proxy's process tree and
        of the ends (the client processes over their transfer or loop, and the upstream). fn
        returns (result, the clients' CPU seconds)."""
        p0, u0 = cpu_seconds(proc.pid) if proc else 0.0, cpu_seconds(up.pid)
        out, client_cpu = fn()
        if proc:
            m[f"{key}_cpu"].append((cpu_seconds(proc.pid) - p0) / per)
        m[f"{key}_ends"].append((client_cpu + cpu_seconds(up.pid) - u0) / per)
        return out

    # CPU-s other processes (a build, a test suite) took during each round: a round with much of
    # it shows in the latency percentiles first.
    foreign = []
    for r in range(cfg["rounds"]):
        round_start = time.time()
        machine0, own0 = machine_cpu_seconds(), own_cpu_seconds(procs)
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            ports, proc = targets[name]
            m = res[name]
            sc = measured(m, "sc", cfg["n_sc"] / GIB, proc, up_procs["bulk"], lambda: bulk(ports["bulk"], "S", cfg["n_sc"]))
            m["sc"].append(sc)
            cs = measured(m, "cs", cfg["n_cs"] / GIB, proc, up_procs["bulk"], lambda: bulk(ports["bulk"], "R", cfg["n_cs"]))
            m["cs"].append(cs)
            n_conns = cfg["clients"] * cfg["conns"]
            cps, errors, first = measured(m, "cps", n_conns / 1e6, proc, up_procs["echo"],
                                          lambda: crr(ports["echo"], cfg["clients"], cfg["conns"]))
            m["cps"].append(cps)
            m["errors"] += errors
            m["first_error"] = m["first_error"] or first
            procs.check_alive()
            log(f"round {r + 1}/{cfg['rounds']} {name:9} S->C {sc:7.0f} MB/s  C->S {cs:7.0f} MB/s  {cps:7.0f} conn/s"
                + (f"  ({errors} failed: {first})" if errors else ""))
            if name == "direct" and iperf_port:
                iperf.append(iperf3(iperf_port, cfg["n_sc"]))
                log(f"round {r + 1}/{cfg['rounds']} iperf3 -R  S->C {iperf[-1]:7.0f} MB/s (direct, the cross-check)")

        # Latency: every target without a fault (fewer samples), then both proxies with it.
        lorder = lat_keys[r % len(lat_keys):] + lat_keys[: r % len(lat_keys)]
        for key in lorder:
            name, with_fault = key
            if with_fault:
                n = cfg["samples"]
                if name == "shakedown":
                    expect(sd_api, "POST", "/proxies/echo/toxics", TOXIC, 200)
                    port = targets["shakedown"][0]["echo"]
                else:
                    port = f_ports["echo-lat"]
            else:
                n, port = cfg["samples"] // 2, targets[name][0]["echo"]
            try:
                ms, errors, first = probe(port, cfg["probe_procs"], n, with_fault)
            finally:
                if with_fault and name == "shakedown":
                    expect(sd_api, "DELETE", "/proxies/echo/toxics/lat", None, 204)
            if with_fault and name == "shakedown":
                # The toxic must be gone at once: a few samples right after the DELETE.
                after, _, _ = probe(port, 1, 20, False)
                toxic_checks.append(max(after))
                if max(after) > LATENCY_MS / 2:
                    raise RuntimeError(f"shakedown: latency toxic still applied after DELETE (max {max(after):.1f} ms)")
            lat[key] += ms
            lat_rounds[key].append(pct(ms, 99))
            lat_err[key][0] += errors
            lat_err[key][1] = lat_err[key][1] or first
            log(f"round {r + 1}/{cfg['rounds']} latency {name:9} {'100 ms fault' if with_fault else 'no fault    '} "
                f"p50 {pct(ms, 50):8.3f} ms  p99 {pct(ms, 99):8.3f} ms  ({len(ms)} samples"
                + (f", {errors} failed: {first})" if errors else ")"))
        procs.check_alive()
        foreign.append(((machine_cpu_seconds() - machine0) - (own_cpu_seconds(procs) - own0), time.time() - round_start))
        log(f"round {r + 1}/{cfg['rounds']}: other processes used {foreign[-1][0]:.1f} CPU-s in {foreign[-1][1]:.0f} s")

    if cfg["with_shakedown"]:
        # The API still answers after the load, and the toxic list is empty again.
        got = expect(sd_api, "GET", "/proxies/echo/toxics", None, 200)
        if got:
            raise RuntimeError(f"shakedown: toxics left on the echo proxy after the run: {got}")

    # What the proxies themselves reported: Shakedown's warnings and errors (it runs with
    # --log warn), fault's count of failed TCP streams (its last progress event).
    complaints = {}
    if cfg["with_shakedown"]:
        text = (tmp / "shakedown.log").read_text(errors="replace")
        complaints["shakedown"] = [line for line in text.splitlines() if re.search(r"\b(WARN|ERROR)\b", line)]
    fault_failed = None
    for line in reversed((tmp / "fault.log").read_text(errors="replace").splitlines()):
        try:
            event = json.loads(line)
            fault_failed = event["transport"]["tcp"]["failed"]
            break
        except (ValueError, KeyError, TypeError):
            continue

    return dict(
        complaints=complaints, fault_failed=fault_failed, foreign=foreign, lat_rounds=lat_rounds,
        cfg=cfg, res=res, lat=lat, lat_err=lat_err, iperf=iperf, toxic_checks=toxic_checks,
        versions=dict(
            shakedown=version_sd,
            fault=version([str(FAULT), "--version"], r"(\d+\.\d+\.\d+)"),
            iperf3=version(["iperf3", "--version"], r"iperf (\S+)") if shutil.which("iperf3") else None,
            haproxy=version([haproxy, "-v"], r"version (\S+)") if haproxy else None,
            python=f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}",
        ),
        load=Path("/proc/loadavg").read_text().split()[:3],
    )


def wait_listening(port, proc, timeout=20.0):
    """Waits until something listens on 127.0.0.1:port (from /proc/net/tcp, without connecting:
    a connection would reach the upstream behind a proxy, or be iperf3's one test), or the
    process died."""
    want = f"0100007F:{port:04X}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}")
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == want and f[3] == "0A":  # local address, state LISTEN
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {LOOPBACK}:{port} after {timeout:.0f}s")


def sanity(med, iperf):
    """Whether the Python ends, not the path, limited the direct throughput: compared with
    iperf3 (C, one process per end) on the same path."""
    if not iperf:
        return "."
    ratio = med["direct"]["sc"] / statistics.median(iperf)
    # Single runs of either vary by ±15 % on two shared cores (measured: 2.1–2.8 GB/s for
    # iperf3, 2.4–2.5 for the Python ends, alternating on a quiet machine).
    verdict = "the Python ends are not the bottleneck" if ratio >= 0.85 else "**the Python ends may be the bottleneck**"
    return f". Direct S→C is {ratio:.2f}× iperf3's on the same path: {verdict}."


def render(cfg, res, lat, lat_err, iperf, toxic_checks, versions, load, complaints, fault_failed, foreign, lat_rounds,
           busy, elapsed_s, foreign_s):
    med = {n: {k: (statistics.median(v) if v else None) for k, v in m.items() if isinstance(v, list)} for n, m in res.items()}
    rng = lambda xs: f"{min(xs):.0f}–{max(xs):.0f}"  # noqa: E731
    direct, fault = med["direct"], med["fault"]
    v = versions
    ncpu = os.cpu_count()
    lines = [
        f"{datetime.date.today().isoformat()}, Shakedown {v['shakedown'] or '(not run)'} (`shakedown toxiproxy`), "
        f"fault {v['fault']} (`fault run`, TCP proxies), Python {v['python']} clients and upstreams"
        + (f", iperf3 {v['iperf3']}" if v["iperf3"] else "") + ".",
        f"Loopback, {ncpu} cores shared by clients, proxy and upstream; medians of {cfg['rounds']} interleaved round(s), "
        f"order rotating. Machine: CPUs {busy:.0%} busy just before; load average {' / '.join(load)} at the end; "
        f"{elapsed_s:.0f} s in all, during which other processes used {foreign_s:.1f} CPU-s "
        f"({foreign_s / (elapsed_s * ncpu):.1%} of the machine); per round: "
        + ", ".join(f"{f:.1f} CPU-s in {t:.0f} s" for f, t in foreign) + ".",
        "",
        ("HAProxy " + v["haproxy"] + " in TCP mode (`option splice-auto`, default threads) is there for scale: what a mature "
         "userspace proxy moves on this box. " if "haproxy" in med else "")
        + f"Throughput: one transfer per run, server → client {cfg['n_sc'] / GIB:g} GiB, client → server {cfg['n_cs'] / GIB:g} GiB, "
        f"1 MiB `sendall` / `recv_into` at both ends, every byte counted (and 256 MiB each way CRC-32-checked before the rounds). "
        f"MB/s = 10⁶ bytes/s. CPU = utime + stime of the proxy's process tree per GiB moved."
        + (f" Cross-check, right after the direct run of each round: `iperf3 -R -n {cfg['n_sc'] / GIB:g}G -l 1M` "
           f"gives {statistics.median(iperf):.0f} MB/s ({rng(iperf)})." if iperf else ""),
        "",
        "| target | S→C MB/s | range | vs direct | vs fault | CPU s/GiB | C→S MB/s | range | vs direct | vs fault | CPU s/GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        cells = []
        for d in ("sc", "cs"):
            cpu = m[f"{d}_cpu"]
            cells += [f"{m[d]:.0f}", rng(res[name][d]), f"{m[d] / direct[d]:.2f}×", f"{m[d] / fault[d]:.2f}×",
                      "—" if cpu is None else f"{cpu:.2f}"]
        lines.append(f"| {label(name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The ends (client processes and upstream) used, per GiB, S→C / C→S: "
        + "; ".join(f"{n} {m['sc_ends']:.2f} / {m['cs_ends']:.2f} s" for n, m in med.items())
        + f"{sanity(med, iperf)}",
        "",
        f"Connection rate: {cfg['clients']} client processes × {cfg['conns']} connections each, one after another "
        f"(connect, 1 byte, its echo, close), started together; rate = answered connections ÷ wall time. "
        f"CPU = the proxy's per connection.",
        "",
        "| target | conn/s | range | vs direct | vs fault | CPU µs/conn | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        cpu = m["cps_cpu"]
        failed = res[name]["errors"]
        lines.append(
            f"| {label(name)} | {m['cps']:.0f} | {rng(res[name]['cps'])} | {m['cps'] / direct['cps']:.2f}× | {m['cps'] / fault['cps']:.2f}× | "
            f"{'—' if cpu is None else f'{cpu:.0f}'} | {failed}" + (f" ({res[name]['first_error']})" if failed else "") + " |")
    lines += [
        "",
        "The ends (client processes and upstream) used, per connection: "
        + "; ".join(f"{n} {m['cps_ends']:.0f} µs" for n, m in med.items()) + ".",
    ]
    d50, d99 = pct(lat[("direct", False)], 50), pct(lat[("direct", False)], 99)
    lines += [
        "",
        f"Latency probe: {cfg['probe_procs']} client processes, each sample on a fresh connection: connect, then time from "
        f"sending 1 byte to its echo. {cfg['samples']} samples per round with the fault, half that without; pooled over the rounds. "
        f"Fault: 100 ms on the way back to the client (Shakedown: Toxiproxy `latency` toxic, `stream: downstream`, "
        f"`latency: 100, jitter: 0`, added and removed over the API every round; fault: `type: latency, flow: to-client`, "
        f"uniform 100–100 ms). Added = target − direct at the same percentile.",
        "",
        "| target | fault | samples | p50 ms | p99 ms | max ms | added p50 ms | added p99 ms | p99 error vs 100 ms | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdict_lat = {}
    for key, ms in lat.items():
        name, with_fault = key
        p50, p99 = pct(ms, 50), pct(ms, 99)
        err = (p99 - d99 - LATENCY_MS) if with_fault else None
        if with_fault:
            verdict_lat[name] = err
        errs = lat_err[key]
        lines.append(
            f"| {label(name)} | {'100 ms' if with_fault else 'none'} | {len(ms)} | {p50:.3f} | {p99:.3f} | {max(ms):.3f} | "
            f"{p50 - d50:+.3f} | {p99 - d99:+.3f} | {'—' if err is None else f'{err:+.2f}'} | {errs[0]}"
            + (f" ({errs[1]})" if errs[0] else "") + " |")
    lines += ["", "Each round's p99 (ms), to tell a disturbed round: "
              + "; ".join(f"{n} {'100 ms' if f else 'none'} " + " / ".join(f"{x:.2f}" for x in lat_rounds[(n, f)])
                          for (n, f) in lat_rounds) + "."]
    if toxic_checks:
        lines += ["", f"After each `DELETE` of the toxic, 20 samples at once: the slowest {max(toxic_checks):.3f} ms (no delay left)."]
    lines.append("")
    if "shakedown" in complaints:
        c = complaints["shakedown"]
        lines.append(f"Shakedown logged {len(c)} warning(s) or error(s)" + (f", the first: `{c[0].strip()[:300]}`." if c else "."))
    if fault_failed is not None:
        lines.append(f"fault counted {fault_failed} failed TCP stream(s).")

    if "shakedown" in med:
        sd = med["shakedown"]
        ok = lambda b: "met" if b else "**not met**"  # noqa: E731
        r_sc, r_cs = sd["sc"] / direct["sc"], sd["cs"] / direct["cs"]
        f_sc, f_cs = sd["sc"] / fault["sc"], sd["cs"] / fault["cs"]
        lines += [
            "",
            "| target | result | |",
            "|---|---|---|",
            f"| throughput ≥ {TARGET_VS_DIRECT}× direct | S→C {r_sc:.2f}×, C→S {r_cs:.2f}×"
            + (f" (HAProxy in TCP mode: {med['haproxy']['sc'] / direct['sc']:.2f}×, {med['haproxy']['cs'] / direct['cs']:.2f}×)"
               if "haproxy" in med else "")
            + f" | {ok(min(r_sc, r_cs) >= TARGET_VS_DIRECT)} |",
            f"| throughput ≥ fault's | S→C {f_sc:.2f}×, C→S {f_cs:.2f}× | {ok(min(f_sc, f_cs) >= TARGET_VS_FAULT)} |",
            f"| 100 ms latency within +{LATENCY_SLACK_MS:g} ms at p99 (over direct) | Shakedown {verdict_lat['shakedown']:+.2f} ms; "
            f"fault {verdict_lat['fault']:+.2f} ms | {ok(verdict_lat['shakedown'] <= LATENCY_SLACK_MS)} |",
        ]
    return "\n".join(lines) + "\n"


def label(name):
    return "haproxy (for scale)" if name == "haproxy" else name


if __name__ == "__main__":
    main()
