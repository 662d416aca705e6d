#!/usr/bin/env bash
# Leave-one-sequence-out cross-validation: one training run per sequence, each validated on the
# sequence it holds out of the pooled train and val splits, then a table of each fold's best
# held-out mIoU (weight averaging) and their mean.
#
#   tools/folds.sh CONFIG OUT SEQ... [-- TRAIN_FLAGS...]
#   tools/folds.sh configs/camvid-lean.yaml runs/folds 0001TP 0006R0 0016E5 -- --max-minutes 30
#
# Fold SEQ trains into OUT/SEQ. A fold with a last checkpoint but no final model resumes; a
# fold with a final model is skipped, so the script can be run again after an interruption.
# BIN overrides the binary (default target/release/segnet-bayes).
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
config=$1 out=$2
shift 2
folds=()
while [[ $# -gt 0 && $1 != -- ]]; do
  folds+=("$1")
  shift
done
[[ ${1:-} == -- ]] && shift
bin=${BIN:-target/release/segnet-bayes}
mkdir -p "$out"
for seq in "${folds[@]}"; do
  run=$out/$seq
  if [[ -f $run/model.safetensors ]]; then
    echo "fold $seq: done before ($run/model.safetensors)"
    continue
  fi
  resume=()
  [[ -f $run/last.safetensors ]] && resume=(--resume)
  echo "fold $seq: training into $run"
  "$bin" train --config "$config" --out "$run" --hold-out "$seq" "${resume[@]}" "$@"
done
python3 - "$out" "${folds[@]}" <<'PY' | tee "$out/folds.md"
import json, sys
out, folds = sys.argv[1], sys.argv[2:]
print("| held-out sequence | best mIoU (WA) | at epoch | epochs run |\n|---|---|---|---|")
best_all = []
for seq in folds:
    lines = [json.loads(l) for l in open(f"{out}/{seq}/log.jsonl") if l.strip()]
    scored = [l for l in lines if l.get("val_miou") is not None]
    best = max(scored, key=lambda l: l["val_miou"])
    best_all.append(best["val_miou"])
    print(f"| {seq} | {100 * best['val_miou']:.1f} | {best['epoch']} | {lines[-1]['epoch']} |")
print(f"| mean of {len(folds)} folds | {100 * sum(best_all) / len(best_all):.1f} | | |")
PY
