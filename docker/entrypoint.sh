#!/bin/sh
# Entrypoint of the INSID3 image: `insid3 <sub-command> ...` (serve, worker, queue, eval, ...).
# Fails early, with the fix in the message, when the basis-cache volume is not writable.
set -eu

cache_dir="${INSID3_BASIS_CACHE_DIR:-/var/cache/insid3/basis}"
if ! mkdir -p "$cache_dir" 2>/dev/null || [ ! -w "$cache_dir" ]; then
  echo "insid3-entrypoint: $cache_dir is not writable by uid $(id -u):" \
       "mount a volume owned by that user (or a named volume) there" >&2
  exit 1
fi

exec insid3 "$@"
