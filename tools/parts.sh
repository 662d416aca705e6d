#!/usr/bin/env bash
# Splits a file (a training checkpoint with its optimiser state, `last.safetensors`) into parts
# under 16 MiB for a transfer that limits file sizes, and joins them back, checking the SHA-256.
#
#   tools/parts.sh split FILE [DIR]   -> DIR/NAME.part00, NAME.part01, ..., DIR/NAME.sha256
#   tools/parts.sh join DIR/NAME [FILE] -> FILE (default DIR/NAME), written whole or not at all
#
# PART_SIZE overrides the 15M part size.
# A run resumes on another machine from the joined checkpoint:
#   tools/parts.sh split runs/lean/last.safetensors parts/      (on the first machine)
#   tools/parts.sh join parts/last.safetensors runs/lean/last.safetensors   (on the next)
#   segnet-bayes train --config runs/lean/config.yaml --out runs/lean --resume
set -euo pipefail
usage() { sed -n '2,11p' "$0" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
case $1 in
split)
  file=$2 dir=${3:-$(dirname "$2")} name=$(basename "$2")
  mkdir -p "$dir"
  rm -f "$dir/$name".part*
  split -b "${PART_SIZE:-15M}" -d "$file" "$dir/$name.part"
  (cd "$(dirname "$file")" && sha256sum "$name") >"$dir/$name.sha256"
  ls "$dir/$name".part* | wc -l | xargs echo "parts:"
  ;;
join)
  base=$2 file=${3:-$2}
  parts=("$base".part*)
  [[ -f ${parts[0]} ]] || { echo "error: no parts $base.part*" >&2; exit 1; }
  tmp=$(mktemp "$file.XXXXXX.tmp")
  trap 'rm -f "$tmp"' EXIT
  cat "${parts[@]}" >"$tmp"
  want=$(cut -d' ' -f1 "$base.sha256")
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [[ $want != "$got" ]]; then
    echo "error: $base.part* join to SHA-256 $got, $base.sha256 says $want (a part missing or damaged)" >&2
    exit 1
  fi
  mv "$tmp" "$file"
  trap - EXIT
  echo "joined ${#parts[@]} parts into $file"
  ;;
*) usage ;;
esac
