#!/bin/sh
# Redis stand-in entrypoint: like the official image, no protected mode (the container's network
# is the boundary), runs as the redis user in /data (where SIGTERM's save lands), and arguments
# starting with '-' go to redis-server.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
if [ "$1" != redis-server ]; then exec "$@"; fi
shift

chown redis:redis /data
exec setpriv --reuid=redis --regid=redis --init-groups \
  redis-server --protected-mode no --bind '* -::*' --dir /data "$@"
