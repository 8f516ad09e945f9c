#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on a GPU machine without network, in gpu_bundle/ (ignored):
# wheels of rnnlab's pure-Python dependencies that such a machine lacks (Hydra, OmegaConf, Optuna
# and theirs; PyTorch, Lightning and the rest are expected there) and the two data sets it reads.
#
#   scripts/gpu_bundle.sh                      # wheels for Python 3.12 (the GPU machine's)
#   PYTHON_VERSION=3.11 scripts/gpu_bundle.sh /tmp/bundle-311   # another Python, another folder
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_bundle}
version=${PYTHON_VERSION:-3.12}
py=${PYTHON:-python}
# the versions rnnlab is tested with (SQLAlchemy 2.1 needs no greenlet); the platform flags
# matter only where a package ships compiled wheels
wheels=(hydra-core==1.3.8 omegaconf==2.3.1 optuna==5.0.0 alembic==1.20.1 Mako==1.4.3
        SQLAlchemy==2.1.9 colorlog==6.12.0)
mkdir -p "$out/wheels" "$out/data"
# antlr4-python3-runtime 4.9.3 (pinned by hydra-core 1.3) is published as an sdist only
"$py" -m pip wheel -q --no-deps -w "$out/wheels" antlr4-python3-runtime==4.9.3
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$out/wheels" "${wheels[@]}"
shared=${RNNLAB_SHARED:-../shared}
cp -r "$shared/data/names" "$out/data/"
mkdir -p "$out/data/tinyshakespeare"
cp "$shared/data/tinyshakespeare/input.txt" "$out/data/tinyshakespeare/"
du -sh "$out"
