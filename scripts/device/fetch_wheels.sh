#!/usr/bin/env bash
# Run HERE (the dev VM, which reaches PyPI), from the repo root, before a device check: downloads the
# Python 3.12 x86-64 wheels of every runtime dependency that the lent GPU machine's image lacks
# (scripts/device/wheels.txt) into .whl/, which git ignores and the device tool carries.
# The GPU image already has torch, torchvision, numpy, scipy, scikit-learn, Pillow, OpenCV,
# safetensors, timm, huggingface-hub, prometheus-client, ...; wheels.txt was computed from pip's
# resolution of pyproject.toml's dependencies for Python 3.12 minus that image's package list.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
PY=${PY:-.venv/bin/python}
platforms=()
for p in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl -r scripts/device/wheels.txt
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/ (the tree that travels must stay under 64 MiB)"
