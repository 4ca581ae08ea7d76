#!/usr/bin/env bash
# Headless Chromium for the HTML report tests (tests/Cli.Tests). Idempotent: installs the Debian package
# only when /usr/bin/chromium is missing. .ci/run evals stdout, so stdout carries only variable
# assignments; every log line goes to stderr.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium.sh: installing chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 || true
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
fi
if [ -x /usr/bin/chromium ]; then
  echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium)" >&2
  echo "CHROMIUM=/usr/bin/chromium"
else
  echo "chromium.sh: chromium could not be installed; the report rendering tests will be skipped" >&2
fi
