#!/usr/bin/env python3
"""Temperature scaling on held-out sequences (README "Label smoothing and temperature").

    temperature_table.py DIR

DIR holds `eval --temperature T` reports (`*.json`, each an `eval` report.json renamed), any
number per model. Prints one row per report, grouped by the model and the frames it scored,
in order of temperature (a report without `temperature` counts as 1), with weight averaging's
and MC dropout's mIoU, global accuracy and ECE, and marks each group's lowest ECE, weight
averaging's and MC's. Standard library only.
"""
import json
import os
import sys

from heldout_table import pct


def temperature(report):
    return report.get("temperature") or 1.0


def ece_cell(score, best, marked):
    cell = pct(score["ece"])
    return f"**{cell}**" if marked and score["ece"] == best else cell


def main():
    root = sys.argv[1]
    groups = {}
    for name in sorted(os.listdir(root)):
        if not name.endswith(".json"):
            continue
        r = json.load(open(os.path.join(root, name)))
        key = (r["model"], r["split"], ",".join(s["sequence"] for s in r["per_sequence"]),
               r["samples"])
        groups.setdefault(key, []).append(r)
    print("| model | frames | MC samples | temperature | mIoU WA / MC | global WA / MC | "
          "ECE WA | ECE MC |")
    print("|---|---|---|---|---|---|---|---|")
    for (model, split, seqs, samples), reports in groups.items():
        reports.sort(key=temperature)
        best_wa = min(r["weight_averaging"]["ece"] for r in reports)
        best_mc = min(r["mc_dropout"]["ece"] for r in reports)
        marked = len(reports) > 1
        for r in reports:
            wa, mc = r["weight_averaging"], r["mc_dropout"]
            print(f"| {model} | {seqs} ({r['images']}) | {samples} | {temperature(r)} "
                  f"| {pct(wa['mean_iou'])} / {pct(mc['mean_iou'])} "
                  f"| {pct(wa['global_accuracy'])} / {pct(mc['global_accuracy'])} "
                  f"| {ece_cell(wa, best_wa, marked)} | {ece_cell(mc, best_mc, marked)} |")


if __name__ == "__main__":
    main()
