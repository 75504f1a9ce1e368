#include "heads.h"

#include "../unit_rows.h"

namespace pirl::model {

FHeadImpl::FHeadImpl(int64_t featureDim, int64_t embeddingDim)
    : fc(register_module("fc", torch::nn::Linear(featureDim, embeddingDim))) {}

at::Tensor FHeadImpl::forward(const at::Tensor& pooled) { return unitRows(fc(pooled)); }

GHeadImpl::GHeadImpl(int64_t featureDim, int64_t embeddingDim)
    : patch(register_module("patch", torch::nn::Linear(featureDim, embeddingDim))),
      fc(register_module("fc", torch::nn::Linear(kJigsawPatches * embeddingDim, embeddingDim))) {}

at::Tensor GHeadImpl::forward(const at::Tensor& pooledPatches) {
  const int64_t batch = pooledPatches.size(0) / kJigsawPatches;
  return unitRows(fc(patch(pooledPatches).reshape({batch, -1})));
}

}  // namespace pirl::model
