#!/usr/bin/env bash
# Installs coe's build and test dependencies from Debian 12's archive (run as root or with sudo).
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config libtorch-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libcli11-dev
          libgtest-dev nlohmann-json3-dev libpcre2-dev libgloo-dev
          # Debian's libtorch calls the system BLAS (update-alternatives libblas.so.3); without this
          # it is the reference BLAS, ~7x slower for CPU training (docs/performance.md).
          libopenblas0-openmp
          # coe-sweep's and coe-plot's plots (tools/plot_*.gp); the tables and data are written without it.
          gnuplot-nox
          # tools/check_tfevents.py: Google's protobuf library and crcmod read coe's TensorBoard files
          # as a check independent of coe (tests/test_util_tensorboard.cpp skips it without them).
          python3-protobuf python3-crcmod
          # torchrun, the launcher the data-parallel test starts coe-train with (its libtorch is the
          # libtorch-dev one above; Python never runs coe).
          python3-torch
          # tools/check-format.sh (CI): the tree is formatted as .clang-format says.
          clang-format)
# The differential tokenizer test (tests/test_data_tokenizer_diff.cpp) runs HF's tokenizers from npm
# on node; it is skipped without them. Debian's node is only installed when none is on PATH.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
