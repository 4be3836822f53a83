#!/usr/bin/env bash
# Installs ming's system dependencies from Debian packages (when missing) and builds it in
# Release into ./build. Idempotent: a second run only rebuilds what changed.
#
#   scripts/setup.sh                # deps + build (MING_JOBS=N: N compile jobs, default all cores)
#   BUILD_DIR=build-debug CMAKE_BUILD_TYPE=Debug scripts/setup.sh
#   Torch_DIR=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')/Torch \
#     scripts/setup.sh              # against a pip PyTorch 2.x (CUDA or not) instead of Debian's
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}
build_type=${CMAKE_BUILD_TYPE:-Release}

packages=(build-essential cmake ninja-build pkg-config git python3
          libtorch-dev libsentencepiece-dev sentencepiece libcli11-dev libfmt-dev
          libyaml-cpp-dev doctest-dev nlohmann-json3-dev libopenblas-dev libopenblas0-openmp
          libpcre2-dev libutf8proc-dev libgloo-dev libisal-dev)
# With a pip LibTorch (Torch_DIR set) Debian's libtorch-dev is not needed. Where Debian's CUDA
# build of LibTorch is installed (libtorch-cuda-dev, Debian 13 contrib; it conflicts with
# libtorch-dev), its Gloo is libgloo-cuda-dev.
if [[ -n "${Torch_DIR:-}" ]]; then
  packages=("${packages[@]/libtorch-dev}")
elif dpkg-query -W -f='${Status}' libtorch-cuda-dev 2>/dev/null | grep -q "install ok installed"; then
  packages=("${packages[@]/#libtorch-dev/libtorch-cuda-dev}")
  packages=("${packages[@]/#libgloo-dev/libgloo-cuda-dev}")
fi
# The chat-template parity test runs Hugging Face's reference renderer (@huggingface/jinja) under
# node; a node already installed another way (with its own npm) is kept.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  packages+=(nodejs npm)
fi

missing=()
for p in "${packages[@]}"; do
  [[ -z "$p" ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# OpenBLAS built on OpenMP shares LibTorch's thread pool. Debian prefers its pthreads build,
# whose own threads then fight LibTorch's spinning OpenMP workers for the cores (measured: fp32
# training steps 1.8x slower, a MoLoRA decode step with 8 sequences 3x slower). Select the OpenMP
# build for the three names LibTorch links against, unless the machine already chose another.
blas_dir=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ -d "$blas_dir" ]]; then
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
    name="$lib-x86_64-linux-gnu"
    current=$(update-alternatives --query "$name" 2>/dev/null | awk '/^Value:/ {print $2}')
    if [[ "$current" == */openblas-pthread/* ]]; then
      echo "setup: selecting OpenMP OpenBLAS for $lib (update-alternatives)" >&2
      $sudo update-alternatives --quiet --set "$name" "$blas_dir/$lib" ||
        echo "setup: could not switch $lib (needs root); ming works, fp32 BLAS calls run slower" >&2
    fi
  done
fi

jobs=${MING_JOBS:-$(nproc 2>/dev/null || echo 2)}
# LibTorch translation units need ~1.5 GB of memory each to compile.
mem_gb=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo 2>/dev/null || echo 8)
(( jobs > mem_gb / 2 && mem_gb >= 2 )) && jobs=$(( mem_gb / 2 ))
(( jobs < 1 )) && jobs=1

generator=()
command -v ninja >/dev/null && [[ ! -f "$build_dir/Makefile" ]] && generator=(-G Ninja)
cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE="$build_type" \
  ${Torch_DIR:+-DTorch_DIR="$Torch_DIR"} ${MING_CMAKE_ARGS:-} >/dev/null
echo "setup: building ${MING_TARGETS:-everything} in $build_dir with $jobs jobs" >&2
targets=()
for t in ${MING_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j "$jobs" "${targets[@]}"
