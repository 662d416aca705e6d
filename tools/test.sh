#!/usr/bin/env bash
# The project's test command (the README's second command; .ci/run calls it):
# set-up (installs only what is missing), then formatting, lints and the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup.sh --no-build
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace "$@"
