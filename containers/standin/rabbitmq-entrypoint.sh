#!/bin/sh
# RabbitMQ stand-in entrypoint: honours RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS like the
# official image, lets guest connect from outside the container (the official image does too),
# logs to stdout and runs the server as PID 1 (SIGTERM from `docker stop` = clean shutdown).
# The management plugin is enabled in the image.
set -eu

if [ "$1" != rabbitmq-server ]; then exec "$@"; fi
shift

{
  echo "loopback_users.guest = false"
  echo "listeners.tcp.default = 5672"
  echo "management.tcp.port = 15672"
  if [ -n "${RABBITMQ_DEFAULT_USER:-}" ]; then echo "default_user = $RABBITMQ_DEFAULT_USER"; fi
  if [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then echo "default_pass = $RABBITMQ_DEFAULT_PASS"; fi
  if [ -n "${RABBITMQ_DEFAULT_VHOST:-}" ]; then echo "default_vhost = $RABBITMQ_DEFAULT_VHOST"; fi
} >/etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq

export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=- RABBITMQ_SASL_LOGS=-
cd /var/lib/rabbitmq
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
  /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
