#!/usr/bin/env python3
"""A/B two regate builds on the keep-alive rows: manifest HEADs (hey) and /auth tokens (wrk),
32 connections each unless --connections says otherwise, over HTTP and HTTPS, through two
regate processes in front of one registry, rounds interleaved (A B, then B A, ...). Made for
issue #20's bound: parking idle connections must not cost a busy one more than 3% of
throughput.

  benches/ab_keepalive.py A_BINARY B_BINARY [--rounds N] [--seconds S] [--connections C]
                          [--instructions]

Prints, per row, each round's rate, their medians and B/A, and "paired": the median of the
rounds' own B/A (a round's two runs are back to back, so what else runs on a shared machine
moves both); then the same for regate's CPU time per request (user + system, from /proc).

On a shared machine rates and CPU times of one build spread by 10-20%, more than the bound
they are meant to check. --instructions runs each regate under valgrind's callgrind and
reports instructions per request instead of CPU time (counters zeroed before each run and
dumped after it): a count other work on the machine does not move. Rates are then
valgrind's, only the instruction counts mean anything; run it with few connections
(--connections 4), so that under valgrind's slowdown none of them idles long enough to be
parked (50-100 ms), as none does at full speed. valgrind counts each byte a `rep movsb`
copies as an instruction, so large memory copies weigh more than they cost a real CPU.

Uses benches/bench.py's setup (same registry, certificate, config, hey and wrk runs).
Standard library only.
"""

import argparse
import base64
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per request under callgrind instead of CPU time")
    args = ap.parse_args()
    if os.geteuid() == 0:
        bench.PRIORITY = -15  # as bench.py: servers and clients ahead of other work
    tmp = tempfile.mkdtemp(prefix="regate-ab-", dir="/dev/shm")
    try:
        cert, key = bench.make_cert(tmp)
        pwhash = bench.bcrypt_hash()
        reg_port = bench.free_port()
        reg = bench.start_registry(tmp, reg_port)
        direct = bench.Front("direct", "registry", f"http://127.0.0.1:{reg_port}", reg)
        bench.seed_registry(direct.base, tmp, bench.MIB)
        fronts = {}
        if args.instructions and not shutil.which("callgrind_control"):
            bench.die("--instructions needs valgrind: apt-get install valgrind")
        for k in ("a", "b"):
            binary = getattr(args, k)
            if args.instructions:
                binary = under_callgrind(tmp, k, binary)
            for tls in (False, True):
                port = bench.free_port()
                name = f"regate-{k}-{'https' if tls else 'http'}"
                proc = bench.start_regate(binary, tmp, name, port, reg_port,
                                          pwhash, tls=(cert, key) if tls else None)
                scheme = "https" if tls else "http"
                fronts[(k, scheme)] = bench.Front(name, name, f"{scheme}://127.0.0.1:{port}",
                                                  proc, auth=True, tls=tls)
        basic = "Basic " + base64.b64encode(f"{bench.USER}:{bench.PASSWORD}".encode()).decode()
        service = bench.SERVICE.replace(" ", "%20")

        def head(f):
            return bench.hey(f"{f.base}/v2/{bench.BLOB_REPO}/manifests/latest", args.seconds,
                             args.connections, method="HEAD", accept=bench.OCI_MANIFEST,
                             auth=f"Bearer {f.token()}")

        def auth(f):
            f.token()  # the first request: bcrypt runs, the credential is cached
            url = f"{f.base}/auth?service={service}&scope=repository:{bench.BLOB_REPO}:pull"
            return bench.wrk(tmp, url, args.seconds, args.connections, auth=basic)

        def measured(measure, f):
            """The rate, and regate's CPU microseconds (or instructions) per request."""
            if args.instructions:
                callgrind(tmp, f.proc.pid, "-z")
                r = measure(f)
                return r["rps"], callgrind(tmp, f.proc.pid, "-d") / r["requests"]
            before = bench.cpu_seconds([f.proc.pid])
            r = measure(f)
            cpu = bench.cpu_seconds([f.proc.pid]) - before
            return r["rps"], cpu * 1e6 / r["requests"]

        unit = "instructions" if args.instructions else "µs CPU"
        for f in fronts.values():
            f.token()  # bcrypt runs once per front, before anything is counted
        rows = [(f"{what} {scheme}", measure, scheme)
                for what, measure in (("manifest HEAD", head), ("/auth", auth))
                for scheme in ("http", "https")]
        got = {(row, k): [] for row, _, _ in rows for k in ("a", "b")}
        cpu = {(row, k): [] for row, _, _ in rows for k in ("a", "b")}
        for rnd in range(args.rounds):
            for row, measure, scheme in rows:
                for k in ("a", "b") if rnd % 2 == 0 else ("b", "a"):
                    v, us = measured(measure, fronts[(k, scheme)])
                    got[(row, k)].append(v)
                    cpu[(row, k)].append(us)
                    bench.log(f"round {rnd + 1}: {row} {k} {v:,.0f}/s, "
                              f"regate {us:,.1f} {unit}/request")

        def paired(m, row):
            return statistics.median(b / a for a, b in zip(m[(row, "a")], m[(row, "b")]))

        print(f"a: {args.a}\nb: {args.b}")
        for row, _, _ in rows:
            a, b = (statistics.median(got[(row, k)]) for k in ("a", "b"))
            print(f"{row}: a {[round(x) for x in got[(row, 'a')]]} median {a:,.0f}; "
                  f"b {[round(x) for x in got[(row, 'b')]]} median {b:,.0f}; b/a {b / a:.3f}, "
                  f"paired {paired(got, row):.3f}")
            a, b = (statistics.median(cpu[(row, k)]) for k in ("a", "b"))
            print(f"  regate {unit}/request: a {[round(x, 1) for x in cpu[(row, 'a')]]} "
                  f"median {a:,.1f}; b {[round(x, 1) for x in cpu[(row, 'b')]]} "
                  f"median {b:,.1f}; b/a {b / a:.3f}, paired {paired(cpu, row):.3f}")
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def under_callgrind(tmp, k, binary):
    """A script running `binary` under callgrind, its counts written to tmp/callgrind.PID*."""
    path = os.path.join(tmp, f"callgrind-{k}")
    out = os.path.join(tmp, "callgrind.%p")
    with open(path, "w") as f:
        f.write(f'#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} '
                f'--dump-instr=no {binary} "$@"\n')
    os.chmod(path, 0o755)
    return path


def callgrind(tmp, pid, command):
    """callgrind_control COMMAND for pid; after a dump (-d), the instructions it counted."""
    subprocess.run(["callgrind_control", command, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if command != "-d":
        return None
    dumps = glob.glob(os.path.join(tmp, f"callgrind.{pid}.*"))
    with open(max(dumps, key=lambda d: int(d.rsplit(".", 1)[1]))) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    bench.die(f"no totals in callgrind's dump for {pid}")


if __name__ == "__main__":
    main()
