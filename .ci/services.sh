#!/bin/sh
# Installs the real services the test suite starts for itself (each on a free
# loopback port; the suite never uses the machine's own instances): redis-server
# and PostgreSQL's server binaries; and Debian's Chromium, which tests/browser
# drives with Playwright (Playwright never downloads a browser here). Missing
# ones are installed from Debian's packages when we are root; otherwise this
# fails loudly, since the suite fails rather than skips without them.
set -eu
need=""
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
[ -x /usr/bin/chromium ] || need="$need chromium"
command -v turnserver >/dev/null 2>&1 || need="$need coturn"  # tests/calls: relay-only calls
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "missing:$need (install them, or run make test as root on Debian)" >&2
    exit 1
  fi
fi
