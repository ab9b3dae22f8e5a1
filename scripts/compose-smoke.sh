#!/usr/bin/env bash
# The compose stack for real: build the image, bring the stack up (CPU variant, no GPU needed), run
# the end-to-end scenario, print a summary, tear everything down. Minutes (the image build).
#
#   scripts/compose-smoke.sh
#   # where registries are unreachable: local stand-ins from Debian packages (scripts/compose-standins.sh)
#   BASE_IMAGE=local/python:3.11-slim-bookworm REDIS_IMAGE=local/redis:7-bookworm \
#     PROMETHEUS_IMAGE=local/prometheus:bookworm TORCH_INDEX_URL=https://pypi.org/simple \
#     BUILD_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt scripts/compose-smoke.sh
#
# The scenario (scripts/compose_smoke.py, in a container on the stack's network):
#   every service healthy; a random tiny checkpoint (insid3 make-checkpoint) mounted into the workers;
#   /readyz; reference, segment, match answer 200 (and a 404, a 504); Prometheus has the API and every
#   worker as `up` targets; every dashboard query returns data; Grafana (when its image is there)
#   provisions the dashboards; a burst of requests during which one worker container is
#   `docker kill`ed; every answer counted by status. Exit 0 only if every check passed and every
#   burst request got a 200.
#
# Settings (environment):
#   BASE_IMAGE        python:3.11-slim-bookworm   base of the INSID3 image (build arg)
#   TORCH_INDEX_URL   (PyTorch's CPU index)       where the build gets torch (build arg)
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_TRUSTED_HOST   passed to the build when set
#   BUILD_CA_BUNDLE   (none)     a CA bundle for pip in the build (BuildKit secret ca.crt)
#   BUILD_PIP_CONF    (none)     a pip.conf for the build (BuildKit secret pip.conf)
#   SKIP_BUILD=1      use the existing ${INSID3_IMAGE:-insid3-serve}:cpu
#   REDIS_IMAGE, PROMETHEUS_IMAGE, GRAFANA_IMAGE   service images (docker-compose.yml defaults);
#                     Grafana is skipped, with a note, when its image is neither local nor pullable
#   SMOKE_WORKERS (2), SMOKE_BURST (100 requests after the kill), SMOKE_CONCURRENCY (8),
#   SMOKE_KILL_AFTER (20 answers into the burst), SMOKE_IMAGE_SIZE (128)
#   SMOKE_API_PORT (18000), SMOKE_PROMETHEUS_PORT (19090), SMOKE_GRAFANA_PORT (13000)
#   SMOKE_PROJECT (insid3smoke)   the compose project; KEEP=1 leaves the stack up
#   DOCKER (docker), COMPOSE (`docker compose` if present, else docker-compose)
set -euo pipefail

cd "$(dirname "$0")/.."
DOCKER=${DOCKER:-docker}
if [[ -z ${COMPOSE:-} ]]; then
  if "$DOCKER" compose version >/dev/null 2>&1; then COMPOSE="$DOCKER compose"; else COMPOSE=docker-compose; fi
fi
read -r -a compose_cmd <<<"$COMPOSE"
PROJECT=${SMOKE_PROJECT:-insid3smoke}
WORKERS=${SMOKE_WORKERS:-2}
IMAGE=${INSID3_IMAGE:-insid3-serve}:cpu
STARTED=$(date +%s)

export API_PORT=${SMOKE_API_PORT:-18000} PROMETHEUS_PORT=${SMOKE_PROMETHEUS_PORT:-19090}
export GRAFANA_PORT=${SMOKE_GRAFANA_PORT:-13000}
export REDIS_IMAGE=${REDIS_IMAGE:-redis:7.4-alpine} PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v2.55.1}
export GRAFANA_IMAGE=${GRAFANA_IMAGE:-grafana/grafana:11.3.1}
export WORKER_CPUS=${WORKER_CPUS:-1} WORKER_MEMORY=${WORKER_MEMORY:-3g}

log() { echo "[compose-smoke $(date -u +%H:%M:%S)] $*" >&2; }
state=$(mktemp -d /tmp/insid3-smoke.XXXXXX)
chmod 0777 "$state"  # the containers run as uid 10001
files=(-f docker-compose.yml -f docker-compose.cpu.yml -f "$state/smoke.yml")
compose() { "${compose_cmd[@]}" -p "$PROJECT" --project-directory . "${files[@]}" "$@"; }

# shellcheck disable=SC2329  # invoked by the EXIT trap
teardown() {
  local status=$?
  if [[ ${KEEP:-0} == 1 ]]; then
    log "KEEP=1: the stack is still up (${COMPOSE} -p $PROJECT ... down -v to remove it); state in $state"
    exit "$status"
  fi
  log "tearing down"
  compose logs --no-color >"$state/compose.log" 2>&1 || true
  if [[ $status != 0 ]]; then
    log "last lines of the services' logs:"
    tail -n 60 "$state/compose.log" >&2 || true
  fi
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  "$DOCKER" run --rm -v "$state:/smoke" --entrypoint sh "$IMAGE" -c 'rm -rf /smoke/*' >/dev/null 2>&1 || true
  rm -rf "$state"
  exit "$status"
}
trap teardown EXIT

# ---- 1. the image
if [[ ${SKIP_BUILD:-0} == 1 ]]; then
  log "SKIP_BUILD=1: using $IMAGE"
else
  build=(--build-arg VARIANT=cpu --build-arg "BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}")
  for arg in TORCH_INDEX_URL PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    if [[ -n ${!arg:-} ]]; then build+=(--build-arg "$arg=${!arg}"); fi
  done
  if [[ -n ${BUILD_CA_BUNDLE:-} ]]; then build+=(--secret "id=ca.crt,src=$BUILD_CA_BUNDLE"); fi
  if [[ -n ${BUILD_PIP_CONF:-} ]]; then build+=(--secret "id=pip.conf,src=$BUILD_PIP_CONF"); fi
  log "building $IMAGE (${build[*]})"
  DOCKER_BUILDKIT=1 "$DOCKER" build "${build[@]}" -t "$IMAGE" . >"$state/build.log" 2>&1 \
    || { tail -n 40 "$state/build.log" >&2; log "image build failed"; exit 1; }
fi

# ---- 2. the service images, Grafana optional
services=(redis api worker prometheus grafana)
grafana_note="checked"
available() { "$DOCKER" image inspect "$1" >/dev/null 2>&1 || "$DOCKER" pull "$1" >/dev/null 2>&1; }
for image in "$REDIS_IMAGE" "$PROMETHEUS_IMAGE"; do
  available "$image" || { log "$image: not local and cannot be pulled (scripts/compose-standins.sh makes stand-ins)"; exit 1; }
done
if ! available "$GRAFANA_IMAGE"; then
  services=(redis api worker prometheus)
  grafana_note="SKIPPED: $GRAFANA_IMAGE is not local and cannot be pulled (set GRAFANA_IMAGE to check it)"
  log "Grafana $grafana_note"
fi

# ---- 3. a random tiny checkpoint in the official layout, mounted read-only into the workers
mkdir -m 0777 "$state/pretrain"
"$DOCKER" run --rm -v "$state:/smoke" "$IMAGE" make-checkpoint --model-size tiny \
  --out /smoke/pretrain/insid3-smoke-tiny.pth >&2
cat >"$state/smoke.yml" <<EOF
# Written by scripts/compose-smoke.sh: the workers serve a random tiny checkpoint, small images.
services:
  worker:
    environment:
      INSID3_MODEL_SIZE: tiny
      INSID3_WEIGHTS: /app/pretrain/insid3-smoke-tiny.pth
      INSID3_IMAGE_SIZE: "${SMOKE_IMAGE_SIZE:-128}"
    volumes:
      - $state/pretrain:/app/pretrain:ro
EOF

# ---- 4. up, and every container healthy
log "starting ${services[*]} (project $PROJECT, $WORKERS workers, $COMPOSE)"
compose up -d --no-build --scale "worker=$WORKERS" "${services[@]}" >&2
containers() { "$DOCKER" ps -a -q --filter "label=com.docker.compose.project=$PROJECT" "$@"; }
health() {
  local ids
  mapfile -t ids < <(containers)
  "$DOCKER" inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    "${ids[@]}" | sed 's,^/,,' | sort
}
deadline=$((SECONDS + 420))
until ! health | grep -qv ' running healthy$'; do
  if ((SECONDS > deadline)) || health | grep -q ' exited\| unhealthy'; then
    health >&2; log "not every container became healthy"; exit 1
  fi
  sleep 5
done
log "every container healthy after $(($(date +%s) - STARTED)) s since the start:"
health | sed 's/^/  /' >&2

# ---- 5. the scenario, with a worker killed mid-burst
network="${PROJECT}_default"
client=(--api http://api:8000 --prometheus http://prometheus:9090 --dashboards /smoke-deploy/dashboards
        --state /smoke --workers "$WORKERS" --burst "${SMOKE_BURST:-100}"
        --concurrency "${SMOKE_CONCURRENCY:-8}")
if [[ ${#services[@]} == 5 ]]; then
  client+=(--grafana http://grafana:3000 --grafana-password "${GRAFANA_ADMIN_PASSWORD:-admin}")
fi
"$DOCKER" run --rm --network "$network" -v "$state:/smoke" \
  -v "$PWD/scripts/compose_smoke.py:/smoke-deploy/compose_smoke.py:ro" \
  -v "$PWD/deploy/grafana/dashboards:/smoke-deploy/dashboards:ro" \
  --entrypoint python "$IMAGE" /smoke-deploy/compose_smoke.py "${client[@]}" &
client_pid=$!
victim=""
while kill -0 "$client_pid" 2>/dev/null; do
  if [[ -z $victim && -f $state/progress && $(cat "$state/progress") -ge ${SMOKE_KILL_AFTER:-20} ]]; then
    victim=$(containers --filter label=com.docker.compose.service=worker | head -n 1)
    name=$("$DOCKER" inspect -f '{{.Name}}' "$victim" | sed 's,^/,,')
    kill_note="docker kill $name after $(cat "$state/progress") answers"
    echo "$kill_note" >"$state/killed"  # from now on the client counts requests as sent after the kill
    log "$kill_note (mid-burst)"
    "$DOCKER" kill "$victim" >/dev/null
  fi
  sleep 0.2
done
client_status=0
wait "$client_pid" || client_status=$?

# ---- 6. summary
echo
echo "==== compose smoke summary ($(($(date +%s) - STARTED)) s) ===="
echo "compose:     $COMPOSE; files docker-compose.yml + docker-compose.cpu.yml (+ the smoke's checkpoint mount)"
size() { "$DOCKER" image inspect -f '{{.Size}}' "$1" 2>/dev/null | awk '{printf "%.2f GB", $1/1e9}'; }
echo "images:      $IMAGE $(size "$IMAGE"), $REDIS_IMAGE $(size "$REDIS_IMAGE"), $PROMETHEUS_IMAGE" \
  "$(size "$PROMETHEUS_IMAGE"); grafana: $grafana_note"
echo "containers:"
health | sed 's/^/  /'
if [[ -n $victim ]]; then
  echo "killed:      $(cat "$state/killed") -> $("$DOCKER" inspect -f '{{.State.Status}} (exit {{.State.ExitCode}}, restarts {{.RestartCount}})' "$victim")"
fi
echo "queue after the burst (insid3 queue stats):"
"$DOCKER" run --rm --network "$network" "$IMAGE" queue --redis-url redis://redis:6379/0 stats 2>&1 | sed 's/^/  /' || true
cat "$state/checks.txt" 2>/dev/null || echo "(no checks ran)"
if [[ -f $state/result.json ]]; then
  failed=$(grep -c '"ok": false' "$state/result.json" || true)
  echo "result:      $(grep -c '"ok": ' "$state/result.json") checks, $failed failed"
fi
if [[ $client_status == 0 ]]; then echo "SMOKE PASSED"; else echo "SMOKE FAILED (client exit $client_status)"; fi
exit "$client_status"
