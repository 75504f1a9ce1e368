#!/usr/bin/env bash
# Downloads the libtorch 2.x header sets that check.sh compiles pirl against, from Debian's archive,
# through a private apt configuration (the system's sources, lists and dpkg state are untouched; nothing
# is installed, the .debs are only unpacked). Into $PIRL_TORCH_HEADERS (default ~/.cache/pirl/torch-headers):
#   deb-2.14/      libtorch-dev (sid/main; 2.14.1 when written): a CPU build's complete headers, generated
#                  ATen ops, c10/cuda, ATen/cuda and c10d (Gloo, NCCL) included
#   deb-2.6-cuda/  libtorch-cuda-dev (sid/contrib; 2.6.0): a CUDA build's headers (USE_C10D_NCCL etc.)
#   gloo-sid/      libgloo-dev from sid (the Gloo those were built against)
#   nccl-sid/      libnccl-dev from sid (contrib): nccl.h, for ProcessGroupNCCL
#   generated/     c10/cuda/impl/cuda_cmake_macros.h (a CPU build does not generate it), and declarations-only
#                  stand-ins for the cuBLAS/cuSPARSE/cuSOLVER headers that ATen/cuda/CUDAContext.h includes
#                  (a CUDA toolkit without those libraries, like nvcc's package here, lacks them)
# Versions: whatever sid has now; TORCH_214_VERSION / TORCH_CUDA_VERSION pin them (apt syntax).
set -eu
DATA=${PIRL_TORCH_HEADERS:-$HOME/.cache/pirl/torch-headers}
A=$DATA/apt
mkdir -p "$A"/lists/partial "$A"/cache/archives/partial "$A"/etc "$DATA/debs"
echo 'deb http://deb.debian.org/debian sid main contrib' >"$A/etc/sources.list"
cat >"$A/apt.conf" <<CONF
Dir::Etc::sourcelist "$A/etc/sources.list";
Dir::Etc::sourceparts "/nonexistent";
Dir::State::lists "$A/lists";
Dir::Cache "$A/cache";
Dir::State::status "/var/lib/dpkg/status";
APT::Get::List-Cleanup "0";
CONF
export APT_CONFIG=$A/apt.conf
apt-get update -qq
cd "$DATA/debs"
rm -f ./*.deb
apt-get download -qq "libtorch-dev${TORCH_214_VERSION:+=$TORCH_214_VERSION}" \
  "libtorch-cuda-dev${TORCH_CUDA_VERSION:+=$TORCH_CUDA_VERSION}" libgloo-dev libnccl-dev 2>&1 |
  grep -v '^W: Download is performed unsandboxed' || true
rm -rf "$DATA/deb-2.14" "$DATA/deb-2.6-cuda" "$DATA/gloo-sid" "$DATA/nccl-sid" "$DATA/generated"
dpkg-deb -x libtorch-dev_*.deb "$DATA/deb-2.14"
dpkg-deb -x libtorch-cuda-dev_*.deb "$DATA/deb-2.6-cuda"
dpkg-deb -x libgloo-dev_*.deb "$DATA/gloo-sid"
dpkg-deb -x libnccl-dev_*.deb "$DATA/nccl-sid"
G=$DATA/generated
mkdir -p "$G/c10/cuda/impl" "$G/cuda-libraries"
# A CUDA build of libtorch generates this from cuda_cmake_macros.h.in; pip's builds configure it so.
echo '#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS' >"$G/c10/cuda/impl/cuda_cmake_macros.h"
stub() { printf '#pragma once\n// Declarations only, for a syntax check: the real header comes with the CUDA toolkit.\n%s\n' "$2" >"$G/cuda-libraries/$1"; }
stub cusparse.h 'typedef struct cusparseContext* cusparseHandle_t;
typedef int cusparseStatus_t;
#define CUSPARSE_STATUS_SUCCESS 0'
stub cublas_v2.h 'typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;
typedef int cublasOperation_t;
#define CUBLAS_STATUS_SUCCESS 0'
stub cublasLt.h 'typedef struct cublasLtContext* cublasLtHandle_t;'
stub cusolverDn.h 'typedef struct cusolverDnContext* cusolverDnHandle_t;'
stub cusolver_common.h 'typedef int cusolverStatus_t;
#define CUSOLVER_STATUS_SUCCESS 0
#define CUSOLVER_STATUS_EXECUTION_FAILED 1
#define CUSOLVER_STATUS_INVALID_VALUE 2'
for d in deb-2.14 deb-2.6-cuda; do
  printf '%s: libtorch %s\n' "$d" "$(grep -h -A1 'define TORCH_VERSION ' "$DATA/$d"/usr/include/torch/csrc/api/include/torch/version.h \
    "$DATA/$d"/usr/include/torch/headeronly/version.h 2>/dev/null | grep -o '"[0-9.]*"' | head -1)"
done
