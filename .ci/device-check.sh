#!/usr/bin/env bash
# The GPU check, for the device machine (see shared/device/README.md): run from the project root after
# `bash ../shared/device/pack.sh` here. Builds the native suite against the device's PyTorch libtorch
# (CUDA) and runs the CUDA tests and the NCE benchmark on the GPU. Logs go to $OUT.
set -uo pipefail
source .device/unpack.sh
out=${OUT:-/tmp}
cmake -S . -B build-cuda -G Ninja -DPIRL_BUILD_ADDON=OFF -DPIRL_BUILD_TESTS=ON -DPIRL_BUILD_BENCHMARKS=ON \
  -DCMAKE_PREFIX_PATH="$CMAKE_PREFIX_PATH" -DCMAKE_CUDA_ARCHITECTURES=90 >"$out/configure.log" 2>&1 || { tail -40 "$out/configure.log"; exit 1; }
cmake --build build-cuda --parallel 16 >"$out/build.log" 2>&1 || { grep -m20 -A5 error "$out/build.log"; exit 1; }
(cd build-cuda && ctest --parallel 8 -R 'NceCuda|Nce' --output-on-failure) >"$out/ctest.log" 2>&1
tail -5 "$out/ctest.log"
