#!/usr/bin/env python3
"""A/B of the paths the edge cache must not slow down: a regate built before it (A) and one
with it (B, run twice: cache on, and cache off so that it forwards like A), side by side in
front of one registry, rounds interleaved: /auth tokens/s (wrk, 32 connections, 10 s), a
1 GiB blob GET (curl, 1 stream; over max_object_bytes, so the cache only looks at it), and
forwarded manifest HEADs (hey, 32 connections, 10 s; A and B with its cache off).

  benches/ab_cache.py A_BINARY B_BINARY [--rounds N]

Uses benches/bench.py's setup (same registry, config, load generators). Standard library only.
"""

import argparse
import base64
import os
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as b  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() == 0:
        b.PRIORITY = -15
    tmp = tempfile.mkdtemp(prefix="regate-ab-", dir="/dev/shm")
    try:
        ports = {k: b.free_port() for k in ("reg", "a", "b", "b_off")}
        reg = b.start_registry(tmp, ports["reg"])
        pw = b.bcrypt_hash()
        procs = {
            "a": b.start_regate(args.a, tmp, "a", ports["a"], ports["reg"], pw),
            "b": b.start_regate(args.b, tmp, "b", ports["b"], ports["reg"], pw),
            "b_off": b.start_regate(args.b, tmp, "b_off", ports["b_off"], ports["reg"], pw,
                                    extra="cache:\n  max_bytes: 0\n"),
        }
        fr = {k: b.Front(k, k, f"http://127.0.0.1:{ports[k]}", p, auth=True)
              for k, p in procs.items()}
        digest, _ = b.seed_registry(f"http://127.0.0.1:{ports['reg']}", tmp, b.GIB)
        basic = "Basic " + base64.b64encode(f"{b.USER}:{b.PASSWORD}".encode()).decode()
        got = {}
        for rnd in range(args.rounds):
            for k in ("a", "b"):
                f = fr[k]
                f.token()  # the credential is cached from here on
                url = (f"{f.base}/auth?service=Docker%20registry"
                       f"&scope=repository:{b.BLOB_REPO}:pull,push")
                got.setdefault(("auth tokens/s", k), []).append(
                    b.wrk(tmp, url, 10, 32, auth=basic)["rps"])
            for k in ("a", "b_off", "b"):
                got.setdefault(("blob GET MiB/s", k), []).append(
                    b.fetch(fr[k], digest, b.GIB, 1)[0])
            for k in ("a", "b_off"):
                f = fr[k]
                got.setdefault(("HEAD forwarded req/s", k), []).append(
                    b.hey(f"{f.base}/v2/{b.BLOB_REPO}/manifests/latest", 10, 32,
                          accept=b.OCI_MANIFEST, auth=f"Bearer {f.token()}")["rps"])
            b.log(f"round {rnd + 1}/{args.rounds} done")
        for (m, k), v in got.items():
            print(f"{m:22} {k:6} median {statistics.median(v):9,.0f}   rounds "
                  + " / ".join(f"{x:,.0f}" for x in v))
    finally:
        b.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
