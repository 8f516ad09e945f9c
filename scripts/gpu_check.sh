#!/usr/bin/env bash
# The prepared GPU check (README "Speed"): the `gpu` tests, a throughput table, Shakespeare for
# 3 minutes and the names recipe, about 7.5 minutes on one H100/H200; --dry-run: tiny, on the CPU.
#
#   scripts/gpu_bundle.sh          # once, where there is network: wheels and data in gpu_bundle/
#   scripts/gpu_check.sh           # on the GPU machine; results in $OUT or outputs/gpu_check/
#
# Where Hydra, OmegaConf or Optuna are missing (a machine with torch and Lightning only), they are
# installed from gpu_bundle/wheels with no index into a folder of their own ($RNNLAB_GPU_SITE,
# default /tmp/rnnlab-site) put on PYTHONPATH: the machine's torch and packages stay as they are.
# rnnlab itself runs from src/ (no install). RNNLAB_GPU_INSTALL=1 installs from the bundle even
# where the packages are present (to rehearse that path).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
bundle=${RNNLAB_GPU_BUNDLE:-$PWD/gpu_bundle}
missing="import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ('hydra', 'omegaconf', 'optuna')))"
if [ -n "${RNNLAB_GPU_INSTALL:-}" ] || ! "$py" -c "$missing"; then
  if ! ls "$bundle"/wheels/*.whl >/dev/null 2>&1; then
    echo "Hydra, OmegaConf or Optuna is missing and $bundle/wheels holds no wheels:" \
      "run scripts/gpu_bundle.sh where there is network, and bring gpu_bundle/ along" >&2
    exit 2
  fi
  site=${RNNLAB_GPU_SITE:-/tmp/rnnlab-site}
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$bundle"/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export RNNLAB_GPU_BUNDLE="$bundle"
exec "$py" scripts/gpu_check.py "$@"
