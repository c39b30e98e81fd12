#!/usr/bin/env python3
"""A/B two regate builds on one measurement: the 1 GiB blob GET over HTTPS with h2 (curl
takes h2 by ALPN), through two regate processes in front of one registry, rounds
interleaved. Also counts each regate's write system calls per GiB when strace is there.

  benches/ab_h2.py A_BINARY B_BINARY [--rounds N] [--blob-mib N]

Uses benches/bench.py's setup (same registry, certificate, config). Standard library only.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--blob-mib", type=int, default=1024)
    args = ap.parse_args()
    if os.geteuid() == 0:
        bench.PRIORITY = -15  # as bench.py: servers and clients ahead of other work
    size = args.blob_mib * bench.MIB
    tmp = tempfile.mkdtemp(prefix="regate-ab-", dir="/dev/shm")
    try:
        ports = {k: bench.free_port() for k in ("reg", "a", "b")}
        cert, key = bench.make_cert(tmp)
        pwhash = bench.bcrypt_hash()
        reg = bench.start_registry(tmp, ports["reg"])
        pa = bench.start_regate(args.a, tmp, "regate-a", ports["a"], ports["reg"], pwhash,
                                tls=(cert, key))
        pb = bench.start_regate(args.b, tmp, "regate-b", ports["b"], ports["reg"], pwhash,
                                tls=(cert, key))
        direct = bench.Front("direct", "registry", f"http://127.0.0.1:{ports['reg']}", reg)
        digest, _ = bench.seed_registry(direct.base, tmp, size)
        fronts = {k: bench.Front(k, f"regate {k.upper()}", f"https://127.0.0.1:{ports[k]}", p,
                                 auth=True, tls=True)
                  for k, p in (("a", pa), ("b", pb))}
        speeds = {"a": [], "b": []}
        cpu = {"a": [], "b": []}
        for f in fronts.values():
            bench.fetch(f, digest, size, 1)  # warm-up
        for rnd in range(args.rounds):
            for k in ("a", "b") if rnd % 2 == 0 else ("b", "a"):
                f = fronts[k]
                c0 = bench.cpu_seconds([f.proc.pid])
                v, version = bench.fetch(f, digest, size, 1)
                cpu[k].append(bench.cpu_seconds([f.proc.pid]) - c0)
                speeds[k].append(v)
                bench.log(f"round {rnd + 1}: {k} {v:,.0f} MiB/s over HTTP/{version}")
        writes = {}
        if shutil.which("strace"):
            for k, f in fronts.items():
                out = os.path.join(tmp, f"strace-{k}.txt")
                tracer = subprocess.Popen(["strace", "-f", "-c", "-e",
                                           "trace=write,writev,sendmsg,sendto", "-o", out,
                                           "-p", str(f.proc.pid)],
                                          stderr=subprocess.DEVNULL)
                time.sleep(1)
                bench.fetch(f, digest, size, 1)
                tracer.terminate()
                tracer.wait()
                calls = 0
                for line in open(out):
                    parts = line.split()
                    if parts and parts[-1] in ("write", "writev", "sendmsg", "sendto"):
                        calls += int(parts[3]) if len(parts) >= 5 else 0
                writes[k] = calls / (size / bench.GIB)
        for k in ("a", "b"):
            print(f"{k}: {getattr(args, k)}: MiB/s {[round(x) for x in speeds[k]]} median "
                  f"{statistics.median(speeds[k]):,.0f}; CPU s/GiB median "
                  f"{statistics.median(cpu[k]) / (size / bench.GIB):.2f}"
                  + (f"; write calls per GiB {writes[k]:,.0f}" if k in writes else ""))
        print(f"b/a: {statistics.median(speeds['b']) / statistics.median(speeds['a']):.3f}")
    finally:
        bench.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
