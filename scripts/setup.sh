#!/usr/bin/env bash
# Set up everything on a fresh Debian machine: system packages, .venv, the project.
#   scripts/setup.sh          what the service needs (redis-server for --redis-url)
#   scripts/setup.sh --dev    plus what the test suite needs (chromium, prometheus, dev extras)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=false
[[ "${1:-}" == "--dev" ]] && dev=true

packages=(redis-server)
$dev && packages+=(chromium chromium-driver prometheus docker-compose)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/pip install -q --upgrade pip
# The service needs no extra; the tests also cover CRF refinement (crf compiles pydensecrf2).
extras=()
$dev && extras=(crf dev)
if command -v nvidia-smi >/dev/null 2>&1 || [[ "${INSID3_CUDA:-}" == 1 ]]; then
  target="."
  $dev && target=".[crf,dev]"
  .venv/bin/pip install -q -e "$target"
else
  # No NVIDIA GPU: torch without triton and cuda-bindings, which it never loads on the CPU (~1 GB;
  # INSID3_CUDA=1 installs them anyway). See scripts/cpu_requirements.py.
  mapfile -t stack < <(.venv/bin/python scripts/cpu_requirements.py stack)
  .venv/bin/pip install -q --no-deps "${stack[@]}"
  mapfile -t rest < <(.venv/bin/python scripts/cpu_requirements.py rest "${extras[@]}")
  # pip's closing check would list the two left out as "not installed": expected, so not shown
  .venv/bin/pip install -q "${rest[@]}" 2> >(grep -Ev "^(ERROR: pip's dependency resolver|torch .* requires)" >&2)
  .venv/bin/pip install -q --no-deps -e . 2> >(grep -Ev "^(ERROR: pip's dependency resolver|torch .* requires)" >&2)
fi
