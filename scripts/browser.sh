#!/usr/bin/env bash
# Makes Debian's headless Chromium available for the console's browser test
# (internal/serve/browser_test.go). Installs the `chromium` package when it is missing and
# apt-get can be used (root or passwordless sudo); otherwise says so and exits 0, and the
# browser test skips with that reason. Idempotent and quiet when Chromium is already there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser: no chromium and no apt-get; the console's browser test will skip" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "browser: installing chromium needs root; the console's browser test will skip" >&2
    exit 0
  fi
fi
echo "browser: installing Debian's chromium for the console's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }; then
  echo "browser: chromium could not be installed; the console's browser test will skip" >&2
fi
exit 0
