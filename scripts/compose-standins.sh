#!/usr/bin/env bash
# Local stand-ins for the registry images of the compose stack, made from Debian packages only
# (debootstrap + deb.debian.org or your Debian mirror): for machines that cannot pull from Docker Hub.
#
#   scripts/compose-standins.sh            builds the images below (kept if they already exist)
#   scripts/compose-standins.sh --force    rebuilds them
#
# Then (scripts/compose-smoke.sh prints the same line):
#   BASE_IMAGE=local/python:3.11-slim-bookworm REDIS_IMAGE=local/redis:7-bookworm \
#   PROMETHEUS_IMAGE=local/prometheus:bookworm scripts/compose-smoke.sh
#
# | image                          | stands in for             | from Debian bookworm            |
# | local/debian:bookworm          | debian:bookworm-slim      | debootstrap --variant=minbase   |
# | local/python:3.11-slim-bookworm| python:3.11-slim-bookworm | python3.11 in a venv on PATH    |
# | local/redis:7-bookworm         | redis:7.4-alpine          | redis-server 7.0 (+ redis-cli)  |
# | local/prometheus:bookworm      | prom/prometheus           | prometheus 2.42 (+ wget)        |
# Grafana has no Debian package: the smoke test runs without it when no Grafana image is there.
#
# Needs root (debootstrap), debootstrap and a running Docker engine. Settings (environment):
#   DEBIAN_MIRROR  (http://deb.debian.org/debian)   the mirror for debootstrap and apt in the images
#   DOCKER         (docker)                         the Docker CLI
set -euo pipefail

DOCKER=${DOCKER:-docker}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

have_image() { [[ $FORCE == 0 ]] && "$DOCKER" image inspect "$1" >/dev/null 2>&1; }
say() { echo "compose-standins: $*" >&2; }

# Build image $1 from the Dockerfile on stdin (no build context: everything comes from apt).
build() {
  local tag=$1
  if have_image "$tag"; then say "$tag exists"; return; fi
  say "building $tag"
  "$DOCKER" build --pull=false -t "$tag" - >&2
}

if have_image local/debian:$SUITE; then
  say "local/debian:$SUITE exists"
else
  command -v debootstrap >/dev/null || { say "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
  rootfs=$(mktemp -d /tmp/insid3-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap $SUITE into $rootfs (a few minutes)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | "$DOCKER" import --change 'CMD ["bash"]' - local/debian:$SUITE >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

# Debian's python3.11 in a venv first on PATH: `python` and `pip` as in the python:3.11-slim image.
build local/python:3.11-slim-$SUITE <<EOF
FROM local/debian:$SUITE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && python3.11 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
CMD ["python"]
EOF

# redis-server and redis-cli on PATH, working directory /data (the compose volume), user redis.
build local/redis:7-$SUITE <<EOF
FROM local/debian:$SUITE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends redis-server redis-tools \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data /usr/local/etc/redis && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]
EOF

# The prometheus binary as entrypoint (the compose command is its flags), wget for the health check.
build local/prometheus:$SUITE <<EOF
FROM local/debian:$SUITE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends prometheus wget ca-certificates \\
 && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /prometheus /etc/prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
EOF

say "done:"
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^local/' | sed 's/^/  /' >&2
