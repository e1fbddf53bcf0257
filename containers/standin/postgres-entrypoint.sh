#!/bin/sh
# PostgreSQL stand-in entrypoint: honours what the official image's entrypoint does for the
# variables this project uses. On an empty $PGDATA: initdb with POSTGRES_USER as superuser and
# POSTGRES_PASSWORD (scram-sha-256 over TCP, trust on the local socket), create POSTGRES_DB.
# Then exec the server as PID 1 (SIGINT from `docker stop` = fast shutdown). Arguments starting
# with '-' are passed to postgres, as `docker run image -c fsync=off` does with the official one.
set -eu

if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" != postgres ]; then exec "$@"; fi
shift

: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
    echo "postgres stand-in: POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  chown postgres "$pwfile"
  as_pg initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >/dev/null
  rm -f "$pwfile"
  printf "host all all all %s\n" "${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
  # A socket-only server for the set-up, as the official image does; its log goes to stdout.
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start 2>&1
  if [ "$db" != postgres ]; then
    as_pg psql -v ON_ERROR_STOP=1 -q -U "$user" -d postgres \
      -c "CREATE DATABASE \"$db\"" 2>&1
  fi
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop 2>&1
  echo "postgres stand-in: initialised $PGDATA (user $user, database $db)"
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*' "$@"
