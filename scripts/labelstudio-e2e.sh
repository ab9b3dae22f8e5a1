#!/usr/bin/env bash
# End to end with a real Label Studio: the ML backend under /labelstudio (docs/labelstudio.md).
#
#   scripts/labelstudio-e2e.sh [--screenshot docs/labelstudio.png]
#
# Makes, once, a Label Studio virtual environment outside the clone (LABEL_STUDIO_VENV, default
# ~/.cache/insid3/labelstudio-venv: label-studio 1.23.x and label-studio-sdk 2.x from PyPI), then runs
# scripts/labelstudio_e2e.py with the project's Python (INSID3_PYTHON, default .venv/bin/python):
# Label Studio offline on loopback and `insid3 serve` with a random ViT-S, the scenario, one line per
# check. The last line is `labelstudio-e2e: N checks passed`; exit 0 only when every check held.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
python=${INSID3_PYTHON:-$root/.venv/bin/python}
venv=${LABEL_STUDIO_VENV:-$HOME/.cache/insid3/labelstudio-venv}
base_python=${LABEL_STUDIO_PYTHON:-python3.11}

if [[ ! -f $venv/.insid3-complete ]]; then
  echo "labelstudio-e2e: installing Label Studio into $venv (once, ~1 GB)"
  rm -rf "$venv"
  "$base_python" -m venv "$venv"
  if ! "$venv/bin/pip" install --disable-pip-version-check 'label-studio>=1.23,<1.24' 'label-studio-sdk>=2,<3' \
      >"$venv/install.log" 2>&1; then
    tail -n 30 "$venv/install.log"
    echo "labelstudio-e2e: installing Label Studio failed (log: $venv/install.log)"
    exit 1
  fi
  touch "$venv/.insid3-complete"
fi

PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH} exec "$python" "$root/scripts/labelstudio_e2e.py" \
  --label-studio "$venv/bin/label-studio" "$@"
