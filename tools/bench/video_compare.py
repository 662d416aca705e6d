#!/usr/bin/env python3
"""Compares segnet-video runs with a reference run, frame by frame, from their `--maps` output.

Usage: video_compare.py BENCH_DIR REFERENCE MODE...

Each name is a run folder under BENCH_DIR (written by tools/bench_video.sh) holding
summary.json and maps/<frame>.npz. Prints one Markdown row per mode:

- frames/s: the run's own figure (decode, network, render and encode; summary.json);
- samples/frame: network passes per frame, on average;
- class agreement: mIoU of the mode's class map against the reference's, over all frames;
- variance r: Pearson correlation of the variance map with the reference's, per frame, averaged;
- AUROC of each uncertainty map for predicting the pixels where the reference's class differs
  from the mode's (ties count half).
"""

import json
import sys
from pathlib import Path

import numpy as np

MEASURES = ["variance", "entropy", "mutual-info"]
# Every 2nd pixel in each direction for the AUROC: a quarter of the pixels, exact ranks.
STRIDE = 2


def frames(run: Path):
    return sorted(p.name for p in (run / "maps").glob("*.npz"))


def load(run: Path, name: str):
    with np.load(run / "maps" / name) as z:
        return {k: z[k] for k in z.files}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve with average ranks for ties (Mann-Whitney U)."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value.
    ends = np.cumsum(counts)
    ranks = ends - (counts - 1) / 2.0
    rank_sum = ranks[inverse][positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def miou(confusion: np.ndarray) -> float:
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - inter
    seen = union > 0
    return float((inter[seen] / union[seen]).mean())


def compare(ref: Path, run: Path, classes: int = 11):
    names = frames(ref)
    missing = [n for n in names if not (run / "maps" / n).is_file()]
    if missing:
        sys.exit(f"error: {run} lacks the maps of {len(missing)} reference frames, e.g. {missing[0]}")
    confusion = np.zeros((classes, classes), dtype=np.int64)
    correlations = []
    scores = {m: [] for m in MEASURES}
    differs = []
    for name in names:
        a, b = load(ref, name), load(run, name)
        ca, cb = a["classes"].astype(np.int64), b["classes"].astype(np.int64)
        confusion += np.bincount(
            (ca * classes + cb).ravel(), minlength=classes * classes
        ).reshape(classes, classes)
        va, vb = a["variance"].astype(np.float64).ravel(), b["variance"].astype(np.float64).ravel()
        if va.std() > 0 and vb.std() > 0:
            correlations.append(np.corrcoef(va, vb)[0, 1])
        differs.append((ca != cb)[::STRIDE, ::STRIDE].ravel())
        for m in MEASURES:
            scores[m].append(b[m][::STRIDE, ::STRIDE].astype(np.float32).ravel())
    positive = np.concatenate(differs)
    summary = json.loads((run / "summary.json").read_text())
    return {
        "fps": summary["frames_per_second"],
        "samples": summary["samples_per_frame"],
        "agreement": miou(confusion),
        "pixels": float(np.trace(confusion) / confusion.sum()),
        "variance_r": float(np.mean(correlations)) if correlations else float("nan"),
        "differs": float(positive.mean()),
        "auroc": {m: auroc(np.concatenate(scores[m]), positive) for m in MEASURES},
        "frames": len(names),
    }


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    ref_name, modes = sys.argv[2], sys.argv[3:]
    ref = root / ref_name
    ref_fps = json.loads((ref / "summary.json").read_text())["frames_per_second"]
    print(
        "| mode | frames/s | x ref | samples/frame | class agreement (mIoU) | pixels agreeing "
        "| variance r | pixels differing | AUROC variance | AUROC entropy | AUROC MI |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for mode in modes:
        r = compare(ref, root / mode)
        results[mode] = r
        au = r["auroc"]
        print(
            f"| {mode} | {r['fps']:.2f} | {r['fps'] / ref_fps:.1f} | {r['samples']:.1f} "
            f"| {100 * r['agreement']:.1f} | {100 * r['pixels']:.1f} | {r['variance_r']:.3f} "
            f"| {100 * r['differs']:.2f}% | {au['variance']:.3f} | {au['entropy']:.3f} "
            f"| {au['mutual-info']:.3f} |"
        )
    (root / "compare.json").write_text(json.dumps({"reference": ref_name, "modes": results}, indent=1))


if __name__ == "__main__":
    main()
