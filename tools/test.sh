#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it):
# set-up (installs only what is missing), then formatting, lints and the whole test suite,
# closing with one summary line over all test binaries.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh --no-build
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "segnet-bayes: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
