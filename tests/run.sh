#!/usr/bin/env bash
# The test command: installs what the tests run that is missing (Debian packages), prepares
# the machine, and runs every test.
#
#   tests/run.sh                     # the whole suite
#   tests/run.sh --test it limits::  # any `cargo test` arguments
#
# Needs root (apt-get, dockerd, /etc/docker/certs.d, an /etc/hosts entry) and Rust >= 1.89.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests run, one Debian package a line.
packages=(
    gcc                 # cc: ring's C code, and the linker
    libc6-dev
    docker-registry     # registry:2's code (distribution 2.8): the upstream of most tests
    skopeo              # push, pull, copy and login as clients do
    docker.io           # dockerd and the docker CLI
    containerd          # containerd and ctr
    slapd               # the LDAP tests' own directory
    ldap-utils          # ldapadd, ldapwhoami
    postgresql          # the SQL tests' own PostgreSQL (initdb, pg_ctl)
    mariadb-server      # the SQL tests' own MariaDB
    redis-server        # the replicas' shared state
    haproxy             # the balancer in front of the replicas
    iproute2            # ss: what a process holds open
    openssl             # s_client: the TLS versions offered
    ca-certificates
    curl                # an HTTP/2 client (nghttp2)
    procps              # kill: stop and pause the daemons the tests start
    pebble              # Let's Encrypt's ACME test server: the ACME tests run their own
)

# Services those packages start on install; the tests start their own, on ports of their own.
services=(
    docker-registry
    slapd
    postgresql
    mariadb
    redis-server
    haproxy
)

fail() {
    echo "tests/run.sh: $*" >&2
    exit 1
}

# Installs the packages given that are not installed, with one `apt-get update` before, and
# none when all are there.
install_missing() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || fail "missing ${missing[*]}, and no apt-get to install them"
    echo "tests/run.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

stop_services() {
    local s
    for s in "$@"; do
        systemctl stop "$s" 2>/dev/null || true
    done
}

[ "$(id -u)" -eq 0 ] || fail "needs root: it installs packages, and the tests run dockerd and edit /etc/hosts"
if ! command -v cargo >/dev/null && [ -x "${HOME:-}/.cargo/bin/cargo" ]; then
    PATH="${HOME:-}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || fail "cargo not found: install Rust 1.89 or later (https://rustup.rs)"

# Setup, one step a line.
install_missing "${packages[@]}"
stop_services "${services[@]}"
# The web pages' tests: Debian's chromium, nodejs and npm, and playwright-core from the lockfile.
tests/idp/setup.sh
# The connection-cap test holds ~9,000 sockets: as many open files as allowed, up to 65536.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# Most tests wait on daemons and clients rather than compute: two test threads a core
# (libtest's default is one), unless RUST_TEST_THREADS says otherwise.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-$((2 * $(nproc)))}"

exec cargo test --locked "$@"
