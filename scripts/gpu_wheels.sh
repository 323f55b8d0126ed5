#!/usr/bin/env bash
# The wheels a training run needs on the GPU machine, which has jax, flax, optax, orbax, chex, absl-py,
# scipy, scikit-image and pyarrow but not tensorflow-datasets (the tfds cache every run reads),
# ml_collections (configs) or dp-accounting (launch's privacy accounting). Nothing can be fetched there,
# so they travel as wheels for its Python (3.12, x86-64) in .whl/ (ignored by git, ~10 MB):
#
#   bash scripts/gpu_wheels.sh                    # here, once: fills .whl/
#   # then every device call: carry [".whl"] and start the command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit
#
# The list is tensorflow-datasets' and ml_collections' requirements minus what the GPU image already holds
# (its package list: /work/.library/device/KINDS.md). `promise` has no wheel on PyPI: it is built here from
# its source (pure Python).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.whl
PY=${GPU_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" \
  tensorflow-datasets==4.9.10 array_record==0.8.6 ml_collections==1.1.0 dp-accounting==0.6.0 \
  dm-tree immutabledict simple_parsing docstring-parser tensorflow-metadata googleapis-common-protos \
  termcolor toml
python3 -m pip wheel -q --no-deps -w "$DEST" promise==2.3
ls "$DEST"
du -sh "$DEST"
