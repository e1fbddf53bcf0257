#!/bin/sh
# The per-service RabbitMQ users and their permissions: the one place they are written down.
#
# Creates (or updates) one user per service through the management HTTP API, with only the
# permissions that service needs, on one vhost. The admin user (RABBITMQ_USER, the UI login)
# is left as it is. Run by docker compose (one-shot service `rabbitmq-users`, before the
# services start) and by the test crates/booksvc/tests/operations/broker_users.rs against a
# private broker, which then runs both services as these users. POSIX sh + curl only.
#
#   RABBITMQ_API                     management API base, e.g. http://rabbitmq:15672 (required)
#   RABBITMQ_USER, RABBITMQ_PASS     an administrator, to create the users (required)
#   RABBITMQ_VHOST                   default /
#   STORAGESVC_AMQP_USER / _PASS     storagesvc's user (default name storagesvc; password required)
#   BOOKSVC_AMQP_USER / _PASS        booksvc's user (default name booksvc; password required)
#   SETUP_WAIT_SECONDS               how long to wait for the API to answer, default 120
set -eu

: "${RABBITMQ_API:?set RABBITMQ_API, e.g. http://rabbitmq:15672}"
: "${RABBITMQ_USER:?set RABBITMQ_USER (an administrator)}"
: "${RABBITMQ_PASS:?set RABBITMQ_PASS}"
: "${STORAGESVC_AMQP_PASS:?set STORAGESVC_AMQP_PASS}"
: "${BOOKSVC_AMQP_PASS:?set BOOKSVC_AMQP_PASS}"
VHOST="${RABBITMQ_VHOST:-/}"
STORAGESVC_USER="${STORAGESVC_AMQP_USER:-storagesvc}"
BOOKSVC_USER="${BOOKSVC_AMQP_USER:-booksvc}"

# Permission regexes (configure, write, read), matched against exchange and queue names;
# names are those of crates/events/src/topology.rs.
#
# storagesvc publishes to exchange `books` and declares it; it may read nothing.
STORAGESVC_CONFIGURE='^books$'
STORAGESVC_WRITE='^books$'
STORAGESVC_READ='^$'
# booksvc declares its topology (exchange `books` too), binds its queues, consumes, and
# publishes retries and dead letters to its own exchanges; `redrive-dlq` republishes through
# the default exchange (amq.default), which a queue's dead-letter target "" also needs.
#   booksvc.book-changed(.…)  its queue, retry exchange and queues, DLQ exchange and queue
#   amq.gen-…                 the server-named, exclusive per-replica queue bound to `books`
#                             (cache invalidation: one queue per booksvc process)
BOOKSVC_OWN='booksvc\.book-changed(\..+)?|amq\.gen-.+'
BOOKSVC_CONFIGURE="^(books|$BOOKSVC_OWN)$"
BOOKSVC_WRITE="^($BOOKSVC_OWN|amq\.default)$"
BOOKSVC_READ="^(books|$BOOKSVC_OWN)$"

# JSON string escaping for what we send: backslash and double quote.
json() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

# Percent-encoding for a path segment: enough for vhost and user names ("/" → %2F).
segment() {
  printf '%s' "$1" | sed -e 's/%/%25/g' -e 's/\//%2F/g' -e 's/ /%20/g' -e 's/#/%23/g' -e 's/?/%3F/g'
}

api() { # METHOD PATH [BODY]
  curl -fsS --max-time 15 -u "$RABBITMQ_USER:$RABBITMQ_PASS" -X "$1" \
    -H 'content-type: application/json' ${3:+--data-binary "$3"} \
    "${RABBITMQ_API%/}/api/$2" >/dev/null
}

wait_for_api() {
  waited=0
  until api GET overview 2>/dev/null; do
    if [ "$waited" -ge "${SETUP_WAIT_SECONDS:-120}" ]; then
      api GET overview # once more, showing curl's error
      echo "setup-users: the management API at $RABBITMQ_API did not answer" >&2
      exit 1
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

user() { # NAME PASSWORD CONFIGURE WRITE READ
  api PUT "users/$(segment "$1")" "{\"password\":\"$(json "$2")\",\"tags\":\"\"}"
  api PUT "permissions/$(segment "$VHOST")/$(segment "$1")" \
    "{\"configure\":\"$(json "$3")\",\"write\":\"$(json "$4")\",\"read\":\"$(json "$5")\"}"
  echo "setup-users: $1 on vhost $VHOST: configure $3, write $4, read $5"
}

wait_for_api
user "$STORAGESVC_USER" "$STORAGESVC_AMQP_PASS" "$STORAGESVC_CONFIGURE" "$STORAGESVC_WRITE" "$STORAGESVC_READ"
user "$BOOKSVC_USER" "$BOOKSVC_AMQP_PASS" "$BOOKSVC_CONFIGURE" "$BOOKSVC_WRITE" "$BOOKSVC_READ"
