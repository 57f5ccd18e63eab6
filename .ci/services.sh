#!/bin/sh
# Installs the real services the test suite starts for itself (on free loopback
# ports; the suite never uses the machine's own instances). Missing binaries are
# installed from Debian's packages when we are root; otherwise the suite fails
# loudly rather than skipping.
set -eu
need=""
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
if [ -n "$need" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$need"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "missing:$need (install them, or run make test as root on Debian)" >&2
    exit 1
  fi
fi
