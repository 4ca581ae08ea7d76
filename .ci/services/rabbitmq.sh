#!/usr/bin/env bash
# Installs (if needed) and starts a local RabbitMQ broker without systemd, waits for port 5672,
# and prints the environment line the fleet's RabbitMQ tests read. Idempotent: if a broker already
# answers on the port, it only prints the line.
#   usage: .ci/services/rabbitmq.sh            (then: export the printed FLEET_TEST_RABBITMQ=... line)
#          eval "$(.ci/services/rabbitmq.sh | tail -n 1)"
set -euo pipefail
PORT="${RABBITMQ_PORT:-5672}"
URL="amqp://guest:guest@localhost:${PORT}/"

answers() { (echo > "/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }

if answers; then
  echo "RabbitMQ already answers on port ${PORT}" >&2
  echo "export FLEET_TEST_RABBITMQ=${URL}"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "installing rabbitmq-server ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-cache show rabbitmq-server >/dev/null 2>&1; then
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update >&2
  fi
  if ! $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y rabbitmq-server >&2; then
    $SUDO apt-get -o DPkg::Lock::Timeout=900 update >&2
    $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y rabbitmq-server >&2
  fi
fi

echo "starting rabbitmq-server ..." >&2
# The package does not auto-start here (policy-rc.d); start it detached, without systemd.
if [ -x /etc/init.d/rabbitmq-server ]; then
  $SUDO /etc/init.d/rabbitmq-server start >&2 || $SUDO rabbitmq-server -detached >&2
else
  $SUDO rabbitmq-server -detached >&2
fi

for _ in $(seq 1 600); do
  if answers; then
    echo "RabbitMQ answers on port ${PORT}" >&2
    echo "export FLEET_TEST_RABBITMQ=${URL}"
    exit 0
  fi
  sleep 0.1
done
echo "RabbitMQ did not open port ${PORT} within 60 s" >&2
exit 1
