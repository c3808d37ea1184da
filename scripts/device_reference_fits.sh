#!/usr/bin/env bash
# For a session that is lent a GPU (the `device` tool): one prepared script that
#   1. measures it/s of each editor's presets on the GPU (benchmark/bench_train.py), and
#   2. trains the reference fits of the default grid (plus L2M-GAN's) on the GPU,
# leaving everything under $OUT so it comes back. Then, on the development machine:
#   python -m methods.reference export <files_at>/runs/<run> --cache <files_at>/cache
# Usage (device tool):  bash scripts/device_reference_fits.sh            (OUT is set by the tool)
set -euo pipefail
OUT="${OUT:?set OUT to a folder that comes back}"
export FACEEDIT_CACHE="$OUT/cache" FACEEDIT_PROGRESS_INTERVAL=30
PY="${PY:-python}"
ATTRS="${ATTRS:-[Smiling,Eyeglasses,Bangs,Male,Young]}"
METHODS="${METHODS:-[sagan,interfacegan,l2mgan]}"
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" || true
"$PY" -m benchmark.bench_train --device cuda --presets paper,reference --steps "${BENCH_STEPS:-40}" \
    > "$OUT/bench_train.jsonl" 2> "$OUT/bench_train.log" || true
"$PY" run_benchmark.py --config configs/default.yaml --fit-only --retrain device=cuda \
    "methods=$METHODS" "attributes=$ATTRS" method_options.l2mgan.preset=reference \
    --out "$OUT/runs" 2>&1 | tee "$OUT/fits.log"
