#!/usr/bin/env python3
"""A/B two regate builds on the keep-alive rows: manifest HEADs (hey -c 32) and /auth tokens
(wrk -c 32), over HTTP and HTTPS, through two regate processes in front of one registry,
rounds interleaved (A B, then B A, ...). Made for issue #20's bound: parking idle
connections must not cost a busy one more than 3% of throughput.

  benches/ab_keepalive.py A_BINARY B_BINARY [--rounds N] [--seconds S]

Prints, per row, each round's rate, their medians and B/A, and "paired": the median of the
rounds' own B/A (a round's two runs are back to back, so what else runs on a shared machine
moves both); then the same for regate's CPU time per request (user + system, from /proc).
Uses benches/bench.py's setup (same registry, certificate, config, hey and wrk runs).
Standard library only.
"""

import argparse
import base64
import os
import shutil
import statistics
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
        for k in ("a", "b"):
            for tls in (False, True):
                port = bench.free_port()
                name = f"regate-{k}-{'https' if tls else 'http'}"
                proc = bench.start_regate(getattr(args, k), tmp, name, port, reg_port,
                                          pwhash, tls=(cert, key) if tls else None)
                scheme = "https" if tls else "http"
                fronts[(k, scheme)] = bench.Front(name, name, f"{scheme}://127.0.0.1:{port}",
                                                  proc, auth=True, tls=tls)
        basic = "Basic " + base64.b64encode(f"{bench.USER}:{bench.PASSWORD}".encode()).decode()
        service = bench.SERVICE.replace(" ", "%20")

        def head(f):
            return bench.hey(f"{f.base}/v2/{bench.BLOB_REPO}/manifests/latest", args.seconds,
                             32, method="HEAD", accept=bench.OCI_MANIFEST,
                             auth=f"Bearer {f.token()}")

        def auth(f):
            f.token()  # the first request: bcrypt runs, the credential is cached
            url = f"{f.base}/auth?service={service}&scope=repository:{bench.BLOB_REPO}:pull"
            return bench.wrk(tmp, url, args.seconds, 32, auth=basic)

        def measured(measure, f):
            """The rate, and regate's CPU microseconds per request over the run."""
            before = bench.cpu_seconds([f.proc.pid])
            r = measure(f)
            cpu = bench.cpu_seconds([f.proc.pid]) - before
            return r["rps"], cpu * 1e6 / r["requests"]

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
                              f"regate {us:.1f} µs CPU/request")

        def paired(m, row):
            return statistics.median(b / a for a, b in zip(m[(row, "a")], m[(row, "b")]))

        print(f"a: {args.a}\nb: {args.b}")
        for row, _, _ in rows:
            a, b = (statistics.median(got[(row, k)]) for k in ("a", "b"))
            print(f"{row}: a {[round(x) for x in got[(row, 'a')]]} median {a:,.0f}; "
                  f"b {[round(x) for x in got[(row, 'b')]]} median {b:,.0f}; b/a {b / a:.3f}, "
                  f"paired {paired(got, row):.3f}")
            a, b = (statistics.median(cpu[(row, k)]) for k in ("a", "b"))
            print(f"  regate CPU/request: a {[round(x, 1) for x in cpu[(row, 'a')]]} "
                  f"median {a:.1f} µs; b {[round(x, 1) for x in cpu[(row, 'b')]]} "
                  f"median {b:.1f} µs; b/a {b / a:.3f}, paired {paired(cpu, row):.3f}")
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
