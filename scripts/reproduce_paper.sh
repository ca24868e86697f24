#!/usr/bin/env bash
# The paper's cross-dataset protocol on one GPU: train DAPO prompts on MVTec AD and evaluate
# zero-shot on VisA (and MPDD, BTAD when present), then train on VisA and evaluate on MVTec AD.
# Needs the datasets and OpenAI ViT-L-14-336 weights on disk (docs/datasets.md); nothing is downloaded.
#
#   DATA=/data WEIGHTS=/weights/vit-l-14-336-openai scripts/reproduce_paper.sh [OUT_DIR]
#
# DATA holds mvtec_ad/, visa/ and optionally mpdd/, btad/. Results: OUT_DIR/*.json and *.md, and
# OUT_DIR/gpu.txt with the time per epoch and the peak GPU memory of each training.
set -euo pipefail

: "${DATA:?set DATA to the folder holding mvtec_ad/ and visa/}"
: "${WEIGHTS:?set WEIGHTS to the ViT-L-14-336 OpenAI weights file or its copied cache folder}"
OUT=${1:-out/paper}
QC=${QC:-qc-stream}
mkdir -p "$OUT"

export QC_BACKBONE=${QC_BACKBONE:-ViT-L-14-336-quickgelu}
export QC_PRETRAINED=$WEIGHTS
export QC_IMAGE_SIZE=${QC_IMAGE_SIZE:-518}
export QC_DEVICE=${QC_DEVICE:-cuda}
export QC_DATABASE_URL=${QC_DATABASE_URL:-sqlite:///$OUT/qc.db}
export QC_MODELS_DIR=${QC_MODELS_DIR:-$OUT/models}
$QC db upgrade >/dev/null

train() {  # train <dataset dir> <version>: time per epoch and peak memory from the summary
    $QC train --dataset "$1" --version "$2" --json "$OUT/$2.train.json"
    python3 - "$OUT/$2.train.json" <<'PY' | tee -a "$OUT/gpu.txt"
import json, sys
s = json.load(open(sys.argv[1]))
per = sum(s["epoch_seconds"]) / max(len(s["epoch_seconds"]), 1)
mem = s["peak_gpu_memory_mib"]
print(f"{s['version']}: {per:.0f} s per epoch, peak GPU memory "
      + (f"{mem / 1024:.1f} GiB" if mem is not None else "n/a (not on a GPU)"))
PY
}

evaluate() {  # evaluate <dataset dir> <version> <name>
    [ -d "$1" ] || { echo "skip $3: $1 not found"; return; }
    $QC eval --dataset "$1" --prompt-version "$2" --methods dapo,handcrafted \
        --json "$OUT/$3.json" --markdown "$OUT/$3.md"
}

train "$DATA/mvtec_ad" paper-mvtec
evaluate "$DATA/visa" paper-mvtec mvtec-to-visa
evaluate "$DATA/mpdd" paper-mvtec mvtec-to-mpdd
evaluate "$DATA/btad" paper-mvtec mvtec-to-btad

train "$DATA/visa" paper-visa
evaluate "$DATA/mvtec_ad" paper-visa visa-to-mvtec

echo "results in $OUT"
