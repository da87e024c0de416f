#!/usr/bin/env bash
# The web console's and the API docs' tests drive Debian's chromium (Playwright's own
# browser download is not used). Install it where we can (root, apt-get); otherwise stop
# and say what is missing, so that `make test` never quietly skips the browser tests.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

[ -x "$CHROMIUM" ] && exit 0
if [ "${CHATSESSIONS_SKIP_BROWSER:-}" = "1" ]; then
  echo "==> CHATSESSIONS_SKIP_BROWSER=1: the browser tests will be skipped"
  exit 0
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo -n true 2>/dev/null && sudo="sudo -n"
if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "==> installing chromium for the browser tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; } \
    || true
fi

if [ ! -x "$CHROMIUM" ]; then
  cat >&2 <<MSG
error: the browser tests need Chromium at $CHROMIUM, and it could not be installed here.
  Install Debian's package as root:   apt-get install chromium
  or skip those tests explicitly:     CHATSESSIONS_SKIP_BROWSER=1 make test
MSG
  exit 1
fi
echo "==> chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
