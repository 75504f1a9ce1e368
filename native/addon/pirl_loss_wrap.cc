#include "pirl_loss_wrap.h"

#include <atomic>
#include <memory>
#include <mutex>
#include <stdexcept>

#include "async_task.h"
#include "errors.h"
#include "memory_bank_wrap.h"
#include "nce_wrap.h"
#include "options.h"
#include "scalars.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// Holds a PirlLoss; steps of one loss are serialised, since each reads and writes its Z.
struct PirlLossState {
  explicit PirlLossState(const PirlLossOptions& o) : loss(o) { settle(); }
  std::mutex mutex;
  PirlLoss loss;
  // compute() calls made and not yet ended: a setZ then would change the Z one of them uses.
  std::atomic<int> computing{0};
  // Z as the last compute or setZ left it, read without `mutex` (a compute holds it for its whole step).
  std::atomic<double> zImage{0}, zJigsaw{0};
  void settle() {
    zImage = loss.zImage();
    zJigsaw = loss.zJigsaw();
  }
};

// Counts a compute() from its call to its end (held by the call, dropped when its promise settles).
struct Computing {
  explicit Computing(std::shared_ptr<PirlLossState> s) : state(std::move(s)) { ++state->computing; }
  ~Computing() { --state->computing; }
  std::shared_ptr<PirlLossState> state;
  std::shared_ptr<MemoryBank::Use> use;  // the bank's, for as long
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
    state_ = guarded(info.Env(), [&] { return std::make_shared<PirlLossState>(readPirlLossOptions(info[0], "options")); });
  }

 private:
  Napi::Value compute(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      auto bank = MemoryBankWrap::unwrap(info[0], "bank");
      const at::Tensor f = TensorWrap::unwrap(info[1], "f");
      const at::Tensor g = TensorWrap::unwrap(info[2], "g");
      const at::Tensor indices = TensorWrap::unwrap(info[3], "indices");
      struct Out {
        std::vector<double> losses;  // loss, lossImage, lossJigsaw
        double zImage, zJigsaw;
        at::Tensor gradF, gradG;
      };
      auto state = state_;
      auto held = std::make_shared<Computing>(state);
      held->use = std::make_shared<MemoryBank::Use>(bank, MemoryBank::Use::Kind::Write, "PirlLoss.compute()");  // from this call on: see MemoryBank::Use
      return AsyncTask<Out>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(state->mutex);
            at::Tensor lf = gradientLeaf(f), lg = gradientLeaf(g);
            PirlLossResult r = state->loss(*bank, lf, lg, indices, IndexCheck::Check, /*updateBank=*/true);
            r.loss.backward();
            // An EMA's estimates of Z are read with the losses: one read of the device.
            const bool ema = r.zEstimates.defined();
            std::vector<double> read = ema ? readScalars({r.loss, r.lossImage, r.lossJigsaw, r.zEstimates})
                                           : readScalars({r.loss, r.lossImage, r.lossJigsaw});
            if (ema) state->loss.updateZ(read[3], read[4]);
            state->settle();
            read.resize(3);
            return Out{read, state->loss.zImage(), state->loss.zJigsaw(), lf.grad(), lg.grad()};
          },
          [](Napi::Env env, Out& out) -> Napi::Value {
            auto obj = Napi::Object::New(env);
            obj.Set("loss", out.losses[0]);
            obj.Set("lossImage", out.losses[1]);
            obj.Set("lossJigsaw", out.losses[2]);
            obj.Set("zImage", out.zImage);
            obj.Set("zJigsaw", out.zJigsaw);
            obj.Set("gradF", TensorWrap::wrap(env, std::move(out.gradF)));
            obj.Set("gradG", TensorWrap::wrap(env, std::move(out.gradG)));
            return obj;
          },
          nullptr, held);
    });
  }

  // Never waits for a compute in progress (it held the event loop for the whole step): the Z the last one left.
  Napi::Value z(const Napi::CallbackInfo& info) {
    auto out = Napi::Object::New(info.Env());
    out.Set("image", state_->zImage.load());
    out.Set("jigsaw", state_->zJigsaw.load());
    return out;
  }

  Napi::Value setZ(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const double image = AsDouble(info[0], "z.image"), jigsaw = AsDouble(info[1], "z.jigsaw");
      if (state_->computing > 0) {
        throw std::logic_error("loss.z cannot be set while a compute() is in progress (it would change the Z that step uses): await it first");
      }
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->loss.setZ(image, jigsaw);
      state_->settle();
      return info.Env().Undefined();
    });
  }

  std::shared_ptr<PirlLossState> state_;
};

}  // namespace

PirlLossOptions readPirlLossOptions(Napi::Value value, const std::string& name) {
  const Napi::Object o = AsObject(value, name);
  return {AttrAsDouble(o, "lambda", name),
          AttrAsDouble(o, "tau", name),
          AttrAsInt64(o, "negatives", name),
          AttrAsDouble(o, "momentum", name),
          AttrAsEnum(o, "mode", name, kNceModeNames),
          AttrAsEnum(o, "z", name, kZModeNames),
          AttrAsDouble(o, "zMomentum", name),
          AttrAsBool(o, "sharedNegatives", name),
          AttrAsBool(o, "excludePositive", name)};
}

void registerPirlLoss(Napi::Env env, Napi::Object exports) { PirlLossWrap::Init(env, exports); }

}  // namespace pirl::addon
