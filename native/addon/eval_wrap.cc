#include "eval_wrap.h"

#include "../core/eval/knn.h"
#include "../core/eval/linear_probe.h"
#include "async_task.h"
#include "errors.h"
#include "options.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

Napi::Value knnPredict(const Napi::CallbackInfo& info) {
  const at::Tensor train = TensorWrap::unwrap(info[0], "trainFeatures");
  const at::Tensor labels = TensorWrap::unwrap(info[1], "trainLabels");
  const at::Tensor test = TensorWrap::unwrap(info[2], "testFeatures");
  const int64_t k = AsInt64(info[3], "k");
  const double tau = AsDouble(info[4], "tau");
  const int64_t classes = AsInt64(info[5], "numClasses");
  return AsyncTask<at::Tensor>::run(
      info.Env(), "pirl.knn", [=] { return eval::knnPredict(train, labels, test, k, tau, classes); },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorWrap::wrap(env, t); });
}

Napi::Value nearestNeighbours(const Napi::CallbackInfo& info) {
  const at::Tensor features = TensorWrap::unwrap(info[0], "features");
  const at::Tensor queries = TensorWrap::unwrap(info[1], "queries");
  const int64_t k = AsInt64(info[2], "k");
  return AsyncTask<eval::Neighbours>::run(
      info.Env(), "pirl.nearestNeighbours", [=] { return eval::nearestNeighbours(features, queries, k); },
      [](Napi::Env env, eval::Neighbours& n) -> Napi::Value {
        return TensorWrap::wrapAll(env, {{"similarity", n.similarity}, {"index", n.index}});
      });
}

Napi::Value linearProbe(const Napi::CallbackInfo& info) {
  const at::Tensor train = TensorWrap::unwrap(info[0], "trainFeatures");
  const at::Tensor trainLabels = TensorWrap::unwrap(info[1], "trainLabels");
  const at::Tensor test = TensorWrap::unwrap(info[2], "testFeatures");
  const at::Tensor testLabels = TensorWrap::unwrap(info[3], "testLabels");
  const int64_t classes = AsInt64(info[4], "numClasses");
  const Napi::Object o = AsObject(info[5], "options");
  const eval::LinearProbeOptions options{AttrAsInt64(o, "epochs", "options"), AttrAsInt64(o, "batchSize", "options"),
                                         AttrAsDouble(o, "lr", "options"), AttrAsDouble(o, "weightDecay", "options"),
                                         static_cast<uint64_t>(AttrAsInt64(o, "seed", "options"))};
  return AsyncTask<double>::run(
      info.Env(), "pirl.linearProbe",
      [=] { return eval::linearProbeAccuracy(train, trainLabels, test, testLabels, classes, options); },
      [](Napi::Env env, double& accuracy) -> Napi::Value { return Napi::Number::New(env, accuracy); });
}

}  // namespace

void registerEval(Napi::Env env, Napi::Object exports) {
  exports.Set("knnPredict", Napi::Function::New<binding<knnPredict>>(env, "knnPredict"));
  exports.Set("nearestNeighbours", Napi::Function::New<binding<nearestNeighbours>>(env, "nearestNeighbours"));
  exports.Set("linearProbe", Napi::Function::New<binding<linearProbe>>(env, "linearProbe"));
}

}  // namespace pirl::addon
