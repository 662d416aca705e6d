#!/usr/bin/env bash
# GPU throughput and half-precision accuracy for issue 9. Run from the repository root on a
# machine with torch 2.11 (CUDA) in its python3 and a segnet-bayes binary built against the same
# libtorch (tools/gpu_session.sh runs it before the training ablation):
#
#   bash tools/gpu_bench.sh BIN DATA OUT
#
# BIN: the segnet-bayes binary; DATA: a CamVid folder with val/ and valannot/; OUT: results
# folder (bench.txt, eval-*/report.json, summary.txt). About 6 minutes on an H100.
#
# 1. Timing, full-width SegNet at 360x480, T=40 (the issue's goal: under 25 ms per image; 46 ms
#    measured in fp32 with one image at a time): the sampler in fp32, bf16 and fp16, one image
#    and 4 images per batch (--chunk counts (image, sample) rows per network call), and the
#    PyTorch peer in fp32 and with bf16 autocast and channels-last, in the same call.
# 2. Accuracy of half precision on CamVid val with the shipped model (fixed T=40, seed 1): mIoU
#    and ECE per precision, and on one frame how far the class shares move from fp32's. Half
#    precision becomes the GPU default only if this costs nothing measurable. Needs only
#    python3's standard library besides torch (for the peer).
# STEPS="timing accuracy" (the default) picks the steps; PEER is the peer script (default
# .dev/peer_segnet.py, the copy that travels to a GPU machine, else ../shared/bench/).
# DEVICE=cpu SMOKE=1 runs every step briefly on a CPU (bf16 only) to check the script.
set -euo pipefail
bin=$1 data=$2 out=$3
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
mkdir -p "$out"
bench=(--arch segnet --net-width 1.0 --height 360 --width 480 --samples 40 --runs 5)
precisions=(fp32 bf16 fp16)
limit=0
steps=${STEPS:-timing accuracy}
peer=${PEER:-.dev/peer_segnet.py}
[[ -f $peer ]] || peer=../shared/bench/peer_segnet.py
if [[ -n ${SMOKE:-} ]]; then
  bench=(--arch segnet --net-width 0.25 --height 64 --width 64 --samples 4 --runs 1)
  precisions=(fp32 bf16)
  limit=2
fi
if [[ $dev == cuda ]]; then
  torchlib=$("$py" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
  export LD_LIBRARY_PATH=$torchlib:${LD_LIBRARY_PATH:-}
  nvidia-smi -L | head -1 | tee -a "$out/bench.txt"
fi

if [[ $steps == *timing* ]]; then
echo "== timing" | tee -a "$out/bench.txt"
for p in "${precisions[@]}"; do
  "$bin" bench "${bench[@]}" --modes prefix --precision "$p" --images 1 --chunk 40 \
    --device "$dev" 2>&1 | tee -a "$out/bench.txt"
  "$bin" bench "${bench[@]}" --modes prefix --precision "$p" --images 4 --chunk 80 \
    --device "$dev" 2>&1 | tee -a "$out/bench.txt"
done
if [[ $dev == cuda && -f $peer ]]; then
  for flag in "" --bf16; do
    "$py" tools/bench/peer_gpu.py "$peer" $flag 2>&1 | tee -a "$out/bench.txt"
  done
fi
fi
[[ $steps == *accuracy* ]] || exit 0

echo "== accuracy on val (shipped model, T=40 fixed, seed 1)" | tee -a "$out/bench.txt"
for p in "${precisions[@]}"; do
  "$bin" eval --model assets/segnet-camvid.safetensors --data "$data" --split val \
    --samples 40 --no-adaptive --seed 1 --precision "$p" --limit "$limit" --device "$dev" \
    --out "$out/eval-$p" >"$out/eval-$p.log" 2>&1
  img=$(ls "$data"/val/* | head -1)
  "$bin" infer "$img" --samples 40 --no-adaptive --seed 1 --precision "$p" --device "$dev" \
    --uncertainty variance --out "$out/infer-$p" >>"$out/eval-$p.log" 2>&1
done
"$py" - "$out" "${precisions[@]}" <<'PY' | tee "$out/summary.txt"
import glob, json, sys
out, precisions = sys.argv[1], sys.argv[2:]
one = lambda p: json.load(open(glob.glob(f"{out}/infer-{p}/*.json")[0]))
base = one("fp32")["class_share"]
print("| precision | mIoU | ECE | mean variance (one frame) | class shares moved from fp32 (one frame) |")
print("|---|---|---|---|---|")
for p in precisions:
    r = json.load(open(f"{out}/eval-{p}/report.json"))["mc_dropout"]
    j = one(p)
    # Half the summed share differences: at least this share of pixels changed class.
    moved = 50 * sum(abs(j["class_share"][c] - base[c]) for c in base)
    print(f"| {p} | {100 * r['mean_iou']:.2f} | {100 * r['ece']:.2f} | {j['mean_variance']:.6f} | {moved:.3f}% |")
PY
