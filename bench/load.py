#!/usr/bin/env python3
"""Side-by-side load-generator benchmark on loopback: `shakedown load` vs oha and wrk.

Run it through `bash bench/load.sh` (installs the peers, builds the release binary). Every tool
targets the same upstream, one `shakedown stub` on 127.0.0.1 (a small fixed 200 answer on any
path), and measures two things:

* saturation (closed loop, 64 connections): `shakedown load --vus 64`, `oha -c 64`,
  `wrk -t2 -c64` -> the most requests/s each tool gets out of the same upstream, with ratios of
  Shakedown to oha and to wrk (targets: >= 1x oha, >= 0.8x wrk), and the tool's own CPU time per
  request (on two shared cores, CPU the generator burns is CPU the upstream does not get);
* fixed arrival rate (open model, 16 connections): `shakedown load --rate R` vs `oha -q R`, at
  R = 1000 and 10 000 by default -> |achieved - R| / R (target <= 1 %).

Requests/s are measured at the upstream, the same way for every tool, not taken from the tools:
the stub writes every answer with one fixed-size writev (checked before the run), so its write
counters in /proc/PID/io, read every 5 ms, count its answers exactly (see `Upstream`). A run's
rate is the answers over the window where the upstream was answering (from the first sample
that shows an answer to the last one before the final answer, so no idle time at either end);
the whole second of that window farthest from R shows how steady a fixed rate was, and all
answers of the run over R x duration whether the run as a whole sent what was planned. Every
tool's own count and rate are shown beside it, as a cross-check.

Runs rotate between rounds (so no tool always runs first), medians over rounds are printed as a
markdown table and written to bench/results/. The load generator and the upstream share the
machine's cores (two here): both numbers are of the pair, not of the generator alone.

Only 127.0.0.1 is ever targeted; every run is bounded in time and has a timeout. The upstream is
stopped on exit, also on failure, Ctrl-C, SIGTERM or SIGHUP (and dies with this process even on
SIGKILL); a load generator still running is killed with it. The helpers for processes, /proc and
the peers' output are shared with bench/proxy.py.
"""

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from proxy import (
    BENCH, LOOPBACK, ROOT, SHAKEDOWN, free_port, harness, log, oha, read_response, run, skewed,
    start_target, version, wrk,
)

SAT_CONNECTIONS = 64
RATE_CONNECTIONS = 16
SAMPLE_S = 0.005  # how often the upstream's write counters are read
TARGET_RATE_ERROR = 0.01
TARGET_VS_OHA = 1.0
TARGET_VS_WRK = 0.8


# ---------------------------------------------------------------- the upstream, counted


class Upstream:
    """The stub, whose answers are counted from what it has written (/proc/PID/io).

    Besides its answers, the stub's only writes are tokio's wake-ups of a parked worker thread,
    one 8-byte write each to an eventfd, and their number varies with the load. Every answer is
    one writev of a fixed size, so `wchar - 8 * syscw` grows by a fixed step per answer and not
    at all per wake-up: that step counts answers exactly, and a remainder means an assumption
    broke (an answer split over two writes, a different answer), which is reported.
    """

    EVENTFD_WRITE = 8

    def __init__(self, proc, port):
        self.proc, self.port = proc, port
        self.url = f"http://{LOOPBACK}:{port}/"
        self.step = self._calibrate()

    def level(self):
        io = Path(f"/proc/{self.proc.pid}/io").read_text()
        wchar = int(re.search(r"wchar:\s+(\d+)", io).group(1))
        syscw = int(re.search(r"syscw:\s+(\d+)", io).group(1))
        return wchar - self.EVENTFD_WRITE * syscw

    @property
    def response_bytes(self):
        return self.step + self.EVENTFD_WRITE

    def _calibrate(self, n=100):
        """The step of `level()` per answer to `GET /`, from n requests on one keep-alive connection."""
        with socket.create_connection((LOOPBACK, self.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            status, _ = read_response(s)
            if status != 200:
                raise RuntimeError(f"stub answered {status} to GET /")
            time.sleep(0.05)
            before = self.level()
            for _ in range(n):
                s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                read_response(s)
            time.sleep(0.05)
            total = self.level() - before
        if total <= 0 or total % n:
            raise RuntimeError(f"{n} answers moved the stub's write count by {total}: answers cannot be counted from /proc/PID/io")
        return total // n

    def answers(self, before, after):
        delta = after - before
        if delta % self.step:
            log(f"  warning: the upstream's write count moved by {delta}, not a multiple of {self.step}: "
                "the count of answers is approximate")
        return round(delta / self.step)


class Sampler:
    """Reads the upstream's write count every SAMPLE_S in a thread, with a monotonic time."""

    def __init__(self, upstream):
        self.upstream, self.samples = upstream, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self.upstream.level()))
            self._stop.wait(SAMPLE_S)

    def __enter__(self):
        self.samples.append((time.monotonic(), self.upstream.level()))  # the base, before any load
        self._thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(0.1)  # answers to requests a tool abandoned at its deadline are written late
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic(), self.upstream.level()))


def window(upstream, samples, rate=None):
    """All answers of the run, and the rate over the window where it was answering: from the
    first sample that shows an answer to the last sample before the final answer, so the window
    holds no idle time at either end. With a target rate, also the whole second of that window
    farthest from it, as a fraction of the rate."""
    base, final = samples[0][1], samples[-1][1]
    first = next((i for i, (_, n) in enumerate(samples) if n >= base + upstream.step), None)
    if first is None:
        raise RuntimeError("the upstream answered nothing during the run")
    last = max(first, next(i for i, (_, n) in enumerate(samples) if n >= final) - 1)
    (t0, n0), (t1, n1) = samples[first], samples[last]
    out = {"answers": upstream.answers(base, final)}
    out["rps"] = (n1 - n0) / upstream.step / (t1 - t0) if t1 > t0 else 0.0
    if rate:
        def at(t):  # the write count at time t, interpolated between samples
            for (ta, na), (tb, nb) in zip(samples[first:], samples[first + 1:]):
                if ta <= t <= tb:
                    return na + (nb - na) * (t - ta) / (tb - ta) if tb > ta else nb
            return n1
        seconds = [(at(t0 + k + 1) - at(t0 + k)) / upstream.step for k in range(int(t1 - t0))]
        out["worst_s"] = max((abs(n - rate) / rate for n in seconds), default=None)
    return out


# ---------------------------------------------------------------- the load generators


def run_shakedown(sd, tmp, url, seconds, *args):
    """`shakedown load` with a k6-shaped --summary-export; returns what the tool reports."""
    summary = tmp / "summary.json"
    summary.unlink(missing_ok=True)
    run([sd, "load", url, *args, "--duration", f"{seconds}s", "--summary-export", str(summary), "--quiet"], timeout=seconds + 30)
    try:
        s = json.loads(summary.read_text())
        metrics = s["metrics"]
        count, rate = metrics["http_reqs"]["count"], metrics["http_reqs"]["rate"]
        # k6's Rate: `value` is the fraction of samples that were true, i.e. failed requests.
        failed = round(metrics["http_req_failed"]["value"] * count)
        dropped = metrics.get("dropped_iterations", {}).get("count", 0)  # k6 omits it when zero
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RuntimeError(f"shakedown load {' '.join(args)}: summary export unreadable ({e!r}): {summary.read_text()[:2000] if summary.exists() else 'missing'}") from None
    # The requests in flight when time is up (at most one per connection) may be cut; anything
    # beyond that is a real failure.
    if failed > SAT_CONNECTIONS:
        raise RuntimeError(f"shakedown load {' '.join(args)}: {failed} of {count} requests failed")
    return {"count": count, "tool_rps": rate, "dropped": dropped}


def run_oha(port, seconds, *args):
    report = oha(port, "-z", f"{seconds}s", *args, timeout=seconds + 30)
    ok = sum(int(n) for n in report["statusCodeDistribution"].values())
    # oha's own requestsPerSec also counts the requests it aborted at the deadline; these are not.
    return {"count": ok, "tool_rps": ok / report["summary"]["total"]}


def run_wrk(port, seconds):
    rps, total = wrk(port, seconds, SAT_CONNECTIONS)
    return {"count": total, "tool_rps": rps}


def saturation_runs(sd, tmp, upstream, seconds):
    """name -> zero-argument function that runs one saturation measurement."""
    runs = {
        "wrk": lambda: run_wrk(upstream.port, seconds),
        "oha": lambda: run_oha(upstream.port, seconds, "-c", str(SAT_CONNECTIONS)),
    }
    if sd:
        runs["shakedown"] = lambda: run_shakedown(sd, tmp, upstream.url, seconds, "--vus", str(SAT_CONNECTIONS))
    return runs


def rate_runs(sd, tmp, upstream, seconds, rates):
    """(name, rate) -> zero-argument function that runs one fixed-rate measurement."""
    runs = {}
    for r in rates:
        runs[("oha", r)] = lambda r=r: run_oha(upstream.port, seconds, "-q", str(r), "-c", str(RATE_CONNECTIONS))
        if sd:
            runs[("shakedown", r)] = lambda r=r: run_shakedown(
                sd, tmp, upstream.url, seconds, "--rate", str(r), "--connections", str(RATE_CONNECTIONS))
    return runs


def measure(upstream, fn, rate=None):
    """Runs one load generator; returns its own report merged with the upstream's count and the
    generator's CPU time (it is this process's only child that runs meanwhile)."""
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Sampler(upstream) as sampler:
        tool = fn()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    up = window(upstream, sampler.samples, rate)
    cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    return {**tool, **up, "cpu_us": cpu * 1e6 / max(1, up["answers"])}


# ---------------------------------------------------------------- the benchmark


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test, about a minute)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3, --quick 1)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per run (default 5, --quick 3)")
    ap.add_argument("--rates", default="1000,10000", help="fixed arrival rates to check, req/s (default 1000,10000)")
    ap.add_argument("--peers-only", action="store_true",
                    help="run oha and wrk only (a build without `shakedown load`); the report says so")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.duration or (3 if args.quick else 5)
    rates = [int(r) for r in args.rates.split(",")]

    for tool in ("wrk", "oha"):
        if not shutil.which(tool):
            sys.exit(f"{tool} missing: run bash bench/setup.sh")
    if not SHAKEDOWN.exists():
        sys.exit(f"{SHAKEDOWN} missing: cargo build --release -p shakedown")

    harness("load", args.quick,
            lambda tmp, procs: bench(rounds, seconds, rates, args.peers_only, tmp, procs), render)


def bench(rounds, seconds, rates, peers_only, tmp, procs):
    # Run a private copy: a rebuild of target/release during the run (someone else's cargo) must
    # not put a different binary under the later measurements.
    binary = tmp / "shakedown"
    shutil.copy2(SHAKEDOWN, binary)  # with its mtime, the time it was built
    sd = str(binary)
    has_load = subprocess.run([sd, "load", "--help"], capture_output=True, timeout=20).returncode == 0
    if not has_load and not peers_only:
        raise RuntimeError("this build has no `shakedown load`; rebuild, or pass --peers-only to measure oha and wrk alone")
    if peers_only:
        sd = None

    port = free_port()
    upstream = Upstream(start_target(procs, "upstream", [str(binary), "stub", "--listen", f"{LOOPBACK}:{port}"], port), port)

    sat, fixed = saturation_runs(sd, tmp, upstream, seconds), rate_runs(sd, tmp, upstream, seconds, rates)
    # Warm-up: the stub's pools and the page cache of every generator.
    for warm in saturation_runs(sd, tmp, upstream, 1).values():
        warm()

    results = {key: [] for key in [*sat, *fixed]}
    for r in range(rounds):
        jobs = [(n, f, None) for n, f in sat.items()] + [(k, f, k[1]) for k, f in fixed.items()]
        jobs = jobs[r % len(jobs):] + jobs[: r % len(jobs)]
        for key, fn, rate in jobs:
            m = measure(upstream, fn, rate)
            results[key].append(m)
            procs.check_alive()
            what = f"{key[0]:9} rate {rate:6}" if rate else f"{key:9} saturation "
            err = f"  error {abs(m['rps'] - rate) / rate:6.2%}  worst 1 s {m['worst_s']:.2%}" if rate else ""
            log(f"round {r + 1}/{rounds} {what}  upstream {m['rps']:9.0f} req/s ({m['answers']} answers)  "
                f"tool {m['tool_rps']:9.0f} req/s ({m['count']})  cpu {m['cpu_us']:5.1f} µs/req{err}")

    med = {k: {f: statistics.median(m[f] for m in ms) for f in ms[0] if ms[0][f] is not None} for k, ms in results.items()}
    for k, ms in results.items():  # the spread over rounds, to judge a ratio or an error by
        for f in ("rps", "answers"):
            med[k][f"{f}_range"] = (min(m[f] for m in ms), max(m[f] for m in ms))
    return dict(
        med=med, rounds=rounds, seconds=seconds, rates=rates, response_bytes=upstream.response_bytes,
        versions=dict(
            # The tree's commit, and when the binary was built: a binary older than the tree's last
            # change was not built from that commit.
            shakedown=None if peers_only else version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], r"(\S+)")
            + f", binary built {datetime.datetime.fromtimestamp(binary.stat().st_mtime):%H:%M}",
            wrk=version(["wrk", "-v"], r"wrk (\S+)"),
            oha=version(["oha", "--version"], r"oha (\S+)"),
        ),
    )


def verdict(ok):
    return "met" if ok else "**not met**"


def render(med, rounds, seconds, rates, response_bytes, versions, busy, elapsed_s, foreign_s):
    v, cpus = versions, os.cpu_count()
    sd = v["shakedown"] is not None
    lines = [
        f"{datetime.date.today().isoformat()}, "
        + (f"Shakedown {v['shakedown']} (`shakedown load`)" if sd else "**without Shakedown** (`--peers-only`: this build has no `shakedown load`)")
        + f"; oha {v['oha']}, wrk {v['wrk']}.",
        f"Loopback, {cpus} cores shared by the load generator and the upstream (`shakedown stub`, {response_bytes}-byte "
        f"answers); medians of {rounds} interleaved round(s) of {seconds} s runs; CPUs {busy:.0%} busy just before; "
        f"{elapsed_s:.0f} s in all, during which other processes used {max(0.0, foreign_s):.1f} CPU-s "
        f"({max(0.0, foreign_s) / (elapsed_s * cpus):.1%} of the machine)"
        + ("; **the numbers are skewed by that, run again on a quiet machine**." if skewed(foreign_s, elapsed_s) else "."),
        f"req/s are counted at the upstream (its answers, from its write counters in /proc/PID/io read every "
        f"{SAMPLE_S * 1000:.0f} ms, over the window where it was answering); \"tool\" is what the generator itself reports. "
        "CPU = the generator's utime+stime ÷ answers.",
        "",
        f"Saturation, closed loop, {SAT_CONNECTIONS} connections: `shakedown load --vus {SAT_CONNECTIONS}`, "
        f"`oha -c {SAT_CONNECTIONS} -z {seconds}s`, `wrk -t2 -c{SAT_CONNECTIONS} -d{seconds}s`.",
        "",
        "| tool | req/s | rounds' range | vs oha | vs wrk | tool req/s | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    oha_rps, wrk_rps = med["oha"]["rps"], med["wrk"]["rps"]
    for name in ("shakedown", "oha", "wrk"):
        if name in med:
            m = med[name]
            lo, hi = m["rps_range"]
            spread = f"{lo:.0f}–{hi:.0f}" if rounds > 1 else "—"
            lines.append(f"| {name} | {m['rps']:.0f} | {spread} | {m['rps'] / oha_rps:.2f}× | {m['rps'] / wrk_rps:.2f}× | "
                         f"{m['tool_rps']:.0f} | {m['cpu_us']:.1f} |")
    if sd:
        s = med["shakedown"]["rps"]
        lines += ["", f"Targets: Shakedown ≥ {TARGET_VS_OHA:g}× oha: {verdict(s >= TARGET_VS_OHA * oha_rps)}; "
                      f"≥ {TARGET_VS_WRK:g}× wrk: {verdict(s >= TARGET_VS_WRK * wrk_rps)}."]
    lines += [
        "",
        f"Fixed arrival rate R, open model, {RATE_CONNECTIONS} connections, {seconds} s: "
        f"`shakedown load --rate R --connections {RATE_CONNECTIONS}`, `oha -q R -c {RATE_CONNECTIONS} -z {seconds}s`. "
        "Error = |achieved − R| ÷ R; worst 1 s = the whole second of the window farthest from R; "
        "answers ÷ R·t = all answers of the run over the planned count.",
        "",
        "| tool | R | achieved req/s | error | worst 1 s | answers ÷ R·t | tool req/s | dropped | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst_round = 0.0  # Shakedown's largest error over rates and rounds, of the rate and of the count
    for r in rates:
        for name in ("shakedown", "oha"):
            m = med.get((name, r))
            if m is None:
                continue
            err = abs(m["rps"] - r) / r
            if name == "shakedown":
                planned = r * seconds
                worst_round = max(worst_round, *(abs(x - r) / r for x in m["rps_range"]),
                                  *(abs(n - planned) / planned for n in m["answers_range"]))
            worst = f"{m['worst_s']:.2%}" if "worst_s" in m else "—"
            dropped = f"{m['dropped']:.0f}" if "dropped" in m else "—"
            lines.append(f"| {name} | {r} | {m['rps']:.1f} | {err:.2%} | {worst} | {m['answers'] / (r * seconds):.4f} | "
                         f"{m['tool_rps']:.1f} | {dropped} | {m['cpu_us']:.1f} |")
    if sd:
        lines += ["", f"Target: Shakedown within {TARGET_RATE_ERROR:.0%} of R, and of R·t answers, at every R in every round "
                      f"(worst: {worst_round:.2%}): {verdict(worst_round <= TARGET_RATE_ERROR)}."]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
