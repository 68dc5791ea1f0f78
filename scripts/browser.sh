#!/usr/bin/env bash
# The browser for tests/test_browser.py: Debian's chromium at /usr/bin/chromium, driven by the playwright package
# (requirements-host.txt; no browser download). Installed once, only where missing; needs root and apt-get (CI).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "browser: installing Debian's chromium (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { echo "browser: apt-get install chromium failed; the browser tests will be skipped" >&2; exit 0; }
else
  echo "browser: no /usr/bin/chromium (install it: sudo apt-get install -y chromium); the browser tests will be skipped" >&2
fi
