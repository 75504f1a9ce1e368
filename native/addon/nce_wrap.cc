#include "nce_wrap.h"

#include "../core/nce/nce.h"
#include "async_task.h"
#include "errors.h"
#include "memory_bank_wrap.h"
#include "options.h"
#include "scalars.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// nceLoss(x, bank, positives, negatives, tau, mode, z, memoryBank): `bank` the rows, of `memoryBank` (or null) if given
Napi::Value nceLoss(const Napi::CallbackInfo& info) {
  const at::Tensor x = TensorWrap::unwrap(info[0], "x");
  const at::Tensor bank = TensorWrap::unwrap(info[1], "bank");
  const at::Tensor positives = TensorWrap::unwrap(info[2], "positives");
  const at::Tensor negatives = TensorWrap::unwrap(info[3], "negatives");
  const nce::Options o{AsDouble(info[4], "tau"), AsEnum(info[5], "mode", kNceModeNames), AsDouble(info[6], "z")};
  // Its rows are read in place: a write on the bank meanwhile is refused (MemoryBank::Use).
  auto use = info[7].IsNull() ? nullptr
                              : std::make_shared<MemoryBank::Use>(MemoryBankWrap::unwrap(info[7], "bank"), MemoryBank::Use::Kind::Read, "nceLoss()");
  struct Out {
    std::vector<double> scalars;  // loss, zUsed, zBatch
    at::Tensor grad;
  };
  return AsyncTask<Out>::run(
      info.Env(), [=] {
        at::Tensor input = gradientLeaf(x);
        nce::Result r = nce::nceLoss(input, bank, positives, negatives, o, IndexCheck::Check, use ? nce::BankRows::Unit : nce::BankRows::Check);
        r.loss.backward();
        return Out{readScalars({r.loss, r.zUsed, r.zBatch}), input.grad()};
      },
      [](Napi::Env env, Out& out) -> Napi::Value {
        auto obj = Napi::Object::New(env);
        obj.Set("loss", out.scalars[0]);
        obj.Set("zUsed", out.scalars[1]);
        obj.Set("zBatch", out.scalars[2]);
        obj.Set("grad", TensorWrap::wrap(env, std::move(out.grad)));
        return obj;
      },
      nullptr, use);
}

}  // namespace

void registerNce(Napi::Env env, Napi::Object exports) {
  exports.Set("nceLoss", Napi::Function::New<binding<nceLoss>>(env, "nceLoss"));
}

}  // namespace pirl::addon
