#!/usr/bin/env bash
# For a session that is lent a GPU (the `device` tool): ONE prepared command that
#   1. measures it/s of each editor's `paper` and `reference` presets on the GPU (benchmark/bench_train.py);
#   2. trains the reference fits of the default grid and L2M-GAN's: every (method, attribute) fit at
#      once on the one GPU, a process each (shared stages, InterFaceGAN's GAN, train once under the
#      cache's lock while the others wait), each with a wall-time slice (`budget.minutes`) so that the
#      command ends inside the tool's 10-minute limit; a fit cut by its slice checkpoints (it is not
#      exported: the next GPU session trains it again);
#   3. exports the finished fits into this copy's methods/*/reference_fits/ and packs them into ONE
#      archive, because the tool brings back at most 8 files of 16 MiB, 2 folders deep.
#
# Before the call, here (once; the image lacks these two pure-Python packages, the rest is there):
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: -d .whl clean-fid==0.1.35 lpips==0.1.4
# The call:  run(command="bash scripts/device_reference_fits.sh", carry=[".whl"], timeout_s=600)
# After it, here:  .venv/bin/python -m methods.reference unpack <files_at>/reference_fits.tar.gz [--replace]
#   (path-checked, every entry verified; --replace swaps a shipped CPU fit of the same key for the GPU one)
# and report bench_train.jsonl's it/s and fits.log's wall times with the device named.
set -uo pipefail
OUT="${OUT:?set OUT to a folder that comes back}"
export FACEEDIT_CACHE="${FACEEDIT_CACHE:-/tmp/faceedit-cache}" FACEEDIT_PROGRESS_INTERVAL=30 FACEEDIT_OFFLINE=1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PY:-python3}"
MINUTES="${MINUTES:-6}"          # wall-time slice of each fit
BENCH_SECONDS="${BENCH_SECONDS:-100}"
ATTRS="${ATTRS:-Smiling Eyeglasses Bangs Male Young}"
METHODS="${METHODS:-sagan interfacegan l2mgan}"
DEVICE="${DEVICE:-cuda}"; PRESET="${PRESET:-reference}"   # DEVICE=cpu PRESET=test: a dry run anywhere
LOGS="$OUT/logs"; RUNS=/tmp/faceedit-runs
mkdir -p "$LOGS" "$RUNS"
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PY" -c \
  "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"; } > "$LOGS/gpu.txt" 2>&1

# 1. speed (JSON lines: method, preset, it/s)
timeout "$BENCH_SECONDS" "$PY" -m benchmark.bench_train --device "$DEVICE" --presets paper,reference \
  --steps "${BENCH_STEPS:-40}" > "$LOGS/bench_train.jsonl" 2> "$LOGS/bench_train.log"
echo "bench_train: exit $?" >> "$LOGS/gpu.txt"

# 2. the fits, all at once
start=$(date +%s)
for m in $METHODS; do
  for a in $ATTRS; do
    "$PY" run_benchmark.py --config configs/default.yaml --fit-only --retrain "device=$DEVICE" "methods=[$m]" \
      "attributes=[$a]" "method_options.$m.preset=$PRESET" "budget.minutes=$MINUTES" \
      --out "$RUNS/$m-$a" > "$LOGS/fit-$m-$a.log" 2>&1 &
  done
done
wait
echo "fits: $(( $(date +%s) - start )) s wall for all" >> "$LOGS/gpu.txt"

# 3. export what finished, pack it with the logs
runs=$(ls -d "$RUNS"/*/*/ 2>/dev/null | while read -r d; do [ -s "$d/fits.jsonl" ] && echo "$d"; done)
if [ -n "$runs" ]; then
  # shellcheck disable=SC2086
  "$PY" -m methods.reference export $runs --pack "$OUT/reference_fits.tar.gz" > "$LOGS/export.log" 2>&1
  echo "export: exit $?" >> "$LOGS/gpu.txt"
fi
cat "$RUNS"/*/*/fits.jsonl > "$LOGS/fits.jsonl" 2>/dev/null
tar czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$LOGS"
ls -la "$OUT"
