#!/usr/bin/env bash
# Installs what coe builds and tests with, on Debian 12 (run as root or with sudo):
#   - Debian's packages: compiler, CMake, the C++ libraries, gnuplot, clang (the fuzz targets);
#   - .venv/ in the checkout (ignored by git): PyPI's torch (the libtorch coe builds against: the
#     CUDA 13.0 wheel, whose CUDA code compiles and links without a GPU) and the real clients the
#     tests use as oracles (HF tokenizers, tensorboard, torchrun, transformers, lm-eval), pinned in
#     tools/requirements.txt.
# CMake finds that torch by itself (cmake/CoeDependencies.cmake). Safe to run again: it installs
# only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(cmake ninja-build g++ pkg-config libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
          libgtest-dev nlohmann-json3-dev libpcre2-dev libxxhash-dev
          # c10d's ProcessGroupGloo.hpp includes Gloo's headers, which the wheel does not ship
          # (libtorch_cpu holds Gloo itself): data-parallel training on CPUs.
          libgloo-dev
          # coe-sweep's and coe-plot's plots (tools/plot_*.gp); the tables and data are written without it.
          gnuplot-nox
          # tools/check-format.sh (CI): the tree is formatted as .clang-format says.
          clang-format
          # fuzz/ (CI, docs/security.md): clang 14 with libFuzzer and the ASan/UBSan runtimes.
          clang libclang-rt-14-dev)
python=${COE_BASE_PYTHON:-python3}
# A Python with venv and pip: the machine's own, else Debian's.
if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  packages+=(python3 python3-venv)
  python=/usr/bin/python3
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ -x .venv/bin/python3 ] || "$python" -m venv .venv
.venv/bin/python3 -m pip install --quiet --disable-pip-version-check -r tools/requirements.txt
.venv/bin/python3 -W ignore -c 'import torch; print("coe: torch", torch.__version__, "in", torch.__file__.rsplit("/", 2)[0])'
