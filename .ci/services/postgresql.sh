#!/usr/bin/env bash
# Installs (if needed) Debian's PostgreSQL, starts a cluster of its own on a loopback port (no systemd), creates the test
# role and database, and prints the line the fleet's PostgreSQL tests read. Idempotent: if the cluster already answers,
# it only prints the line.
#   usage: eval "$(.ci/services/postgresql.sh | tail -n 1)"
# The role's password is a test credential for this throw-away cluster on 127.0.0.1 only.
set -euo pipefail
PORT="${FLEET_PG_PORT:-55432}"
DATA="${FLEET_PG_DATA:-/var/tmp/fleet-ci-postgres}"
SOCK="${DATA}/socket"
PASSWORD="fleet-ci-test"
LINE="export FLEET_TEST_POSTGRES='Host=127.0.0.1;Port=${PORT};Database=fleet_test;Username=fleet;Password=${PASSWORD}'"

answers() { (echo > "/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }
as_postgres() { if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

if answers; then
  echo "PostgreSQL already answers on port ${PORT}" >&2
  echo "${LINE}"
  exit 0
fi

if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  echo "installing postgresql ..." >&2
  SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  apt-cache show postgresql >/dev/null 2>&1 || $SUDO apt-get -o DPkg::Lock::Timeout=900 update >&2
  $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y postgresql >&2
fi
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"

if [ ! -f "${DATA}/PG_VERSION" ]; then
  mkdir -p "${DATA}"
  chown postgres:postgres "${DATA}" 2>/dev/null || true
  as_postgres "${BIN}/initdb" -D "${DATA}" -U postgres --auth-local=trust --auth-host=scram-sha-256 >&2
fi
mkdir -p "${SOCK}"; chown postgres:postgres "${SOCK}" 2>/dev/null || true
as_postgres "${BIN}/pg_ctl" -D "${DATA}" -l "${DATA}/server.log" -w -t 60 \
  -o "-p ${PORT} -k ${SOCK} -c listen_addresses=127.0.0.1 -c max_connections=200" start >&2

psql_admin() { as_postgres psql -h "${SOCK}" -p "${PORT}" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'fleet'")" != "1" ]; then
  psql_admin -c "CREATE ROLE fleet LOGIN CREATEDB PASSWORD '${PASSWORD}'" >&2
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'fleet_test'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE fleet_test OWNER fleet" >&2
fi
echo "PostgreSQL answers on port ${PORT} (data ${DATA})" >&2
echo "${LINE}"
