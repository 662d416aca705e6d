#!/usr/bin/env bash
# Packs CamVid's train and val splits for a GPU session whose upload is limited to 64 MiB with
# the repository: images as JPEG (quality 90, about 55 KB a frame instead of 250 KB), labels
# as they are (small PNGs).
#
#   tools/pack_data.sh [CAMVID] [DEST]    (defaults ../shared/data/camvid and .dev/camvid)
set -euo pipefail
src=${1:-../shared/data/camvid} dest=${2:-.dev/camvid}
py=${PYTHON:-$HOME/.cache/segnet-bayes/venv/bin/python}
"$py" - "$src" "$dest" <<'PY'
import os, shutil, sys
from PIL import Image
src, dest = sys.argv[1:]
for split in ["train", "val"]:
    os.makedirs(f"{dest}/{split}", exist_ok=True)
    os.makedirs(f"{dest}/{split}annot", exist_ok=True)
    for name in sorted(os.listdir(f"{src}/{split}")):
        stem = os.path.splitext(name)[0]
        Image.open(f"{src}/{split}/{name}").convert("RGB").save(f"{dest}/{split}/{stem}.jpg", quality=90)
        shutil.copy(f"{src}/{split}annot/{name}", f"{dest}/{split}annot/{name}")
PY
du -sh "$dest"
