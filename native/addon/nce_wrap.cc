#include "nce_wrap.h"

#include <memory>
#include <mutex>

#include "../core/nce/nce.h"
#include "../core/pirl_loss.h"
#include "async_task.h"
#include "errors.h"
#include "memory_bank_wrap.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// d(loss)/d(input) of a loss computed on a detached leaf copy of `input`.
at::Tensor leaf(const at::Tensor& t) { return t.detach().requires_grad_(true); }

Napi::Value nceLoss(const Napi::CallbackInfo& info) {
  const at::Tensor x = TensorWrap::unwrap(info[0], "x");
  const at::Tensor bank = TensorWrap::unwrap(info[1], "bank");
  const at::Tensor positives = TensorWrap::unwrap(info[2], "positives");
  const at::Tensor negatives = TensorWrap::unwrap(info[3], "negatives");
  const nce::Options o{info[4].As<Napi::Number>().DoubleValue(),
                       nce::modeFromName(info[5].As<Napi::String>().Utf8Value()),
                       info[6].As<Napi::Number>().DoubleValue()};
  struct Out {
    nce::Result result;
    at::Tensor grad;
  };
  return AsyncTask<Out>::run(
      info.Env(), "pirl.nceLoss",
      [=] {
        at::Tensor input = leaf(x);
        nce::Result r = nce::nceLoss(input, bank, positives, negatives, o);
        r.loss.backward();
        return Out{r, input.grad()};
      },
      [](Napi::Env env, Out& out) -> Napi::Value {
        auto obj = Napi::Object::New(env);
        obj.Set("loss", out.result.loss.item<double>());
        obj.Set("zUsed", out.result.zUsed);
        obj.Set("zBatch", out.result.zBatch);
        obj.Set("grad", TensorWrap::wrap(env, out.grad));
        return obj;
      });
}

// Holds a PirlLoss; steps of one loss are serialised, since each reads and writes its Z.
struct PirlLossState {
  explicit PirlLossState(const PirlLossOptions& o) : loss(o) {}
  std::mutex mutex;
  PirlLoss loss;
};

class PirlLossWrap : public Napi::ObjectWrap<PirlLossWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "PirlLossHandle",
                                      {InstanceMethod<&PirlLossWrap::compute>("compute"),
                                       InstanceMethod<&PirlLossWrap::z>("z"), InstanceMethod<&PirlLossWrap::setZ>("setZ")});
    exports.Set("PirlLossHandle", ctor);
  }

  explicit PirlLossWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PirlLossWrap>(info) {
    if (info.Length() != 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "options must be an object");
    state_ = guarded(info.Env(), [&] { return std::make_shared<PirlLossState>(readPirlLossOptions(info[0].As<Napi::Object>())); });
  }

 private:
  Napi::Value compute(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto bank = MemoryBankWrap::unwrap(info[0], "bank");
      const at::Tensor f = TensorWrap::unwrap(info[1], "f");
      const at::Tensor g = TensorWrap::unwrap(info[2], "g");
      const at::Tensor indices = TensorWrap::unwrap(info[3], "indices");
      struct Out {
        PirlLossResult result;
        at::Tensor gradF, gradG;
      };
      auto state = state_;
      return AsyncTask<Out>::run(
          info.Env(), "pirl.pirlLoss",
          [=] {
            std::lock_guard<std::mutex> lock(state->mutex);
            at::Tensor lf = leaf(f), lg = leaf(g);
            PirlLossResult r = state->loss(*bank, lf, lg, indices);
            r.loss.backward();
            return Out{r, lf.grad(), lg.grad()};
          },
          [](Napi::Env env, Out& out) -> Napi::Value {
            auto obj = Napi::Object::New(env);
            obj.Set("loss", out.result.loss.item<double>());
            obj.Set("lossImage", out.result.lossImage.item<double>());
            obj.Set("lossJigsaw", out.result.lossJigsaw.item<double>());
            obj.Set("zImage", out.result.zImage);
            obj.Set("zJigsaw", out.result.zJigsaw);
            obj.Set("gradF", TensorWrap::wrap(env, out.gradF));
            obj.Set("gradG", TensorWrap::wrap(env, out.gradG));
            return obj;
          });
    });
  }

  Napi::Value z(const Napi::CallbackInfo& info) {
    std::lock_guard<std::mutex> lock(state_->mutex);
    auto out = Napi::Object::New(info.Env());
    out.Set("image", state_->loss.zImage());
    out.Set("jigsaw", state_->loss.zJigsaw());
    return out;
  }

  Napi::Value setZ(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->loss.setZ(info[0].As<Napi::Number>().DoubleValue(), info[1].As<Napi::Number>().DoubleValue());
      return info.Env().Undefined();
    });
  }

  std::shared_ptr<PirlLossState> state_;
};

}  // namespace

PirlLossOptions readPirlLossOptions(const Napi::Object& o) {
  PirlLossOptions options;
  options.lambda = o.Get("lambda").As<Napi::Number>().DoubleValue();
  options.tau = o.Get("tau").As<Napi::Number>().DoubleValue();
  options.numNegatives = o.Get("negatives").As<Napi::Number>().Int64Value();
  options.momentum = o.Get("momentum").As<Napi::Number>().DoubleValue();
  options.mode = nce::modeFromName(o.Get("mode").As<Napi::String>().Utf8Value());
  options.zMode = o.Get("z").As<Napi::String>().Utf8Value() == "ema" ? ZMode::Ema : ZMode::Frozen;
  options.zMomentum = o.Get("zMomentum").As<Napi::Number>().DoubleValue();
  options.sharedNegatives = o.Get("sharedNegatives").As<Napi::Boolean>().Value();
  options.excludePositive = o.Get("excludePositive").As<Napi::Boolean>().Value();
  return options;
}

void registerNce(Napi::Env env, Napi::Object exports) {
  exports.Set("nceLoss", Napi::Function::New<binding<nceLoss>>(env, "nceLoss"));
  PirlLossWrap::Init(env, exports);
}

}  // namespace pirl::addon
