#include "train_wrap.h"

#include <memory>

#include "../core/eval/knn.h"
#include "../core/eval/linear_probe.h"
#include "../core/train/train_state.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "memory_bank_wrap.h"
#include "model_wrap.h"
#include "nce_wrap.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// A trainer holds the model's state (and locks its mutex while it steps) and the bank.
struct TrainerState {
  std::shared_ptr<ModelState> model;
  std::unique_ptr<train::TrainState> train;
};

class TrainerWrap : public Napi::ObjectWrap<TrainerWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    exports.Set("TrainerHandle", DefineClass(env, "TrainerHandle",
                                             {InstanceMethod<&TrainerWrap::step>("step"),
                                              InstanceMethod<&TrainerWrap::state>("state"),
                                              InstanceMethod<&TrainerWrap::setState>("setState")}));
  }

  // new TrainerHandle(model, bank, lossOptions, { momentum, weightDecay })
  explicit TrainerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TrainerWrap>(info) {
    guarded(info.Env(), [&] {
      auto model = unwrapModel(info[0], "model");
      auto bank = MemoryBankWrap::unwrap(info[1], "bank");
      const PirlLossOptions loss = readPirlLossOptions(info[2].As<Napi::Object>());
      const Napi::Object sgd = info[3].As<Napi::Object>();
      const train::SgdOptions sgdOptions{sgd.Get("momentum").As<Napi::Number>().DoubleValue(),
                                         sgd.Get("weightDecay").As<Napi::Number>().DoubleValue()};
      std::lock_guard<std::mutex> lock(model->mutex);
      state_ = std::make_shared<TrainerState>();
      state_->model = model;
      state_->train = std::make_unique<train::TrainState>(model->model, bank, loss, sgdOptions);
      return 0;
    });
  }

 private:
  Napi::Value step(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const at::Tensor images = TensorWrap::unwrap(info[0], "images");
      const at::Tensor patches = TensorWrap::unwrap(info[1], "patches");
      const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
      const double lr = info[3].As<Napi::Number>().DoubleValue();
      auto s = state_;
      return AsyncTask<train::StepResult>::run(
          info.Env(), "pirl.train.step",
          [=] {
            std::lock_guard<std::mutex> lock(s->model->mutex);
            const c10::Device device = s->model->device;
            return s->train->step(images.to(device), patches.to(device), indices.to(device), lr);
          },
          [](Napi::Env env, train::StepResult& r) -> Napi::Value {
            auto out = Napi::Object::New(env);
            out.Set("loss", r.loss);
            out.Set("lossImage", r.lossImage);
            out.Set("lossJigsaw", r.lossJigsaw);
            out.Set("gradNorm", r.gradNorm);
            return out;
          });
    });
  }

  // { zImage, zJigsaw, momentum: { names, tensors } } for a checkpoint.
  Napi::Value state(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::lock_guard<std::mutex> lock(state_->model->mutex);
    auto out = Napi::Object::New(env);
    out.Set("zImage", state_->train->loss().zImage());
    out.Set("zJigsaw", state_->train->loss().zJigsaw());
    const auto& buffers = state_->train->sgd().momentumBuffers();
    auto names = Napi::Array::New(env), tensors = Napi::Array::New(env);
    uint32_t i = 0;
    for (const auto& [name, buffer] : buffers) {
      names.Set(i, name);
      tensors.Set(i++, TensorWrap::wrap(env, buffer.to(at::kCPU).clone()));
    }
    auto momentum = Napi::Object::New(env);
    momentum.Set("names", names);
    momentum.Set("tensors", tensors);
    out.Set("momentum", momentum);
    return out;
  }

  Napi::Value setState(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const double zImage = info[0].As<Napi::Number>().DoubleValue(), zJigsaw = info[1].As<Napi::Number>().DoubleValue();
      auto names = info[2].As<Napi::Array>();
      auto tensors = info[3].As<Napi::Array>();
      std::map<std::string, at::Tensor> buffers;
      for (uint32_t i = 0; i < names.Length(); ++i) {
        const std::string name = names.Get(i).As<Napi::String>().Utf8Value();
        buffers.emplace(name, TensorWrap::unwrap(tensors.Get(i), "momentum '" + name + "'"));
      }
      std::lock_guard<std::mutex> lock(state_->model->mutex);
      state_->train->sgd().setMomentumBuffers(buffers);
      state_->train->loss().setZ(zImage, zJigsaw);
      return info.Env().Undefined();
    });
  }

  std::shared_ptr<TrainerState> state_;
};

Napi::Value knnPredict(const Napi::CallbackInfo& info) {
  const at::Tensor train = TensorWrap::unwrap(info[0], "trainFeatures");
  const at::Tensor labels = TensorWrap::unwrap(info[1], "trainLabels");
  const at::Tensor test = TensorWrap::unwrap(info[2], "testFeatures");
  const int64_t k = info[3].As<Napi::Number>().Int64Value();
  const double tau = info[4].As<Napi::Number>().DoubleValue();
  const int64_t classes = info[5].As<Napi::Number>().Int64Value();
  return AsyncTask<at::Tensor>::run(
      info.Env(), "pirl.knn", [=] { return eval::knnPredict(train, labels, test, k, tau, classes); },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorWrap::wrap(env, t); });
}

Napi::Value nearestNeighbours(const Napi::CallbackInfo& info) {
  const at::Tensor features = TensorWrap::unwrap(info[0], "features");
  const at::Tensor queries = TensorWrap::unwrap(info[1], "queries");
  const int64_t k = info[2].As<Napi::Number>().Int64Value();
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
  const int64_t classes = info[4].As<Napi::Number>().Int64Value();
  const Napi::Object o = info[5].As<Napi::Object>();
  eval::LinearProbeOptions options;
  options.epochs = o.Get("epochs").As<Napi::Number>().Int64Value();
  options.batchSize = o.Get("batchSize").As<Napi::Number>().Int64Value();
  options.lr = o.Get("lr").As<Napi::Number>().DoubleValue();
  options.weightDecay = o.Get("weightDecay").As<Napi::Number>().DoubleValue();
  options.seed = static_cast<uint64_t>(o.Get("seed").As<Napi::Number>().Int64Value());
  return AsyncTask<double>::run(
      info.Env(), "pirl.linearProbe",
      [=] { return eval::linearProbeAccuracy(train, trainLabels, test, testLabels, classes, options); },
      [](Napi::Env env, double& accuracy) -> Napi::Value { return Napi::Number::New(env, accuracy); });
}

}  // namespace

void registerTrain(Napi::Env env, Napi::Object exports) {
  TrainerWrap::Init(env, exports);
  exports.Set("knnPredict", Napi::Function::New<binding<knnPredict>>(env, "knnPredict"));
  exports.Set("nearestNeighbours", Napi::Function::New<binding<nearestNeighbours>>(env, "nearestNeighbours"));
  exports.Set("linearProbe", Napi::Function::New<binding<linearProbe>>(env, "linearProbe"));
}

}  // namespace pirl::addon
