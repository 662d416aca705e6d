#!/usr/bin/env bash
# One idempotent set-up for segnet-bayes on a Debian machine with a Rust toolchain and Python 3.
#
#   tools/setup.sh            install what is missing, point the build at libtorch, build (release)
#   tools/setup.sh --no-build only the installs and the build configuration
#
# What it does, each step skipped when already done:
#   1. Debian packages: OpenCV dev files, clang/libclang (for the `opencv` crate), pkg-config.
#   2. libtorch from PyPI's torch==2.11.0 wheel (the version tch 0.24 expects), in a virtual
#      environment in a per-user cache folder outside the repository ($SEGNET_CACHE, default
#      ~/.cache/segnet-bayes). About 2 minutes and 4.6 GB the first time.
#   3. .cargo/config.toml [env] LIBTORCH=<that torch>, so every cargo command finds it; build.rs
#      gives the binaries an rpath to it, so they run without LD_LIBRARY_PATH.
#   4. cargo build --release.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SEGNET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/segnet-bayes}
venv=$cache/venv
torch_version=2.11.0
say() { printf 'setup: %s\n' "$*" >&2; }

# 1. Debian packages ---------------------------------------------------------------------------
pkgs=(libopencv-dev clang libclang-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# 2. libtorch from the torch wheel -------------------------------------------------------------
have_torch() {
  "$venv/bin/python" -c "import sys, torch; sys.exit(0 if torch.__version__.split('+')[0] == '$torch_version' else 1)" 2>/dev/null
}
if ! have_torch; then
  say "installing torch==$torch_version into $venv (about 2 minutes, 4.6 GB)"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "torch==$torch_version"
  have_torch || { say "torch $torch_version did not install into $venv"; exit 1; }
else
  say "torch $torch_version present in $venv"
fi
# numpy and pillow: for the PyTorch peer scripts in bench/ (and silence torch's numpy warning).
if ! "$venv/bin/python" -c "import numpy, PIL" 2>/dev/null; then
  say "installing numpy and pillow into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check numpy pillow
fi
read -r libtorch cxx11 < <("$venv/bin/python" -c "import os, torch; print(os.path.dirname(torch.__file__), int(torch._C._GLIBCXX_USE_CXX11_ABI))")

# 3. Build configuration -----------------------------------------------------------------------
mkdir -p "$root/.cargo"
config="$root/.cargo/config.toml"
want=$(cat <<TOML
# Written by tools/setup.sh; machine-specific, not committed.
[env]
LIBTORCH = "$libtorch"
LIBTORCH_CXX11_ABI = "$cxx11"
SEGNET_PYTHON = "$venv/bin/python"
TOML
)
if [[ ! -f $config ]] || [[ "$(cat "$config")" != "$want" ]]; then
  printf '%s\n' "$want" >"$config.tmp" && mv "$config.tmp" "$config"
  say "wrote $config (LIBTORCH=$libtorch)"
fi

# 4. Build -------------------------------------------------------------------------------------
if [[ ${1:-} != --no-build ]]; then
  say "cargo build --release (about 5 minutes the first time on 2 cores)"
  (cd "$root" && cargo build --release --workspace --quiet)
fi
say "ready"
