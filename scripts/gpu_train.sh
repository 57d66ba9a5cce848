#!/usr/bin/env bash
# Train the shipped variants on a lent GPU (or any machine) from a training pack, inside a wall-clock budget.
#
#   scripts/gpu_train.sh PACK OUT [BUDGET] [mambaesr-train options...]
#
# PACK: a folder made by scripts/pack_training_data.py (its sha256 sums are verified before use). OUT: where the
# runs go (OUT/runs/<variant>_<stamp>/: checkpoints, metrics, curves and log, written as they go) and, at the end,
# one OUT/<variant>.tar.gz per run (a lent machine returns only a few files). BUDGET (default 9m) counts from this
# script's start, start-up included: each run's schedule is sized to the steps that fit (--steps 0) and the run
# stops by itself, validated and saved, before the budget ends.
# Installs nothing: it runs the checkout with the machine's python3 (PyTorch, NumPy, OpenCV, safetensors, PyYAML).
# VARIANTS (default "student fast") train side by side, one process each: a small model leaves the GPU mostly idle.
# Defaults: bf16 autocast on CUDA, batch 64 of 64x64 LR crops, lr 1e-3 after a 300-step warm-up (2e-3 made the
# line-layout student's loss spike at its peak on the CPU), validation on the pack's sets (Set5, Set14) every 500
# steps; later options override them (e.g. --batch 4 --patch 16 for a smoke test).
set -euo pipefail
start=$(date +%s)
usage="usage: scripts/gpu_train.sh PACK OUT [BUDGET] [mambaesr-train options...]"
pack=$(cd "${1:?$usage}" && pwd)
mkdir -p "${2:?$usage}"
out=$(cd "$2" && pwd)
budget=${3:-9m}
shift $(($# < 3 ? $# : 3))
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$out/inductor-cache}"
seconds=$(python3 -c 'import sys; from mambaesr_runtime.cli.train import parse_duration; print(int(parse_duration(sys.argv[1])))' "$budget")
python3 -c 'import sys; from mambaesr_runtime.training.pack import verify_pack; verify_pack(sys.argv[1])' "$pack"

val=()
for set in "$pack"/val/*/; do val+=(--val-dir "${set%/}" --guard-dir "${set%/}"); done
pids=()
for variant in ${VARIANTS:-student fast}; do
  left=$((seconds - ($(date +%s) - start) - 30))  # 30 s: interpreter and torch start-up, then the tarball
  if [ "$left" -lt 10 ]; then echo "budget $budget is too short to train" >&2; exit 2; fi
  python3 -m mambaesr_runtime.cli.train "$variant" \
    --train-dir "$pack/train" "${val[@]}" --cache-dir "$pack/lr_cache" --runs "$out/runs" \
    --steps 0 --time-budget "${left}s" --batch 64 --patch 64 --lr 1e-3 --warmup 300 --eval-every 500 --alpha 0 \
    "$@" > "$out/$variant.log" 2>&1 &
  pids+=("$!")
  sleep 2  # distinct run-folder time stamps
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done

for run in "$out"/runs/*_*/; do
  name=$(basename "$run")
  [ -f "$run/metrics.json" ] || continue
  tar -czf "$out/$name.tar.gz" -C "$out/runs" "$name"
  python3 - "$run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
m = json.loads((run / "metrics.json").read_text())
val = m["curves"]["val"][-1] if m["curves"]["val"] else {}
print(f"{run.name}: {m['steps']} steps, stopped: {m['stopped']}, best mean val PSNR {m['best_val_psnr']}, "
      f"last {({k: round(v['psnr'], 3) for k, v in val.items() if isinstance(v, dict)})}")
EOF
done
echo "done in $(($(date +%s) - start)) s (budget $seconds s)"
exit $rc
