#!/usr/bin/env bash
# The quick start's entry point: `./make.sh demo`, `./make.sh test` (as root on Debian/Ubuntu).
# Installs make itself when the machine has none, then runs the Makefile target, which
# installs the rest (apt packages, the venv).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v make >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q make >/dev/null
  else
    echo "make.sh: 'make' is missing; install it (apt-get install make) or run as root" >&2
    exit 2
  fi
fi
exec make "$@"
