#include "eval_wrap.h"

#include "../core/eval/knn.h"
#include "../core/eval/linear_probe.h"
#include "../core/stop_flag.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "handle.h"
#include "options.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// new StopHandle(): what an AbortSignal's listener requests (request()) of the work it was given to, on the JavaScript
// thread; the work reads it between its pieces.
class StopWrap : public Napi::ObjectWrap<StopWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "StopHandle", {InstanceMethod<&StopWrap::request>("request")});
    EnvState::of(env)->stopConstructor = Napi::Persistent(ctor);
    exports.Set("StopHandle", ctor);
  }

  explicit StopWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<StopWrap>(info), flag_(std::make_shared<StopFlag>()) {}

  // The flag of argument `value` (a StopHandle, or null: none), held by the work as long as it runs.
  static std::shared_ptr<StopFlag> of(Napi::Value value) {
    if (value.IsNull() || value.IsUndefined()) return nullptr;
    return unwrapHandle<StopWrap>(value, EnvState::of(value.Env())->stopConstructor, "stop", "StopHandle")->flag_;
  }

  Napi::Value request(const Napi::CallbackInfo& info) {
    flag_->request();
    return info.Env().Undefined();
  }

 private:
  std::shared_ptr<StopFlag> flag_;
};

Napi::Value knnPredict(const Napi::CallbackInfo& info) {
  const at::Tensor train = TensorWrap::unwrap(info[0], "trainFeatures");
  const at::Tensor labels = TensorWrap::unwrap(info[1], "trainLabels");
  const at::Tensor test = TensorWrap::unwrap(info[2], "testFeatures");
  const int64_t k = AsInt64(info[3], "k");
  const double tau = AsDouble(info[4], "tau");
  const int64_t classes = AsInt64(info[5], "numClasses");
  const std::shared_ptr<StopFlag> stop = StopWrap::of(info[6]);
  return AsyncTask<at::Tensor>::run(
      info.Env(), [=] { return eval::knnPredict(train, labels, test, k, tau, classes, eval::kQueryChunk, stop.get()); },
      tensorToJs);
}

Napi::Value nearestNeighbours(const Napi::CallbackInfo& info) {
  const at::Tensor features = TensorWrap::unwrap(info[0], "features");
  const at::Tensor queries = TensorWrap::unwrap(info[1], "queries");
  const int64_t k = AsInt64(info[2], "k");
  const std::shared_ptr<StopFlag> stop = StopWrap::of(info[3]);
  return AsyncTask<eval::Neighbours>::run(
      info.Env(), [=] { return eval::nearestNeighbours(features, queries, k, eval::kQueryChunk, stop.get()); },
      [](Napi::Env env, eval::Neighbours& n) -> Napi::Value {
        return TensorWrap::wrapAll(env, {{"similarity", n.similarity}, {"index", n.index}});
      });
}

// linearProbeFit(features, labels, numClasses, { epochs, batchSize, lr, weightDecay, seed }, stop) → { mean, std, weight, bias }
Napi::Value linearProbeFit(const Napi::CallbackInfo& info) {
  const at::Tensor features = TensorWrap::unwrap(info[0], "features");
  const at::Tensor labels = TensorWrap::unwrap(info[1], "labels");
  const int64_t classes = AsInt64(info[2], "numClasses");
  const Napi::Object o = AsObject(info[3], "options");
  const eval::LinearProbeOptions options{AttrAsInt64(o, "epochs", "options"), AttrAsInt64(o, "batchSize", "options"),
                                         AttrAsDouble(o, "lr", "options"), AttrAsDouble(o, "weightDecay", "options"),
                                         static_cast<uint64_t>(AttrAsInt64(o, "seed", "options"))};
  const std::shared_ptr<StopFlag> stop = StopWrap::of(info[4]);
  return AsyncTask<eval::LinearClassifier>::run(
      info.Env(),
      [=] {
        eval::LinearProbeOptions stoppable = options;
        stoppable.stop = stop.get();
        return eval::trainLinearProbe(features, labels, classes, stoppable);
      },
      [](Napi::Env env, eval::LinearClassifier& p) -> Napi::Value {
        return TensorWrap::wrapAll(env, {{"mean", p.mean}, {"std", p.std}, {"weight", p.weight}, {"bias", p.bias}});
      });
}

// linearProbePredict(mean, std, weight, bias, features) → int64 labels
Napi::Value linearProbePredict(const Napi::CallbackInfo& info) {
  const eval::LinearClassifier probe{TensorWrap::unwrap(info[0], "mean"), TensorWrap::unwrap(info[1], "std"),
                                     TensorWrap::unwrap(info[2], "weight"), TensorWrap::unwrap(info[3], "bias")};
  const at::Tensor features = TensorWrap::unwrap(info[4], "features");
  return AsyncTask<at::Tensor>::run(
      info.Env(), [=] { return eval::predictLinear(probe, features); },
      tensorToJs);
}

}  // namespace

void registerEval(Napi::Env env, Napi::Object exports) {
  StopWrap::Init(env, exports);
  exports.Set("knnPredict", Napi::Function::New<binding<knnPredict>>(env, "knnPredict"));
  exports.Set("nearestNeighbours", Napi::Function::New<binding<nearestNeighbours>>(env, "nearestNeighbours"));
  exports.Set("linearProbeFit", Napi::Function::New<binding<linearProbeFit>>(env, "linearProbeFit"));
  exports.Set("linearProbePredict", Napi::Function::New<binding<linearProbePredict>>(env, "linearProbePredict"));
}

}  // namespace pirl::addon
