#!/bin/sh
# The per-service RabbitMQ users and their permissions: the one place they are written down.
#
# Creates (or updates) one user per service through the management HTTP API, with only the
# permissions that service needs, on one vhost. The admin user (RABBITMQ_USER, the UI login)
# is left as it is. Run by docker compose (one-shot service `rabbitmq-users`, before the
# services start) and by the test crates/booksvc/tests/operations/broker_users.rs against a
# private broker, which then runs both services as these users. POSIX sh, curl, od, tr and sed only.
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
# booksvc declares its own exchanges and queues, binds its queues to `books` (read), consumes,
# and publishes retries and dead letters to its own exchanges; `redrive-dlq` republishes through
# the default exchange (amq.default), which a queue's dead-letter target "" also needs. It may
# not configure `books` (configure includes delete): it uses the one storagesvc declares, and
# waits for it (reconnecting) if booksvc starts first. It cannot publish to `books` either; what
# it can publish reaches its own queues only.
#   booksvc.book-changed(.…)  its queue, retry exchange and queues, DLQ exchange and queue
#   amq.gen-…                 the server-named, exclusive per-replica queue bound to `books`
#                             (cache invalidation: one queue per booksvc process)
BOOKSVC_OWN='booksvc\.book-changed(\..+)?|amq\.gen-.+'
BOOKSVC_CONFIGURE="^($BOOKSVC_OWN)$"
BOOKSVC_WRITE="^($BOOKSVC_OWN|amq\.default)$"
BOOKSVC_READ="^(books|$BOOKSVC_OWN)$"

# Nothing secret goes on a command line (any local user can read those in /proc): curl gets
# the administrator's credentials and every request body in a config file on its stdin (-K -).
nl='
'
case "$RABBITMQ_USER$RABBITMQ_PASS" in
  *"$nl"*) echo "setup-users: RABBITMQ_USER / RABBITMQ_PASS may not contain a newline" >&2; exit 1 ;;
esac
for service_user in "$STORAGESVC_USER" "$BOOKSVC_USER"; do
  # Creating a user sets its tags: the administrator would lose its own.
  if [ "$service_user" = "$RABBITMQ_USER" ]; then
    echo "setup-users: service user $service_user is the administrator RABBITMQ_USER; give the services their own users" >&2
    exit 1
  fi
done
if [ "$STORAGESVC_USER" = "$BOOKSVC_USER" ]; then
  echo "setup-users: storagesvc and booksvc need different users (both are $BOOKSVC_USER)" >&2
  exit 1
fi

# A JSON string's contents: `"` and `\` escaped, control characters as \u00XX, every other
# byte (UTF-8 included) as it is. Byte by byte through od: POSIX sh has no better tool.
json() {
  printf '%s' "$1" | od -An -v -to1 | tr -s ' \t' '\n\n' | while read -r byte; do
    case $byte in
      '') ;;
      042) printf '\\"' ;;
      134) printf '\\\\' ;;
      0[0-3][0-7]) printf '\\u%04x' "$((0$byte))" ;;
      *) printf "\\$byte" ;;
    esac
  done
}

# Percent-encoding for a path segment (vhost and user names): all but unreserved characters.
segment() {
  printf '%s' "$1" | od -An -v -to1 | tr -s ' \t' '\n\n' | while read -r byte; do
    case $byte in
      '') ;;
      05[5-6] | 06[0-7] | 07[0-1] | 10[1-7] | 1[12][0-7] | 13[0-2] | 137 | 14[1-7] | 1[56][0-7] | 17[0-2] | 176)
        printf "\\$byte" ;; # - . 0-9 A-Z _ a-z ~
      *) printf '%%%02X' "$((0$byte))" ;;
    esac
  done
}

# A value inside double quotes in a curl config file: `\` and `"` escaped.
quoted() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'
}

api() { # METHOD PATH [BODY]
  {
    printf 'user = "%s"\n' "$(quoted "$RABBITMQ_USER:$RABBITMQ_PASS")"
    if [ -n "${3:-}" ]; then printf 'data-binary = "%s"\n' "$(quoted "$3")"; fi
  } | curl -fsS --max-time 15 -K - -X "$1" -H 'content-type: application/json' \
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
