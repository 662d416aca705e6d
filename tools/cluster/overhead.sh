#!/usr/bin/env bash
# What sharding costs on one machine: N shards run side by side (one libtorch thread each)
# against one process with every core, over the same CamVid val frames with the shipped
# model. Prints both wall times and their ratio per round; rounds alternate the two so that
# other load on the machine falls on both alike. The speed-up of sharding comes from separate
# machines; this measures its overhead.
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
for r in $(seq "$rounds"); do
  rm -rf "$w/one" "$w/sharded"
  t=$(now)
  "$bin" infer "${args[@]}" --threads "$cores" --out "$w/one" >/dev/null
  one=$(echo "$(now) - $t" | bc)
  t=$(now)
  for i in $(seq 0 $((shards - 1))); do
    "$bin" infer "${args[@]}" --threads 1 --shard "$i/$shards" --out "$w/sharded" >/dev/null 2>&1 &
  done
  wait
  sharded=$(echo "$(now) - $t" | bc)
  printf 'round %d: %d frames, T=%d: one process (%d threads) %.1f s, %d shards (1 thread each) %.1f s, ratio %.2f\n' \
    "$r" "$frames" "$samples" "$cores" "$one" "$shards" "$sharded" "$(echo "$sharded / $one" | bc -l)"
done
