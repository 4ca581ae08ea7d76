#!/usr/bin/env bash
# Prometheus (server + promtool) for the alert-rule and dashboard-query tests, and docker-compose (1.29, parses
# docker-compose.yml without an engine) for the compose test. Idempotent: installs the Debian packages only when
# missing. .ci/run evals stdout, so stdout carries only variable assignments; every log line goes to stderr.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
missing=()
[ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ] || missing+=(prometheus)
[ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
  echo "prometheus.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >&2; then
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update -qq >&2 || true
    $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >&2 \
      || echo "prometheus.sh: could not install ${missing[*]}; those tests will be skipped" >&2
  fi
fi
# The package's service does not start here (policy-rc.d); the tests start their own server on a loopback port.
if [ -x /usr/bin/promtool ] && [ -x /usr/bin/prometheus ]; then
  echo "prometheus.sh: $(/usr/bin/prometheus --version 2>&1 | head -n 1)" >&2
  echo "export PROMTOOL=/usr/bin/promtool"
  echo "export PROMETHEUS=/usr/bin/prometheus"
fi
if [ -x /usr/bin/docker-compose ]; then
  echo "prometheus.sh: $(/usr/bin/docker-compose version --short 2>/dev/null || echo docker-compose)" >&2
  echo "export DOCKER_COMPOSE=/usr/bin/docker-compose"
fi
