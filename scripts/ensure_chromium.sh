#!/usr/bin/env bash
# Installs Debian's chromium for the real-browser test when it is missing (needs root + apt).
set -u
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing chromium for the browser test (apt-get)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: chromium could not be installed; the browser test will report it"
else
  echo "note: /usr/bin/chromium is missing and apt-get is not usable; the browser test will report it"
fi
exit 0
