#!/usr/bin/env python3
"""Tables of held-out-sequence runs (README "Lighting on unseen drives").

    heldout_table.py DIR [DIR ...]

Each DIR holds one folder per run, named `cpu<H>[s<SEED>]-<recipe>@<SEQ>` (for example
`cpu120-normphoto@0006R0`, or `cpu120s1-base@0006R0` for a run with `train.seed=1`), each with
the run's `config.yaml` and `log.jsonl` and two `eval` reports on the held-out sequence SEQ:
`model.json` (the run's final model: best held-out epoch, batch norm re-estimated with dropout
on) and `last-recal.json` (the last epoch, re-estimated the same way), and where it was run,
`model-flip.json` (the final model scored with `eval --flip`). Prints a table with every run,
then per input size the final models' mIoU (weight averaging) by recipe and held-out sequence
(seed 0), with the mean over all folds and over the daylight ones, the cells run with more than
one seed, and paired differences over every run that has both reports: MC against weight
averaging, the best epoch against the last, mirroring against none, and each recipe against
fixed norm (base) run on the same fold, seed and input. Standard library only.
"""
import json
import os
import re
import sys

RECIPES = {
    "base": "fixed norm",
    "photo": "fixed norm + photometric",
    "norm": "per-image norm",
    "normphoto": "per-image norm + photometric",
    "ls": "fixed norm + label smoothing 0.1",
    "nocw": "fixed norm, no class weights",
    "sqrtcw": "fixed norm, sqrt-median class weights",
}
DUSK = {"0001TP"}


def pct(x):
    return f"{100 * x:.1f}"


def load(run_dir):
    name = os.path.basename(run_dir)
    m = re.fullmatch(r"cpu\d+(?:s\d+)?-(\w+)@(\w+)", name)
    if not m or m.group(1) not in RECIPES:
        return None
    if not os.path.exists(os.path.join(run_dir, "log.jsonl")):
        return None  # an evaluation still running: its folder exists, its files come last
    cfg = open(os.path.join(run_dir, "config.yaml")).read()
    size = re.search(r"input_size:\s*\n\s*-\s*(\d+)\s*\n\s*-\s*(\d+)", cfg)
    seed = re.search(r"\n  seed: (\d+)", cfg)
    log = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    reports = {}
    for kind in ("model", "last-recal", "model-flip"):
        path = os.path.join(run_dir, kind + ".json")
        if os.path.exists(path):
            reports[kind] = json.load(open(path))
    return {
        "recipe": m.group(1),
        "seq": m.group(2),
        "size": f"{size.group(1)}x{size.group(2)}" if size else "?",
        "seed": int(seed.group(1)) if seed else 0,
        "epochs": log[-1]["epoch"],
        "val": [r["val_miou"] for r in log if r.get("val_miou") is not None],
        "reports": reports,
    }


def cells(report):
    if report is None:
        return "-", "-", "-"
    wa, mc = report["weight_averaging"], report["mc_dropout"]
    return (
        f"{pct(wa['mean_iou'])} / {pct(mc['mean_iou'])}",
        pct(wa["global_accuracy"]),
        f"{pct(wa['ece'])} / {pct(mc['ece'])}",
    )


def main():
    runs = [r for root in sys.argv[1:]
            for r in (load(os.path.join(root, d)) for d in sorted(os.listdir(root))) if r]
    order = list(RECIPES)
    runs.sort(key=lambda r: (r["size"], r["seq"], order.index(r["recipe"]), r["seed"]))
    print("| recipe | held out | input | seed | epochs | held-out mIoU in training: best (epoch) / "
          "mean of last 5 | final: mIoU WA / MC | global WA | ECE WA / MC | last epoch: mIoU "
          "WA / MC | global WA | ECE WA / MC |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        v = r["val"]
        best = max(v)
        trend = f"{pct(best)} ({1 + v.index(best)}) / {pct(sum(v[-5:]) / len(v[-5:]))}"
        final = cells(r["reports"].get("model"))
        last = cells(r["reports"].get("last-recal"))
        print(f"| {RECIPES[r['recipe']]} | {r['seq']} | {r['size']} | {r['seed']} | {r['epochs']} "
              f"| {trend} | "
              + " | ".join(final + last) + " |")

    for size in sorted({r["size"] for r in runs}):
        here = [r for r in runs if r["size"] == size and r["seed"] == 0 and "model" in r["reports"]]
        seqs = sorted({r["seq"] for r in here})
        print()
        print(f"Final models at {size}, mIoU with weight averaging (MC in brackets):")
        print()
        print("| recipe | " + " | ".join(seqs) + " | mean, all folds | mean, daylight folds |")
        print("|---|" + "---|" * (len(seqs) + 2))
        for recipe in order:
            got = {r["seq"]: r["reports"]["model"] for r in here if r["recipe"] == recipe}
            if not got:
                continue
            row = []
            for s in seqs:
                rep = got.get(s)
                row.append("-" if rep is None else
                           f"{pct(rep['weight_averaging']['mean_iou'])} "
                           f"({pct(rep['mc_dropout']['mean_iou'])})")

            def mean(keep):
                xs = [got[s]["weight_averaging"]["mean_iou"] for s in seqs if s in got and keep(s)]
                want = [s for s in seqs if keep(s)]
                return pct(sum(xs) / len(xs)) if xs and len(xs) == len(want) else "-"

            row += [mean(lambda s: True), mean(lambda s: s not in DUSK)]
            print(f"| {RECIPES[recipe]} | " + " | ".join(row) + " |")

    cells_seeds = {}
    for r in runs:
        if "model" in r["reports"]:
            cells_seeds.setdefault((r["size"], r["seq"], r["recipe"]), []).append(r)
    repeated = {k: v for k, v in cells_seeds.items() if len(v) > 1}
    if repeated:
        print()
        print("Cells run with more than one seed, final models, mIoU WA / MC per seed:")
        print()
        print("| recipe | held out | input | per seed | spread WA |")
        print("|---|---|---|---|---|")
        for (size, seq, recipe), rs in sorted(repeated.items()):
            was = [r["reports"]["model"]["weight_averaging"]["mean_iou"] for r in rs]
            per = ", ".join(f"seed {r['seed']}: {cells(r['reports']['model'])[0]}" for r in rs)
            print(f"| {RECIPES[recipe]} | {seq} | {size} | {per} | {pct(max(was) - min(was))} |")

    print()
    print("Paired differences in points (mean, range; runs above / below by more than 0.05 / "
          "within 0.05):")
    print()
    print("| comparison | runs | metric | mean | range | above / below / within |")
    print("|---|---|---|---|---|---|")
    mc_wa = [(r["reports"]["model"]["mc_dropout"], r["reports"]["model"]["weight_averaging"])
             for r in runs if "model" in r["reports"]]
    paired("MC - WA, final models", mc_wa, ["mean_iou", "ece"])
    for what in ("weight_averaging", "mc_dropout"):
        label = "WA" if what == "weight_averaging" else "MC"
        pairs = [(r["reports"]["model"][what], r["reports"]["last-recal"][what])
                 for r in runs if "model" in r["reports"] and "last-recal" in r["reports"]]
        paired(f"best epoch - last epoch, {label}", pairs, ["mean_iou"])
        pairs = [(r["reports"]["model-flip"][what], r["reports"]["model"][what])
                 for r in runs if "model" in r["reports"] and "model-flip" in r["reports"]]
        paired(f"--flip - without, {label}", pairs,
               ["mean_iou", "global_accuracy", "ece"])
    base = {(r["size"], r["seq"], r["seed"]): r for r in runs if r["recipe"] == "base"}
    for recipe in order[1:]:
        for kind, when in (("model", "final"), ("last-recal", "last epoch")):
            both = [(r["reports"][kind], b["reports"][kind]) for r in runs
                    if r["recipe"] == recipe and kind in r["reports"]
                    for b in [base.get((r["size"], r["seq"], r["seed"]))]
                    if b and kind in b["reports"]]
            for what, label in (("weight_averaging", "WA"), ("mc_dropout", "MC")):
                paired(f"{RECIPES[recipe]} - fixed norm, {when}, {label}",
                       [(a[what], b[what]) for a, b in both],
                       ["mean_iou", "global_accuracy", "ece"])


def paired(name, pairs, metrics):
    """One row per metric of the differences a - b over `pairs` of score dicts."""
    if not pairs:
        return
    for metric in metrics:
        d = [100 * (a[metric] - b[metric]) for a, b in pairs]
        above = sum(x > 0.05 for x in d)
        below = sum(x < -0.05 for x in d)
        print(f"| {name} | {len(d)} | {metric} | {sum(d) / len(d):+.2f} | "
              f"{min(d):+.1f} to {max(d):+.1f} | {above} / {below} / {len(d) - above - below} |")


if __name__ == "__main__":
    main()
