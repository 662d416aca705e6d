#!/usr/bin/env bash
# Why MC dropout does or does not beat weight averaging (issue 8, item 4): one model scored
# with `eval` under several sampling settings, then one table.
#
#   tools/mc_study.sh MODEL OUT [EVAL FLAGS...]
#
# e.g. tools/mc_study.sh runs/x/model.safetensors study-x --data ../shared/data/camvid \
#        --split train,val --sequences 0006R0
#
# Rows (all seed 1, --no-adaptive; weight averaging is the same in every row):
#   trained        T=40 with the trained dropout (rate and positions)
#   T=4, T=10      fewer samples, same dropout
#   p=0.3, p=0.1   a lower dropout rate at sampling time, same positions
#   decoder only   dropout after dec5, dec4, dec3 only (Bayesian SegNet's central decoders)
#   encoder only   dropout after enc3, enc4, enc5 only
#   last only      dropout after dec3 only
# With RECAL_CONFIG=CONFIG (the model's training config), also the model with batch-norm
# statistics re-estimated with dropout off (`recalibrate` without --dropout; RECAL_DATA
# overrides its data root), WA and MC at T=40: "bn without dropout".
# OUT gets one eval folder per row and table.md. Rows already in OUT are not redone.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
model=$1 out=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${BIN:-$root/target/release/segnet-bayes}
py=${SEGNET_PYTHON:-$HOME/.cache/segnet-bayes/venv/bin/python}
mkdir -p "$out"

row() {
  local name=$1 m=$2
  shift 2
  [[ -f $out/$name/report.json ]] && return
  echo "== $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  "$bin" eval --model "$m" --seed 1 --no-adaptive --out "$out/$name" "$@" >/dev/null
}

row trained "$model" --samples 40 "$@"
row T=4 "$model" --samples 4 "$@"
row T=10 "$model" --samples 10 "$@"
row p=0.3 "$model" --samples 40 --dropout-rate 0.3 "$@"
row p=0.1 "$model" --samples 40 --dropout-rate 0.1 "$@"
row "decoder only" "$model" --samples 40 --dropout-after dec5,dec4,dec3 "$@"
row "encoder only" "$model" --samples 40 --dropout-after enc3,enc4,enc5 "$@"
row "last only" "$model" --samples 40 --dropout-after dec3 "$@"
if [[ -n ${RECAL_CONFIG:-} ]]; then
  recal=$out/bn-without-dropout.safetensors
  if [[ ! -f $recal ]]; then
    "$bin" recalibrate --model "$model" --config "$RECAL_CONFIG" ${RECAL_DATA:+--data "$RECAL_DATA"} \
      --out "$recal" >/dev/null
  fi
  row "bn without dropout" "$recal" --samples 40 "$@"
fi

"$py" - "$out" <<'EOF' | tee "$out/table.md"
import json, os, sys
out = sys.argv[1]
order = ["trained", "T=4", "T=10", "p=0.3", "p=0.1", "decoder only", "encoder only",
         "last only", "bn without dropout"]
rows = [r for r in order if os.path.isfile(os.path.join(out, r, "report.json"))]
print("| sampling | T | MC mIoU | WA mIoU | MC - WA | MC global | WA global | MC ECE | WA ECE | pixel acc. of the 50% most certain (MC variance) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    rep = json.load(open(os.path.join(out, r, "report.json")))
    mc, wa = rep["mc_dropout"], rep["weight_averaging"]
    kept = next(q for q in rep["uncertainty"] if q["measure"] == "variance" and q["prediction"] == "mc")
    half = dict((round(f, 2), a) for f, a in kept["accuracy_at_kept"])[0.5]
    print(f"| {r} | {rep['samples']} | {100*mc['mean_iou']:.1f} | {100*wa['mean_iou']:.1f} | "
          f"{100*(mc['mean_iou']-wa['mean_iou']):+.1f} | {100*mc['global_accuracy']:.1f} | "
          f"{100*wa['global_accuracy']:.1f} | {100*mc['ece']:.1f} | {100*wa['ece']:.1f} | {100*half:.1f} |")
EOF
