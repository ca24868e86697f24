#!/usr/bin/env bash
# The one prepared device check (run THERE, on a lent GPU machine, from the repo root, with `.whl`
# carried; see scripts/device/README.md). `qc-stream bench` with the production architecture
# (ViT-L-14-336-quickgelu at 518 px, random weights: speed does not depend on them) reports the
# image encoder alone, the bare DAPO model and the whole pipeline in one run. Results go to $OUT.
#
# Every BENCH_* variable has a GPU default and can be overridden, which is how the script is
# smoke-tested on the CPU:
#   OUT=/tmp/out PY=.venv/bin/python BENCH_WHEELS= BENCH_DEVICE=cpu BENCH_PRECISION=fp32 \
#     BENCH_BACKBONE=qc-test-tiny BENCH_IMAGE_SIZE= BENCH_FRAMES=48 BENCH_BATCH=8 bash scripts/device/gpu_check.sh
set -uo pipefail
OUT=${OUT:-$PWD/out/device}
mkdir -p "$OUT"
wheels=${BENCH_WHEELS-.whl}  # empty: use the packages PY already has
if [ -n "$wheels" ]; then
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "no wheels in $wheels: run scripts/device/fetch_wheels.sh here and carry .whl" >&2; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available())'
} | tee "$OUT/card.txt"

export QC_BACKBONE=${BENCH_BACKBONE-ViT-L-14-336-quickgelu}
export QC_PRETRAINED=${BENCH_PRETRAINED-none}
export QC_DEVICE=${BENCH_DEVICE-cuda}
export QC_PRECISION=${BENCH_PRECISION-fp16}
size=${BENCH_IMAGE_SIZE-518}
if [ -n "$size" ]; then export QC_IMAGE_SIZE=$size; else unset QC_IMAGE_SIZE; fi

"$PY" -m qc_stream bench --frames "${BENCH_FRAMES-512}" --batch-size "${BENCH_BATCH-32}" --json "$OUT/bench.json" 2>&1 \
  | tee "$OUT/bench.log"
rc=${PIPESTATUS[0]}
echo "bench exit status $rc" | tee -a "$OUT/card.txt"
exit "$rc"
