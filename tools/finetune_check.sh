#!/usr/bin/env bash
# Fine-tuning against training from scratch, at equal steps, on a 5-class relabelling of CamVid:
# sky; building+tree+fence+pole+sign; road; pavement; car+pedestrian+bicyclist.
#
#   tools/finetune_check.sh OUT [CAMVID]     (CAMVID default ../shared/data/camvid)
#
# A user's "small dataset": every third frame of sequence 0006R0 (34 frames) relabelled, in
# OUT/data/train; held-out frames: CamVid's val split (101 frames of 0016E5, none of which the
# shipped model trained on) relabelled, in OUT/data/val. Two runs of the same recipe and the
# same number of steps, at a reduced 120x160 input for the CPU: one from the shipped model
# (`--init assets/segnet-camvid.safetensors`, classifier re-initialised for 5 classes), one
# from random weights. Prints each run's held-out mIoU every 5 epochs and a summary line.
# BIN overrides the binary (default target/release/segnet-bayes); PYTHON a python3 with
# numpy and Pillow (default: the set-up's venv).
set -euo pipefail
out=$1
camvid=${2:-../shared/data/camvid}
bin=${BIN:-target/release/segnet-bayes}
py=${PYTHON:-$HOME/.cache/segnet-bayes/venv/bin/python}
mkdir -p "$out"
"$py" - "$camvid" "$out/data" <<'PY'
import os, sys
import numpy as np
from PIL import Image
src, dst = sys.argv[1:]
# CamVid index -> 5 classes; void (11) -> 5.
lut = np.array([0, 1, 1, 2, 3, 1, 1, 1, 4, 4, 4, 5], np.uint8)
for split, keep in [("train", lambda n: n.startswith("0006R0")), ("val", lambda n: True)]:
    names = sorted(n for n in os.listdir(f"{src}/{split}") if keep(n))
    if split == "train":
        names = names[::3]
    os.makedirs(f"{dst}/{split}", exist_ok=True)
    os.makedirs(f"{dst}/{split}annot", exist_ok=True)
    for n in names:
        image = f"{dst}/{split}/{n}"
        if not os.path.exists(image):
            os.symlink(os.path.abspath(f"{src}/{split}/{n}"), image)
        label = np.array(Image.open(f"{src}/{split}annot/{n}"))
        Image.fromarray(lut[label]).save(f"{dst}/{split}annot/{n}")
    print(f"{split}: {len(names)} frames relabelled into 5 classes")
PY
cat >"$out/five.yaml" <<'YAML'
model:
  arch: segnet
  width: 0.4
  classes: 5
  dropout: 0.5
  input_size: [120, 160]
  class_names: [Sky, Structure, Road, Pavement, Traffic]
  palette: [[128, 128, 128], [128, 0, 0], [128, 64, 128], [60, 40, 222], [64, 0, 128], [0, 0, 0]]
data:
  root: data
  class_weights: median
  augment:
    hflip: true
    scale: [0.75, 1.25]
  cache: true
train:
  optimizer: adamw
  lr: 0.001
  weight_decay: 0.0001
  schedule: poly
  warmup_steps: 20
  epochs: 25
  batch_size: 4
  val_every: 5
  checkpoint_every: 1000
YAML
for run in init scratch; do
  flags=()
  [[ $run == init ]] && flags=(--init assets/segnet-camvid.safetensors)
  rm -rf "${out:?}/$run"
  "$bin" train --config "$out/five.yaml" --out "$out/$run" --device cpu "${flags[@]}" |
    grep -v '^epoch .*mIoU -' | tee "$out/$run.log"
done
"$py" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for run in ["init", "scratch"]:
    lines = [json.loads(l) for l in open(f"{out}/{run}/log.jsonl")]
    scored = [(l["epoch"], l["step"], round(100 * l["val_miou"], 1), round(100 * l["val_global_accuracy"], 1)) for l in lines if l["val_miou"] is not None]
    print(run, "(epoch, step, held-out mIoU, global acc):", scored)
PY
