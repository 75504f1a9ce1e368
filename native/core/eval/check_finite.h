// Features that hold NaN or infinity give meaningless evaluations without a word (topk ranks NaN first; SGD
// turns one NaN row into NaN weights): refused, naming the first such row.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace pirl::eval {

inline void checkFinite(const at::Tensor& rows, const char* name) {
  const at::Tensor bad = at::isfinite(rows).all(1).logical_not().nonzero().cpu();
  TORCH_CHECK_VALUE(bad.size(0) == 0, name, " must be finite: row ", bad.size(0) > 0 ? bad[0][0].item<int64_t>() : 0,
                    " holds NaN or infinity (", bad.size(0), " row(s) of ", rows.size(0), ")");
}

}  // namespace pirl::eval
