"""Issue #20's rows: many rules, many users (imported by bench.py; `--scale-only` runs these
rows alone).

  * /auth tokens/s with 10,000 users and 50 rules against 5,000 rules, for the user whose
    rule is the last one (target: >= 0.8x);
  * 100,000 users in `users:`, and 100,000 in an htpasswd file: time from starting regate
    until it answers, and the RSS it takes beyond the same config with 10 users (targets:
    < 2 s, < 64 MiB);
  * /auth with the 100,000-user config while it is reloaded (SIGHUP) every 2 s, against
    the same without reloads: a reload must not pause token requests.

Only regate runs here (no registry: /auth never asks it). `b` is the bench module, for its
process, load and wrk helpers (one set of started processes, one priority setting).
"""

import base64
import http.client
import json
import os
import signal
import statistics
import threading
import time

USERS = 10_000
RULE_COUNTS = (50, 5_000)
BIG = 100_000
LAST = "last-user"  # the user whose rule is the last
RELOAD_EVERY = 2.0  # seconds between SIGHUPs during the reload row


def users_yaml(n, pwhash, extra=()):
    """`users:` with `n` users u0..u{n-1} (each labelled) plus `extra` names, one hash."""
    lines = ["users:"]
    for name in list(extra) + [f"u{i}" for i in range(n)]:
        lines.append(f'  "{name}": {{password: "{pwhash}", labels: {{team: [t{len(lines) % 100}]}}}}')
    return "\n".join(lines) + "\n"


def acl_yaml(rules):
    """`rules` rules, the last one for LAST: a few general ones first (one the index files
    under a name prefix, one it cannot file), then one per user with a literal account and
    its own namespace, as a config generated from an account database has."""
    out = ["acl:",
           '  - match: {account: "admin"}\n    actions: ["*"]',
           '  - match: {account: "/.+/", name: "library/*"}\n    actions: [pull]',
           '  - match: {account: "/^ci-/", type: registry}\n    actions: ["*"]']
    for i in range(rules - len(out)):
        out.append(f'  - match: {{account: "u{i}", name: "u{i}/*"}}\n    actions: [pull, push]')
    out.append(f'  - match: {{account: "{LAST}", name: "{LAST}/*"}}\n    actions: [pull, push]')
    return "\n".join(out) + "\n"


def start_regate(b, binary, tmp, name, body):
    """regate with `body` (users, acl, ...) and an upstream nothing listens on; returns
    (process, base URL, seconds from start until it answered)."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    port = b.free_port()
    cfg = os.path.join(d, "regate.yml")
    with open(cfg, "w") as f:
        f.write(f'server:\n  addr: "127.0.0.1:{port}"\ntoken:\n  expiration: 3600\n'
                f"upstream:\n  url: http://127.0.0.1:9\ndata_dir: {d}/data\n{body}")
    logf = os.path.join(d, "regate.log")
    t0 = time.monotonic()
    p = b.start(name, [binary, "serve", "--config", cfg], logf)
    # Polled every 5 ms without a curl process each time: the time is the row.
    while True:
        if p.poll() is not None:
            b.die(f"{name} exited with {p.returncode}; log {logf}:\n" + b.tail(logf))
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v2/")
            c.getresponse().read()
            c.close()
            break
        except OSError:
            if time.monotonic() - t0 > 60:
                b.die(f"{name} did not answer within 60 s; log {logf}:\n" + b.tail(logf))
            time.sleep(0.005)
    return p, f"http://127.0.0.1:{port}", time.monotonic() - t0, cfg


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except Exception:  # noqa: BLE001 - a stuck process is killed, whatever the reason
        p.kill()
        p.wait()


def auth_url(base, repo):
    return f"{base}/auth?service=Docker%20registry&scope=repository:{repo}:pull,push"


def first_token(b, base, user, password, repo):
    """One /auth request (bcrypt runs once; the credential is cached after): the granted
    actions, to check the rules decide as they should."""
    r = b.curl(["-u", f"{user}:{password}", auth_url(base, repo)])
    token = json.loads(r.stdout)["token"]
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return ",".join(claims["access"][0]["actions"])


def measure(b, binary, tmp, load, pwhash, secs, rounds, lim, notes):
    """Returns {"auth": {rules: [rps...]}, "load": {kind: [(secs, rss_mib, hwm_mib)...]},
    "reload": {"without": [...], "during": [...], "reloads": n}}."""
    got = {"auth": {n: [] for n in RULE_COUNTS}, "load": {}, "reload": {}}
    basic = "Basic " + base64.b64encode(f"{LAST}:{b.PASSWORD}".encode()).decode()

    # --- 10,000 users, 50 against 5,000 rules, one process each, rounds interleaved ------
    fronts = {}
    for n in RULE_COUNTS:
        body = users_yaml(USERS, pwhash, extra=[LAST]) + acl_yaml(n)
        p, base, _, _ = start_regate(b, binary, tmp, f"regate-rules-{n}", body)
        granted = first_token(b, base, LAST, b.PASSWORD, f"{LAST}/app")
        if granted != "pull,push":
            b.die(f"{n} rules: {LAST} was granted {granted!r}, not pull,push")
        fronts[n] = (p, base)
    load.server_pids = lambda: [p.pid for p, _ in fronts.values()]
    for rnd in range(rounds):
        for n, (p, base) in fronts.items():
            b.log(f"scale round {rnd + 1}/{rounds}: /auth with {USERS:,} users and {n:,} "
                  f"rules ({secs}s, 32 connections)")
            r = load.measure(f"auth {n} rules",
                             lambda: b.wrk(tmp, auth_url(base, f"{LAST}/app"), secs, 32,
                                           auth=basic), lim)
            got["auth"][n].append(r["rps"])
    for p, _ in fronts.values():
        stop(p)
    b.log("scale /auth tokens/s:", {n: [round(x) for x in v] for n, v in got["auth"].items()})

    # --- 100,000 users: start until answering, RSS -------------------------------------
    htpasswd = os.path.join(tmp, "big.htpasswd")
    with open(htpasswd, "w") as f:
        for i in range(BIG):
            f.write(f"h{i}:{pwhash}\n")
    small_users = users_yaml(10, pwhash, extra=[LAST])
    configs = {
        "10 users": small_users + acl_yaml(50),
        "users": users_yaml(BIG, pwhash, extra=[LAST]) + acl_yaml(50),
        "htpasswd": small_users + f"htpasswd: {htpasswd}\n" + acl_yaml(50),
    }
    for rnd in range(rounds):
        for kind, body in configs.items():
            load.server_pids = lambda: []
            load.wait_quiet(lim)
            p, base, took, _ = start_regate(b, binary, tmp, f"regate-load-{kind}-{rnd}", body)
            time.sleep(1)  # anything started after the listener settles
            rss = b.status_kib(p.pid, "VmRSS") / 1024
            hwm = b.status_kib(p.pid, "VmHWM") / 1024
            stop(p)
            got["load"].setdefault(kind, []).append((took, rss, hwm))
            b.log(f"scale load {kind}: answering after {took:.2f} s, RSS {rss:.1f} MiB "
                  f"(peak {hwm:.1f})")

    # --- /auth during reloads of the 100,000-user config ---------------------------------
    p, base, _, _ = start_regate(b, binary, tmp, "regate-reload", configs["users"])
    first_token(b, base, LAST, b.PASSWORD, f"{LAST}/app")
    load.server_pids = lambda: [p.pid]
    url = auth_url(base, f"{LAST}/app")
    without, during, sent = [], [], [0]
    for rnd in range(rounds):
        b.log(f"scale round {rnd + 1}/{rounds}: /auth with {BIG:,} users, without and "
              f"during reloads every {RELOAD_EVERY:g} s")
        without.append(load.measure("auth 100k", lambda: b.wrk(tmp, url, secs, 32,
                                                                auth=basic), lim))
        stop_hup = threading.Event()

        def hup():
            while not stop_hup.wait(RELOAD_EVERY / 2):
                p.send_signal(signal.SIGHUP)
                sent[0] += 1
                stop_hup.wait(RELOAD_EVERY / 2)

        t = threading.Thread(target=hup)
        t.start()
        try:
            during.append(b.wrk(tmp, url, secs, 32, auth=basic))
        finally:
            stop_hup.set()
            t.join()
    time.sleep(RELOAD_EVERY)
    with open(os.path.join(tmp, "regate-reload", "regate.log"), errors="replace") as f:
        reloaded = f.read().count("configuration reloaded")
    stop(p)
    got["reload"] = {"without": without, "during": during, "sighup": sent[0],
                     "reloaded": reloaded}
    notes.append(
        f"Scale: {USERS:,} users in `users:`; the rules are 3 general ones, one per user "
        f"(`{{account: uN, name: \"uN/*\"}}`), and last the rule of the user asking "
        f"(`{LAST}`, scope `repository:{LAST}/app:pull,push`); wrk -t2 -c32 -d{secs}s, the "
        f"credential cached; median of {rounds} rounds, the two configs interleaved. "
        f"Loading: regate started {rounds}× with each config (no registry), timed until its "
        f"first HTTP answer (polled every 5 ms); RSS 1 s later; RSS added = against the same "
        f"config with 10 users. Reloads: SIGHUP every {RELOAD_EVERY:g} s during wrk; "
        f"{sent[0]} sent, {reloaded} reloads logged; a reload parses and builds off the "
        f"request threads and swaps at once.")
    return got


def render(got):
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    a50, a5k = (med(got["auth"][n]) for n in RULE_COUNTS)
    r = a5k / a50 if a50 and a5k else None
    loads = {k: [med([x[i] for x in v]) for i in range(3)] for k, v in got["load"].items()}
    small_rss = loads["10 users"][1]
    rows = [
        ("/auth tokens/s, 10,000 users, 50 rules, user's rule last", "tokens/s", a50, None),
        ("/auth tokens/s, 10,000 users, 5,000 rules, user's rule last", "tokens/s", a5k, None),
        ("… 5,000 rules against 50", "×", r, ("ge", 0.8)),
        ("regate with 10 users: start until answering", "s", loads["10 users"][0], None),
        ("… RSS", "MiB", small_rss, None),
    ]
    for kind, label in (("users", "in `users:`"), ("htpasswd", "in an htpasswd file")):
        took, rss, hwm = loads[kind]
        rows += [
            (f"100,000 users {label}: start until answering", "s", took, ("lt", 2)),
            ("… RSS added (against 10 users)", "MiB", rss - small_rss, ("lt", 64)),
            ("… peak RSS (VmHWM) added", "MiB", hwm - loads["10 users"][2], None),
        ]
    rl = got["reload"]
    w_rps = med([x["rps"] for x in rl["without"]])
    d_rps = med([x["rps"] for x in rl["during"]])
    rows += [
        ("/auth tokens/s, 100,000 users, no reload", "tokens/s", w_rps, None),
        (f"… during reloads (SIGHUP every {RELOAD_EVERY:g} s)", "tokens/s", d_rps, None),
        ("… p99 latency, no reload", "ms", med([x["p99_ms"] for x in rl["without"]]), None),
        ("… p99 latency, during reloads", "ms", med([x["p99_ms"] for x in rl["during"]]),
         None),
    ]
    out = ["", "Scale (issue #20): many rules, many users (regate alone, no registry):", "",
           "| measurement | unit | regate | target | |", "|---|---|--:|---|---|"]
    table = []
    for name, unit, v, target in rows:
        verdict, ttext = "", ""
        if target:
            kind, x = target
            ok = v is not None and (v >= x if kind == "ge" else v < x)
            verdict = "PASS" if ok else "MISS"
            ttext = f"≥ {x}×" if kind == "ge" else f"< {x} {unit}"
        if v is None:
            shown = "—"
        elif unit == "tokens/s":
            shown = f"{v:,.0f}"
        elif unit in ("s", "ms", "×"):
            shown = f"{v:.2f}"
        else:
            shown = f"{v:.1f}"
        out.append(f"| {name} | {unit} | {shown} | {ttext} | {verdict} |")
        table.append({"name": name, "unit": unit, "regate": v, "target": ttext,
                      "verdict": verdict})
    return "\n".join(out) + "\n", table
