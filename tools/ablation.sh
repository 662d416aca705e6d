#!/usr/bin/env bash
# The recipe ablation of issue 8: small trainings side by side on one GPU, each validated on a
# sequence it never trained on, then a table. Resumable across sessions.
#
#   tools/ablation.sh BIN DATA STATE OUT MINUTES
#
# Runs: every row of PLAN (default configs/ablation.txt) for every held-out sequence of FOLDS
# (default "0006R0 0001TP"), in that order (all rows of the first fold first), each as
#   BIN train --config configs/camvid-lean.yaml --hold-out FOLD --max-minutes MINUTES*factor FLAGS
# STATE: OUT of an earlier session (its results.tsv and checkpoint parts), or an empty folder:
# runs already in its results.tsv are skipped; a run cut short there resumes from its parts.
# This session runs the next PARALLEL runs (default 6) side by side, each killed after its
# minutes plus GRACE seconds (default 90), then scores each finished model on its held-out
# sequence with `eval` (weight averaging and MC dropout, T=40, at the labels' resolution),
# then again with --flip (each run's eval-flip/ in runs.tgz).
# OUT gets: results.tsv (STATE's rows and this session's), ablation.md (the table, a line a
# run), runs.tgz (each run's log, config and eval report), and the optimiser
# checkpoint of at most one run cut short, as parts under 16 MiB (tools/parts.sh), or else
# the session's best model (by held-out mIoU) as parts.
# The fold `all` trains on every labelled frame (train and val pooled, nothing held out: the
# final model of a recipe) and is scored on val, frames it trained on; its held-out accuracy is
# that of the same row's other folds. With nothing cut short, such a run's model comes back as
# parts (else the session's best held-out model). configs/final.txt is that plan.
# DEVICE=cpu SMOKE=1 runs the same steps briefly and tiny on a CPU, to check the script.
set -uo pipefail
if [[ $# -ne 5 ]]; then
  sed -n '2,21p' "$0" >&2
  exit 2
fi
bin=$1 data=$2 state=$3 out=$4 minutes=$5
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
plan=${PLAN:-$here/../configs/ablation.txt}
base=$here/../configs/camvid-lean.yaml
folds=(${FOLDS:-0006R0 0001TP})
parallel=${PARALLEL:-6}
grace=${GRACE:-90}
dev=${DEVICE:-cuda}
py=${PYTHON:-python3}
runs=$out/runs
mkdir -p "$runs"
results=$out/results.tsv
if [[ -f $state/results.tsv ]]; then
  cp "$state/results.tsv" "$results"
else
  printf 'row\tfold\tepochs\timages_per_s\tbest_val_miou\twa_miou\tmc_miou\twa_ece\tmc_ece\tminutes\n' >"$results"
fi
# Per run: two loader threads and two libtorch threads, so six runs share 16 cores.
common=(--device "$dev" --threads 2 --set data.loader_threads=2)
# Input normalisation, the appearance augmentations and rotation are pinned to the values every
# row of results.tsv so far was run with (fixed normalisation; no photometric jitter, blur, noise
# or rotation), so that rows from different sessions stay comparable when camvid-lean.yaml
# changes these; each row's flags come after and set its own. The other settings rows vary
# (scale, schedule, weight decay, dropout, width, input size) still come from the config. Without
# the pins, the config's photometric jitter of 2026-11-27 would have made `per-image-norm` the
# same run as `norm-photo`.
# The class weights likewise: median frequency, as every row was run before camvid-lean.yaml took
# their square roots (2026-12-08).
common+=(--set data.class_weights=median)
common+=(--set model.input_norm=fixed --set data.augment.brightness=0 --set data.augment.contrast=0
  --set data.augment.saturation=0 --set data.augment.hue=0 --set data.augment.gamma=0
  --set data.augment.blur=0 --set data.augment.noise=0 --set data.augment.rotate=0)
samples=40 limit=0 smoke=()
if [[ -n ${SMOKE:-} ]]; then
  # After the row's flags, so that they win.
  smoke=(--set data.limit=4 --set 'model.input_size=[64,80]' --set train.batch_size=2
    --set train.epochs=1 --set train.checkpoint_every=1)
  samples=2 limit=2
fi

# The runs of the plan not done yet: "row fold factor flags...".
todo=()
while read -r row factor flags; do
  [[ -z $row || $row == \#* ]] && continue
  for fold in "${folds[@]}"; do
    if ! grep -q "^$row	$fold	" "$results"; then
      todo+=("$row $fold $factor $flags")
    fi
  done
done <"$plan"
# Fold-major order: every row of the first fold before the second fold.
ordered=()
for fold in "${folds[@]}"; do
  for t in "${todo[@]}"; do
    read -r _ f _ <<<"$t"
    [[ $f == "$fold" ]] && ordered+=("$t")
  done
done
batch=("${ordered[@]:0:$parallel}")
echo "ablation: ${#ordered[@]} runs to do, ${#batch[@]} this session, $minutes min each on $dev"

pids=()
for t in "${batch[@]}"; do
  read -r row fold factor flags <<<"$t"
  name=$row@$fold
  dir=$runs/$name
  mins=$("$py" -c "print($minutes * $factor)")
  resume=()
  if [[ -f $state/$name.last.safetensors.sha256 ]]; then
    mkdir -p "$dir"
    bash "$here/parts.sh" join "$state/$name.last.safetensors" "$dir/last.safetensors" &&
      cp "$state/$name.config.yaml" "$dir/config.yaml" && resume=(--resume)
    cp "$state/$name.log.jsonl" "$dir/log.jsonl" 2>/dev/null
  fi
  hold=(--hold-out "$fold")
  if [[ $fold == all ]]; then
    hold=(--set data.train_split=train+val --set 'data.val_split=""' --set 'data.val_sequences=[]')
  fi
  limit_s=$("$py" -c "print(int($mins * 60 + $grace))")
  # shellcheck disable=SC2086 # the plan's flags are words
  timeout -s KILL "$limit_s" "$bin" train --config "$base" --data "$data" --out "$dir" \
    "${hold[@]}" --max-minutes "$mins" "${common[@]}" $flags "${smoke[@]}" "${resume[@]}" \
    >"$runs/$name.train.log" 2>&1 &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p"; done

# Every finished model scored on its held-out sequence, side by side too.
cut=() pids=()
for t in "${batch[@]}"; do
  read -r row fold _ <<<"$t"
  name=$row@$fold dir=$runs/$row@$fold
  tail -2 "$runs/$name.train.log"
  if [[ ! -f $dir/model.safetensors ]]; then
    cut+=("$name")
    continue
  fi
  scored=(--split train,val --sequences "$fold")
  [[ $fold == all ]] && scored=(--split val)
  # Scored as it is (eval/, results.tsv), then with test-time mirroring (eval-flip/, in
  # runs.tgz only).
  {
    "$bin" eval --model "$dir/model.safetensors" --data "$data" "${scored[@]}" \
      --samples "$samples" --no-adaptive --limit "$limit" --device "$dev" --threads 2 \
      --out "$dir/eval" >"$runs/$name.eval.log" 2>&1
    "$bin" eval --model "$dir/model.safetensors" --data "$data" "${scored[@]}" \
      --samples "$samples" --no-adaptive --limit "$limit" --device "$dev" --threads 2 \
      --flip --out "$dir/eval-flip" >>"$runs/$name.eval.log" 2>&1
  } &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p"; done

for t in "${batch[@]}"; do
  read -r row fold factor _ <<<"$t"
  name=$row@$fold dir=$runs/$row@$fold
  [[ -f $dir/eval/report.json ]] || continue
  mins=$("$py" -c "print($minutes * $factor)")
  "$py" - "$dir" "$row" "$fold" "$mins" >>"$results" <<'PY'
import json, sys
d, row, fold, mins = sys.argv[1:]
try:
    log = [json.loads(l) for l in open(f"{d}/log.jsonl") if l.strip()]
except FileNotFoundError:  # stopped by its time limit inside the first epoch
    log = []
scored = [l["val_miou"] for l in log if l.get("val_miou") is not None] or [float("nan")]
rate = sum(l["train_images_per_s"] for l in log) / max(len(log), 1)
r = json.load(open(f"{d}/eval/report.json"))
wa, mc = r["weight_averaging"], r["mc_dropout"]
epochs = log[-1]["epoch"] if log else 0
print("\t".join([row, fold, str(epochs), f"{rate:.1f}", f"{max(scored):.4f}",
                 f"{wa['mean_iou']:.4f}", f"{mc['mean_iou']:.4f}", f"{wa['ece']:.4f}",
                 f"{mc['ece']:.4f}", mins]))
PY
done

# FILE into OUT as parts NAME.part00.. and NAME.sha256, under the way back's 16 MiB a file.
export_parts() {
  ln -f "$1" "$out/$2"
  bash "$here/parts.sh" split "$out/$2" "$out" >/dev/null
  rm "$out/$2"
}

# A run cut short comes back as checkpoint parts (one: the way back takes 8 files, 64 MiB).
for name in "${cut[@]}"; do
  last=$runs/$name/last.safetensors
  if [[ -f $last ]]; then
    export_parts "$last" "$name.last.safetensors"
    cp "$runs/$name/config.yaml" "$out/$name.config.yaml"
    cp "$runs/$name/log.jsonl" "$out/$name.log.jsonl" 2>/dev/null
    echo "cut short: $name (checkpoint parts in $out; pass it as STATE to resume)"
    break
  fi
done

# With nothing cut short the way back has room for this session's best model (two parts), so
# that a CPU can study it later (MC against weight averaging on its held-out sequence).
if ! compgen -G "$out/*.last.safetensors.sha256" >/dev/null; then
  done_here=()
  for t in "${batch[@]}"; do
    read -r row fold _ <<<"$t"
    [[ -f $runs/$row@$fold/model.safetensors ]] && done_here+=("$row@$fold")
  done
  best=$("$py" - "$results" "${done_here[@]}" <<'PY'
import csv, sys
names = set(sys.argv[2:])
rows = [r for r in csv.DictReader(open(sys.argv[1]), delimiter="\t") if f"{r['row']}@{r['fold']}" in names]
if rows:
    # A model trained on every frame is the one to ship; its val score is not a held-out one.
    final = [r for r in rows if r["fold"] == "all"]
    r = final[0] if final else max(rows, key=lambda r: float(r["wa_miou"]))
    print(f"{r['row']}@{r['fold']}")
PY
  )
  if [[ -n $best ]]; then
    export_parts "$runs/$best/model.safetensors" "$best.model.safetensors"
    echo "model of this session: $best (parts in $out)"
  fi
fi

"$py" - "$results" <<'PY' | tee "$out/ablation.md"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
pct = lambda v: f"{100 * float(v):.1f}"
# One line a run: runs of different lengths or folds are not averaged together.
print("| row | held out | minutes | epochs | img/s | held-out mIoU WA | MC T=40 | ECE WA | ECE MC |")
print("|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["fold"] != rows[0]["fold"], r["fold"])):
    fold = "none (scored on val, trained on)" if r["fold"] == "all" else r["fold"]
    print(f"| {r['row']} | {fold} | {float(r['minutes']):g} | {r['epochs']} | "
          f"{float(r['images_per_s']):.0f} | {pct(r['wa_miou'])} | {pct(r['mc_miou'])} | "
          f"{pct(r['wa_ece'])} | {pct(r['mc_ece'])} |")
PY
tar czf "$out/runs.tgz" -C "$runs" --exclude='*.safetensors' .
