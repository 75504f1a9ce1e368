#!/usr/bin/env bash
# Syntax-checks pirl's C++ and CUDA sources against libtorch 2.x headers, without a GPU or PyPI: the code
# that only a GPU host builds (against pip's torch) fails here rather than in a lent GPU session. The header
# sets come from Debian's archive (setup.sh, once) and bracket the GPU host's torch: 2.6 (a CUDA build) and
# 2.14 (C++20, as torch >= 2.13 requires); an API that compiles against both is taken to be in between.
#
#   check.sh [-s SET] [-c] [-u] [-x STD] [-p] [-n] [-o LOGDIR] [FILE...]
#     -s SET   113: Debian's installed libtorch 1.13 (/usr/include; what pirl builds with here: validation)
#              26:  libtorch-cuda-dev 2.6 headers     214: libtorch-dev 2.14 headers (default)
#     -c       a CUDA build's configuration: PIRL_WITH_CUDA, USE_C10D_NCCL and PIRL_WITH_NCCL (nccl.h and
#              the cuBLAS/cuSPARSE/cuSOLVER stand-ins of setup.sh), as pip's CUDA torch with nvidia-nccl
#     -u       also native/**/*.cu with nvcc for sm_90 (implies -c)
#     -x STD   the C++ standard (default c++20 for 214, c++17 otherwise)
#     -p       without the force-included <ATen/ATen.h> (CMake's precompiled header): shows missing #includes
#     -n       without Gloo (PIRL_WITH_GLOO=0: what CMake picks when the libtorch has no Gloo headers)
#     -o DIR   logs (default $PIRL_TORCH_HEADERS/logs/<set>[-cuda]...)
#     FILE...  only these sources (paths in the checkout); default: native, test/native, bench
#   env: PIRL_TORCH_HEADERS (setup.sh's folder, default ~/.cache/pirl/torch-headers), CXX (g++), NVCC
#   (/usr/local/cuda/bin/nvcc), CUDA_HOME (the toolkit above NVCC's bin/). One file at a time (~15 s each), under
#   `flock /tmp/pirl-build.lock`; a file that reaches a 1.13 header while checking a 2.x set is CONTAMINATED.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
DATA=${PIRL_TORCH_HEADERS:-$HOME/.cache/pirl/torch-headers}
CXX=${CXX:-g++}
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
SET=214; CUDA=0; CU=0; PCH=1; LOGDIR=""; STD=""; GLOO=1
while getopts "s:cupno:x:" opt; do
  case $opt in
    s) SET=$OPTARG ;; c) CUDA=1 ;; u) CU=1; CUDA=1 ;; p) PCH=0 ;; o) LOGDIR=$OPTARG ;; x) STD=$OPTARG ;; n) GLOO=0 ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))

case $SET in
  113)
    TORCH_INC=(-I/usr/include/torch/csrc/api/include)
    GLOO_INC=()
    # Debian 1.13's Caffe2Targets.cmake: torch_cpu INTERFACE_COMPILE_DEFINITIONS
    TORCH_DEFS=(-DUSE_DISTRIBUTED -DUSE_C10D_GLOO -DUSE_RPC -DUSE_TENSORPIPE)
    ;;
  214)
    R=$DATA/deb-2.14/usr/include
    [ -d "$R/ATen/ops" ] || { echo "missing $R: run $HERE/setup.sh first" >&2; exit 2; }
    # generated/ holds the few generated headers a CPU Debian package lacks (CUDA config headers)
    TORCH_INC=(-I"$DATA/generated" -I"$R" -I"$R/torch/csrc/api/include")
    GLOO_INC=(-I"$DATA/gloo-sid/usr/include")
    # a pip build's torch_cpu INTERFACE_COMPILE_DEFINITIONS (torch_cuda adds USE_C10D_NCCL, below)
    TORCH_DEFS=(-DUSE_DISTRIBUTED -DUSE_C10D_GLOO -DUSE_RPC -DUSE_TENSORPIPE)
    ;;
  26)
    R=$DATA/deb-2.6-cuda/usr/include
    [ -d "$R/ATen/ops" ] || { echo "missing $R: run $HERE/setup.sh first" >&2; exit 2; }
    TORCH_INC=(-I"$R" -I"$R/torch/csrc/api/include")
    GLOO_INC=(-I"$DATA/gloo-sid/usr/include")
    TORCH_DEFS=(-DUSE_DISTRIBUTED -DUSE_C10D_GLOO -DUSE_RPC -DUSE_TENSORPIPE)
    ;;
  *) echo "unknown set $SET" >&2; exit 2 ;;
esac
if [ -z "$STD" ]; then [ "$SET" = 214 ] && STD=c++20 || STD=c++17; fi
NAME=$SET; [ "$SET" = 214 ] && [ "$STD" != c++20 ] && NAME=$SET-$STD
[ $CUDA = 1 ] && NAME=$SET-cuda
[ $PCH = 0 ] && NAME=$NAME-nopch
[ $GLOO = 0 ] && NAME=$NAME-nogloo && GLOO_INC=()
LOGDIR=${LOGDIR:-$DATA/logs/$NAME}
rm -rf "$LOGDIR"; mkdir -p "$LOGDIR"

CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(readlink -f "$NVCC")")")}
COMMON=(-std=$STD -fsyntax-only -fopenmp -fexceptions -frtti -D_GLIBCXX_USE_CXX11_ABI=1
        "${TORCH_DEFS[@]}" -DPIRL_WITH_GLOO=$GLOO -I"$SRC/native" "${GLOO_INC[@]}" "${TORCH_INC[@]}")
CUDA_INC=(-I"$CUDA_HOME/include" -I"$DATA/nccl-sid/usr/include" -I"$DATA/generated/cuda-libraries")
if [ $CUDA = 1 ]; then
  COMMON+=(-DPIRL_WITH_CUDA -DUSE_C10D_NCCL -DPIRL_WITH_NCCL=1 "${CUDA_INC[@]}")
else
  COMMON+=(-DPIRL_WITH_NCCL=0)  # as CMake defines it for a CPU libtorch
fi
[ $PCH = 1 ] && PCHFLAG=(-include ATen/ATen.h) || PCHFLAG=()
NODE_INC=(-I"$SRC/node_modules/node-api-headers/include" -I"$SRC/node_modules/node-addon-api"
          -DNAPI_VERSION=9 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_DISABLE_DEPRECATED -DBUILDING_NODE_EXTENSION)
TEST_INC=(-I"$SRC/test/native")

if [ $# -gt 0 ]; then FILES=("$@"); else
  mapfile -t FILES < <(cd "$SRC" && find native test/native bench \( -name '*.cpp' -o -name '*.cc' \) | sort)
  [ $CU = 1 ] && mapfile -t -O ${#FILES[@]} FILES < <(cd "$SRC" && find native -name '*.cu' | sort)
fi

check_one() {
  local f=$1 log=$LOGDIR/$(echo "$1" | tr / _).log dep=$LOGDIR/$(echo "$1" | tr / _).d
  local flags=("${COMMON[@]}")
  case $f in
    native/addon/*) flags+=("${NODE_INC[@]}" "${PCHFLAG[@]}") ;;
    native/*)       flags+=("${PCHFLAG[@]}") ;;
    test/native/*)  flags+=("${TEST_INC[@]}" "${PCHFLAG[@]}") ;;
    bench/*)        flags+=("${TEST_INC[@]}") ;;  # benchmarks have no precompiled header
  esac
  local rc
  if [[ $f == *.cu ]]; then
    # nvcc: CMake's CUDA flags for pirl_core (no PCH for CUDA TUs), sm_90, host code to syntax only
    local nv=(-std=$STD -arch=sm_90 --expt-relaxed-constexpr -Xcompiler -fopenmp -D_GLIBCXX_USE_CXX11_ABI=1
              "${TORCH_DEFS[@]}" -DPIRL_WITH_GLOO=$GLOO -DPIRL_WITH_CUDA -DUSE_C10D_NCCL -I"$SRC/native"
              "${TORCH_INC[@]}" -MD -MF "$dep" -Xcompiler -fsyntax-only -c -o /dev/null)
    (cd "$SRC" && flock /tmp/pirl-build.lock timeout 900 "$NVCC" "${nv[@]}" "$f") >"$log" 2>&1
    rc=$?
  else
    (cd "$SRC" && flock /tmp/pirl-build.lock timeout 900 "$CXX" "${flags[@]}" -MD -MF "$dep" "$f") >"$log" 2>&1
    rc=$?
  fi
  local status=OK
  [ $rc != 0 ] && status=FAIL
  local nerr; nerr=$(grep -c ' error: \| error #\|: fatal error:' "$log")
  if [ "$SET" != 113 ] && [ -f "$dep" ] && grep -qE '(^| )/usr/include/(ATen|c10|torch|caffe2)/' "$dep"; then
    status="$status+CONTAMINATED"
  fi
  printf '%-8s %3s errors  %s\n' "$status" "$nerr" "$f" | tee -a "$LOGDIR/summary.txt"
}
for f in "${FILES[@]}"; do check_one "$f"; done
echo "logs: $LOGDIR  ($(grep -c '^OK ' "$LOGDIR/summary.txt") ok, $(grep -vc '^OK ' "$LOGDIR/summary.txt") failing)"
