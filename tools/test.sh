#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it):
# set-up (installs only what is missing), then formatting, lints and the whole test suite,
# closing with one summary line over all test binaries.
#
# Tests that need the real CamVid data carry `#[ignore = "needs ../shared/data/camvid"]` (the
# only use of #[ignore] here): they run, and count as passed, when that folder exists;
# otherwise a line before the summary names each one skipped and why.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh --no-build
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
camvid=../shared/data/camvid
args=("$@")
if [ -d "$camvid" ]; then
  # The test binaries' flags go after a `--`, which the caller may have given already.
  if printf '%s\n' "$@" | grep -qx -- '--'; then
    args+=(--include-ignored)
  else
    args+=(-- --include-ignored)
  fi
fi
# As the binaries do (segnet_bayes::fix_math_library_threads): unit tests compare results bit
# for bit, which MKL's dynamic thread count would break on a busy machine.
export MKL_DYNAMIC=${MKL_DYNAMIC:-FALSE}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace ${args[@]+"${args[@]}"} 2>&1 | tee "$log" || status=$?
if [ ! -d "$camvid" ]; then
  sed -n 's/^test \(.*\) \.\.\. ignored, \(.*\)$/skipped \1: \2 (not found here)/p' "$log"
fi
# A real SLURM on this machine runs a sharded job array (tools/cluster/slurm-local.sh, about
# 90 s); it counts as one test, or says why it cannot run here (not root, no apt).
slurm=0
if [ "$status" -eq 0 ]; then
  tools/cluster/slurm-local.sh --bin target/debug || slurm=$?
  case $slurm in
    0) echo "test tools/cluster/slurm-local.sh ... ok" >>"$log" ;;
    77) ;;
    *) echo "test tools/cluster/slurm-local.sh ... FAILED" >>"$log"; status=1 ;;
  esac
fi
awk '/^test result:/ { p += $4; f += $6 }
     /^test tools\/cluster/ { if ($NF == "ok") p++; else f++ }
     END { printf "segnet-bayes: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
