#!/bin/bash
# The official redis image's entrypoint, cut short: run redis-server as the redis user, and
# without a config file turn protected mode off (other containers must reach it).
set -euo pipefail

if [ "${1:0:1}" = "-" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

config=${2:-}
if [ "$1" = redis-server ] && [ "${config%.conf}" = "$config" ]; then
  set -- "$@" --protected-mode no
fi

exec "$@"
