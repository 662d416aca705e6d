#!/usr/bin/env python3
"""Stochastic weight averaging against the last epoch, on held-out sequences (README "Weight
averaging across epochs").

    swa_table.py DIR [--against BASE ...]

DIR holds one folder per run, named `<anything>@<SEQ>`, trained with `train.swa_from` and
`train.final_weights: swa`, each with its `config.yaml`, `log.jsonl` and two `eval` reports on
the held-out sequence SEQ: `swa.json` (the run's model.safetensors: the mean of the epochs from
`train.swa_from` on, batch norm re-estimated with dropout on) and `last-recal.json` (the last
epoch's weights, re-estimated the same way). Prints a row per run and the paired differences
(SWA minus last) with their mean and how many runs each way, as heldout_table.py prints them.

With `--against BASE ...` (other such folders, e.g. runs with the decaying schedule to the end
while DIR's held the rate at `train.swa_lr`), each run of DIR is also paired with BASE runs
whose `config.yaml` is the run's but for the averaging keys (`swa_from`, `swa_lr`,
`final_weights`): the same recipe, held-out sequence and seed, so the same first half. DIR's SWA
model is set against the first such run's last epoch (the recipe's model), and against the first
such run's SWA model among those that have one (first in the order the folders are given). A
BASE run needs only `last-recal.json`, `log.jsonl` and `config.yaml`, so runs of the recipe
without averaging serve too.
Standard library only.
"""
import argparse
import json
import os
import re

from heldout_table import paired, pct


def load(run_dir):
    m = re.fullmatch(r".*@(\w+)", os.path.basename(run_dir))
    paths = [os.path.join(run_dir, f) for f in ("swa.json", "last-recal.json", "log.jsonl")]
    if not m or not all(os.path.exists(p) for p in paths[1:]):
        return None
    cfg = open(os.path.join(run_dir, "config.yaml")).read()
    seed = re.search(r"\n  seed: (\d+)", cfg)
    swa_from = re.search(r"\n  swa_from: ([0-9.]+)", cfg)
    swa_lr = re.search(r"\n  swa_lr: ([0-9.e-]+)", cfg)
    log = [json.loads(line) for line in open(paths[2])]
    # What the run trained with, but for how it averaged: BASE runs pair on it.
    recipe = [line for line in cfg.splitlines()
              if not re.match(r"\s*(#|swa_from:|swa_lr:|final_weights:)", line)]
    return {
        "recipe": recipe,
        "name": os.path.basename(run_dir),
        "seq": m.group(1),
        "seed": int(seed.group(1)) if seed else 0,
        "swa_from": swa_from.group(1) if swa_from else "?",
        "swa_lr": swa_lr.group(1) if swa_lr else "schedule",
        "epochs": log[-1]["epoch"],
        "swa": json.load(open(paths[0])) if os.path.exists(paths[0]) else None,
        "last": json.load(open(paths[1])),
    }


def runs_in(root):
    return [r for r in (load(os.path.join(root, d)) for d in sorted(os.listdir(root))) if r]


def main():
    parser = argparse.ArgumentParser(description="SWA against the last epoch, paired.")
    parser.add_argument("dir")
    parser.add_argument("--against", nargs="+", default=[], metavar="BASE")
    args = parser.parse_args()
    runs = [r for r in runs_in(args.dir) if r["swa"]]
    base = [b for d in args.against for b in runs_in(d)]
    print("| run | held out | seed | epochs (averaged from) | rate while averaging "
          "| last epoch: mIoU WA / MC | SWA: mIoU WA / MC | global WA: last / SWA | ECE MC: last / SWA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        la, sw = r["last"], r["swa"]
        print(f"| {r['name']} | {r['seq']} | {r['seed']} | {r['epochs']} ({r['swa_from']}) | {r['swa_lr']} "
              f"| {pct(la['weight_averaging']['mean_iou'])} / {pct(la['mc_dropout']['mean_iou'])} "
              f"| {pct(sw['weight_averaging']['mean_iou'])} / {pct(sw['mc_dropout']['mean_iou'])} "
              f"| {pct(la['weight_averaging']['global_accuracy'])} / "
              f"{pct(sw['weight_averaging']['global_accuracy'])} "
              f"| {pct(la['mc_dropout']['ece'])} / {pct(sw['mc_dropout']['ece'])} |")
    if not runs:
        return
    print()
    print("| difference | runs | metric | mean | range | higher / lower / within 0.05 |")
    print("|---|---|---|---|---|---|")
    for pred, label in (("weight_averaging", "WA"), ("mc_dropout", "MC")):
        paired(f"SWA - last epoch, {label}", [(r["swa"][pred], r["last"][pred]) for r in runs],
               ["mean_iou", "global_accuracy", "ece"])
    for theirs, label in (("last", "BASE's last epoch"), ("swa", "BASE's SWA")):
        matched = [(r, b) for r in runs for b in
                   [next((b for b in base if b["recipe"] == r["recipe"] and b[theirs]), None)] if b]
        for pred, short in (("weight_averaging", "WA"), ("mc_dropout", "MC")):
            paired(f"SWA - {label}, {short}", [(r["swa"][pred], b[theirs][pred]) for r, b in matched],
                   ["mean_iou", "global_accuracy", "ece"])


if __name__ == "__main__":
    main()
