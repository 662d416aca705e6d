#!/usr/bin/env bash
# What sharding costs on one machine, over the same CamVid val frames with the shipped model:
#   wall: N shards side by side (one libtorch thread each) against one process with every core;
#   CPU:  the N shards' CPU time against one process's on one thread: the work sharding adds
#         (a process start and a model load per shard), independent of other load on the
#         machine. On an otherwise idle machine the wall ratio is at most about the CPU ratio,
#         since one process's threads are never more than perfectly efficient.
# Rounds alternate the configurations so that other load falls on all alike. The speed-up of
# sharding comes from separate machines; this measures its overhead.
#
# Usage: tools/cluster/overhead.sh [FRAMES] [SAMPLES] [SHARDS] [ROUNDS]   (default 12 8 3 2)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/target/release/segnet-bayes
frames=${1:-12} samples=${2:-8} shards=${3:-3} rounds=${4:-2}
cores=$(nproc)
w=$(mktemp -d /tmp/segnet-overhead.XXXXXX)
trap 'rm -rf "$w"' EXIT
mkdir "$w/in"
find "$root/../shared/data/camvid/val" -name '*.png' | sort | head -"$frames" | xargs cp -t "$w/in"
args=("$w/in" --samples "$samples" --seed 1)
now() { date +%s.%N; }
cpu() { awk '{ s += $1 + $2 } END { print s }' "$@"; }
for r in $(seq "$rounds"); do
  rm -rf "$w"/out-* "$w"/cpu-*
  t=$(now)
  "$bin" infer "${args[@]}" --threads "$cores" --out "$w/out-one" >/dev/null
  one=$(echo "$(now) - $t" | bc)
  t=$(now)
  for i in $(seq 0 $((shards - 1))); do
    /usr/bin/time -f '%U %S' -o "$w/cpu-shard-$i" \
      "$bin" infer "${args[@]}" --threads 1 --shard "$i/$shards" --out "$w/out-sharded" >/dev/null 2>&1 &
  done
  wait
  sharded=$(echo "$(now) - $t" | bc)
  /usr/bin/time -f '%U %S' -o "$w/cpu-serial" \
    "$bin" infer "${args[@]}" --threads 1 --out "$w/out-serial" >/dev/null
  serial_cpu=$(cpu "$w/cpu-serial")
  shards_cpu=$(cpu "$w"/cpu-shard-*)
  printf 'round %d, %d frames, T=%d: wall: one process (%d threads) %.1f s, %d shards (1 thread each) %.1f s, ratio %.2f; CPU: one process (1 thread) %.1f s, %d shards %.1f s, ratio %.3f\n' \
    "$r" "$frames" "$samples" "$cores" "$one" "$shards" "$sharded" "$(echo "$sharded / $one" | bc -l)" \
    "$serial_cpu" "$shards" "$shards_cpu" "$(echo "$shards_cpu / $serial_cpu" | bc -l)"
done
