#!/usr/bin/env bash
# Installs what tests/idp needs, idempotently, on Debian (as root, as CI runs):
#   - Debian's chromium and chromium-driver, and nodejs/npm, each only if missing
#     (the browser comes from apt only: nothing here downloads a browser build);
#   - node_modules from package-lock.json (`npm ci`) when it is missing or the lockfile
#     changed since the last install;
#   - then checks that node is 20 or newer and that headless Chromium starts.
# Safe to run again: a second run installs nothing and takes about a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# apt waits for a dpkg lock held by another process (e.g. unattended upgrades, a parallel
# setup) instead of failing at once; `apt-get update` takes the lists lock, so retry it too.
apt_get() {
  local tries=0
  until DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -q "$@"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 5 ]; then
      echo "setup.sh: apt-get $* failed $tries times" >&2
      return 1
    fi
    sleep 10
  done
}

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}" >&2
  apt_get update
  apt_get install -y "${missing[@]}"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup.sh: node $(node --version) is too old; playwright-core needs node >= 20" >&2
  exit 1
fi

# Reinstall when the lockfile differs from the one the last `npm ci` installed.
stamp="$here/node_modules/.setup-lock.sha256"
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup.sh: npm ci in $here" >&2
  (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > "$stamp"
fi

# Fail here, not in the middle of a test, if Chromium cannot start.
check="$(printf '%s' '{"steps":[{"goto":"data:text/html,<title>ok</title>"},{"title":true,"as":"t"}]}' \
  | node "$here/browser.mjs" -)" || {
  echo "setup.sh: headless Chromium did not start: $check" >&2
  exit 1
}
echo "setup.sh: ok ($(node --version), $(/usr/bin/chromium --version 2>/dev/null | head -n1))" >&2
