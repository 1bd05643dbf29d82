#!/usr/bin/env bash
# Install Debian's chromium (for tests/test_report_browser.py) when /usr/bin/chromium is missing.
# Quiet and idempotent: prints apt's log only when the install fails.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq \
       && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1
then
    cat "$log" >&2
    echo "install-browser.sh: installing chromium failed" >&2
    exit 1
fi
test -x /usr/bin/chromium
