#!/usr/bin/env bash
# How the sampling modes compare with per-frame MC at T=40 (issue 9), on the CPU, with the
# shipped model:
#
#   tools/bench_video.sh [OUT]        (default OUT: bench-video)
#
# 1. segnet-video on the dashcam video ../shared/data/video/solidWhiteRight.mp4 (221 frames,
#    960x540), seed 1, once per mode: T=40 per frame (the reference), T=8 per frame, adaptive T
#    per frame, temporal aggregation with k=1 and k=2, and T=40 with another seed (how far two
#    references differ by chance). tools/bench/video_compare.py compares each with the
#    reference from the runs' --maps: frames/s (decode, render, encode included), class
#    agreement (mIoU of one argmax against the other), per-frame Pearson correlation of the
#    variance maps, and the AUROC of each uncertainty map for the pixels whose class differs
#    from the reference's. Table in OUT/table.md.
# 2. eval on CamVid val: adaptive T against fixed T=40 (mIoU, ECE, samples used), seed 1.
#
# Runs that finished are kept and not redone (delete a run's folder to redo it). The reference
# takes about 12 minutes on an idle 2-core CPU and much longer on a busy one: the load average
# is recorded beside the table, since the frames/s depend on it.
# Knobs: VIDEO (another video), FRAMES (first N frames only), SKIP_VAL=1, SKIP_SEED2=1, CURVE=1
# (also temporal aggregation with 4, 8 and 40 passes a frame: how close to the reference the
# blend can get with more samples; the 40-pass run costs as much as the reference).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${1:-bench-video}
video=${VIDEO:-../shared/data/video/solidWhiteRight.mp4}
frames=${FRAMES:-0}
camvid=../shared/data/camvid
py=${SEGNET_PYTHON:-$HOME/.cache/segnet-bayes/venv/bin/python}
cargo build --release --workspace --quiet
bin=target/release
mkdir -p "$out"

# name, then segnet-video flags
run() {
  local name=$1
  shift
  if [[ -f $out/$name/summary.json ]]; then
    return
  fi
  echo "== $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin/segnet-video" "$video" -o "$out/$name" --maps --device cpu --max-frames "$frames" \
    --restart "$@" | tail -1
}

run t40 --no-temporal --no-adaptive --samples 40 --seed 1
run t8 --no-temporal --no-adaptive --samples 8 --seed 1
run adaptive --no-temporal --seed 1
run temporal-k1 --passes 1 --seed 1
run temporal-k2 --passes 2 --seed 1
modes=(t8 adaptive temporal-k1 temporal-k2)
if [[ ${CURVE:-0} == 1 ]]; then
  for k in 4 8 40; do
    run temporal-k$k --passes $k --seed 1
    modes+=(temporal-k$k)
  done
fi
if [[ ${SKIP_SEED2:-0} != 1 ]]; then
  run t40-seed2 --no-temporal --no-adaptive --samples 40 --seed 2
  modes+=(t40-seed2)
fi
{
  echo "Reference: t40 (per-frame MC, T=40, seed 1). Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  "$py" tools/bench/video_compare.py "$out" t40 "${modes[@]}"
} | tee "$out/table.md"

if [[ -d $camvid && ${SKIP_VAL:-0} != 1 ]]; then
  for mode in fixed adaptive; do
    flags=(--samples 40 --seed 1 --device cpu)
    if [[ $mode == fixed ]]; then flags+=(--no-adaptive); fi
    if [[ ! -f $out/val-$mode/report.json ]]; then
      "$bin/segnet-bayes" eval --data "$camvid" --split val "${flags[@]}" --out "$out/val-$mode" \
        >"$out/val-$mode.log"
    fi
  done
  "$py" - "$out" <<'PY' | tee -a "$out/table.md"
import json, sys
out = sys.argv[1]
print("\n| CamVid val, MC dropout | samples per image (mean, min-max) | mIoU | ECE | seconds |")
print("|---|---|---|---|---|")
for mode in ["fixed", "adaptive"]:
    r = json.load(open(f"{out}/val-{mode}/report.json"))
    u, mc = r["samples_used"], r["mc_dropout"]
    print(f"| {mode} (up to {r['samples']}) | {u['mean']:.1f} ({u['min']}-{u['max']}) "
          f"| {100 * mc['mean_iou']:.2f} | {100 * mc['ece']:.2f} | {r['seconds']:.0f} |")
PY
fi
