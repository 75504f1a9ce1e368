// Features that hold NaN or infinity give meaningless evaluations without a word (topk ranks NaN first; SGD
// turns one NaN row into NaN weights), and images give NaN embeddings: refused, naming the first such row.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

namespace pirl::eval {

// `t` is N×…; `item` names what one of its N is (a row, an image).
inline void checkFinite(const at::Tensor& t, const char* name, const char* item = "row") {
  const at::Tensor bad = at::isfinite(t).flatten(1).all(1).logical_not().nonzero().cpu();
  TORCH_CHECK_VALUE(bad.size(0) == 0, name, " must be finite: ", item, " ", bad.size(0) > 0 ? bad[0][0].item<int64_t>() : 0,
                    " holds NaN or infinity (", bad.size(0), " ", item, "(s) of ", t.size(0), ")");
}

}  // namespace pirl::eval
