#include "model_wrap.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "../core/eval/check_finite.h"
#include "../core/model/pirl_model.h"
#include "../core/model/state_dict.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "external_memory.h"
#include "handle.h"
#include "options.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

double parameterCount(const torch::nn::Module& m) {
  double n = 0;
  for (const auto& p : m.parameters()) n += static_cast<double>(p.numel());
  return n;
}

int64_t bytesOf(const std::vector<at::Tensor>& tensors) {
  int64_t n = 0;
  for (const auto& t : tensors) n += static_cast<int64_t>(t.nbytes());
  return n;
}

bool allFinite(const at::Tensor& t) { return at::isfinite(t).all().item<bool>(); }

// Finite inputs can still give non-finite results: the weights hold NaN or huge values (a diverged run's), or the
// inputs lie far outside the normalised range (1e38 overflows the convolutions). Said of which, not found by a kNN.
void checkResultFinite(const model::PirlModelImpl& model, const at::Tensor& result, const at::Tensor& input, const char* inputName,
                       const char* what) {
  if (allFinite(result)) return;
  const model::WeightExtremes w = model.weightExtremes(/*statistics=*/true);  // a refused training pass has put them back
  TORCH_CHECK_VALUE(w.firstNonFinite.empty(), "the model's weights or BatchNorm statistics hold NaN or infinity (", w.firstNonFinite,
                    " first), so its ", what, " do too: load weights from before the run diverged");
  // Inputs past 10^4 are blamed first: overflowing weights are the rarer cause.
  const double largest = input.abs().max().item<double>();
  TORCH_CHECK_VALUE(largest <= model::kOverflowing, inputName, " gave ", what, " of NaN or infinity: their values reach ", largest,
                    ", which overflow float32 activations; the model takes normalised images (per channel mean 0 and "
                    "standard deviation 1, as the Loader's and embedImages' are)");
  TORCH_CHECK_VALUE(false, inputName, " (values within ±", largest, ") gave ", what, " of NaN or infinity: the model's activations overflow ",
                    "float32 (its largest weight: ", w.largestValue, ", in ", w.largest, "); load weights from before the run diverged");
}

ModelState::Facts factsOf(const model::PirlModel& m) {
  return {parameterCount(*m->trunk), parameterCount(*m->fHead), parameterCount(*m->gHead), parameterCount(*m),
          m->trunk->featureDim(), bytesOf(m->parameters()), bytesOf(m->buffers())};
}

}  // namespace

ModelState::ModelState(const model::PirlModelOptions& o) : model(o), facts(factsOf(model)), device_(model->device()) {}

c10::Device ModelState::device() const {
  std::lock_guard<std::mutex> lock(deviceMutex_);
  return device_;
}

void ModelState::movedTo(c10::Device device) {
  std::lock_guard<std::mutex> lock(deviceMutex_);
  device_ = device;
}

namespace {

using model::EmbedLayer;
using model::PirlModel;
using model::PirlModelOptions;

PirlModelOptions readOptions(const Napi::Object& o, const std::string& name) {
  return {{AttrAsEnum(o, "arch", name, kArchNames), AttrAsEnum(o, "stem", name, kStemNames),
           AttrAsDouble(o, "width", name)},
          AttrAsInt64(o, "embeddingDim", name),
          AttrAsBool(o, "channelsLast", name),
          AttrAsBool(o, "patchRunningStats", name)};
}

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    Napi::Function ctor = DefineClass(env, "PirlModelHandle",
                                      {
                                          InstanceMethod<&ModelWrap::forward>("forward"),
                                          InstanceMethod<&ModelWrap::embed>("embed"),
                                          InstanceMethod<&ModelWrap::setTraining>("setTraining"),
                                          InstanceMethod<&ModelWrap::isTraining>("isTraining"),
                                          InstanceMethod<&ModelWrap::info>("info"),
                                          InstanceMethod<&ModelWrap::stateDict>("stateDict"),
                                          InstanceMethod<&ModelWrap::loadStateDict>("loadStateDict"),
                                          InstanceMethod<&ModelWrap::to>("to"),
                                          InstanceMethod<&ModelWrap::dispose>("dispose"),
                                          InstanceMethod<&ModelWrap::retain>("retain"),
                                          InstanceMethod<&ModelWrap::disposed>("disposed"),
                                      });
    EnvState::of(env)->modelConstructor = Napi::Persistent(ctor);
    exports.Set("PirlModelHandle", ctor);
  }

  static std::shared_ptr<ModelState> unwrap(Napi::Value value, const std::string& arg) {
    return unwrapHandle<ModelWrap>(value, EnvState::of(value.Env())->modelConstructor, arg, "PirlModel")->live(arg);
  }

  // `counted`: the handle reports the model's memory (a retained one does not: collecting it frees nothing).
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<ModelState> state, bool counted) {
    Napi::Object object = newHandle(env, EnvState::of(env)->modelConstructor);
    ModelWrap* self = Unwrap(object);
    if (counted) self->accounted_.account(env, state->facts.parameterBytes + state->facts.bufferBytes);
    self->state_ = std::move(state);
    return object;
  }

  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    refuseJavaScriptConstruction(info, "PirlModelHandle", "PirlModel.create()");
  }

 private:
  Napi::Value forward(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const at::Tensor images = TensorWrap::unwrap(info[0], "images");
      const at::Tensor patches = TensorWrap::unwrap(info[1], "patches");
      auto s = live();
      return AsyncTask<model::Embeddings>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->mutex);
            torch::NoGradGuard noGrad;  // JavaScript gets values; training steps run natively
            eval::checkFinite(images, "images", "image");  // else NaN embeddings, the whole batch's in training mode
            eval::checkFinite(patches, "patches", "sample");
            const c10::Device device = s->model->device();
            // A training-mode pass moves BatchNorm's running statistics: kept, to be put back if its results are refused.
            std::vector<at::Tensor> before;
            if (s->model->is_training()) {
              for (const at::Tensor& b : s->model->buffers()) before.push_back(b.clone());
            }
            model::Embeddings e = s->model->forward(images.to(device), patches.to(device));
            const bool statisticsFinite = before.empty() || s->model->statisticsFinite().item<bool>();
            if (!statisticsFinite || !allFinite(e.f) || !allFinite(e.g)) {
              const std::vector<at::Tensor> now = s->model->buffers();
              for (size_t i = 0; i < before.size(); ++i) now[i].copy_(before[i]);
              checkResultFinite(*s->model, e.f, images, "images", "embeddings");
              checkResultFinite(*s->model, e.g, patches, "patches", "embeddings");
              // Finite results (BatchNorm normalised the overflow away) over statistics that would make later ones NaN.
              const double largest = std::max(images.abs().max().item<double>(), patches.abs().max().item<double>());
              const std::string why = largest > model::kOverflowing
                  ? "; the model takes normalised images (per channel mean 0 and standard deviation 1, as the Loader's and embedImages' are)"
                  : [&] {
                      const model::WeightExtremes w = s->model->weightExtremes(/*statistics=*/false);
                      return c10::str("; its largest weight is ", w.largestValue, " (", w.largest, "): load weights from before the run diverged");
                    }();
              TORCH_CHECK_VALUE(false, "this training-mode pass overflowed BatchNorm's running statistics (float32), so it was "
                                "refused and they were put back: the images' and patches' values reach ", largest, why);
            }
            return e;
          },
          [](Napi::Env env, model::Embeddings& e) -> Napi::Value {
            return TensorWrap::wrapAll(env, {{"f", e.f}, {"g", e.g}});
          },
          s->owner);
    });
  }

  Napi::Value embed(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const at::Tensor images = TensorWrap::unwrap(info[0], "images");
      const EmbedLayer layer = AsEnum(info[1], "layer", kEmbedLayerNames);
      const int64_t batchSize = AsInt64(info[2], "batchSize");
      if (batchSize < 1) throw std::out_of_range("batchSize must be >= 1, got " + std::to_string(batchSize));
      auto s = live();
      return AsyncTask<at::Tensor>::run(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->mutex);
            eval::checkFinite(images, "images", "image");  // else NaN features, found later in a kNN or a probe
            const c10::Device device = s->model->device();
            std::vector<at::Tensor> parts;
            for (int64_t begin = 0; begin < images.size(0); begin += batchSize) {
              if (callAbandoned()) throw std::runtime_error("abandoned: its environment is ending");
              const at::Tensor batch = images.narrow(0, begin, std::min(batchSize, images.size(0) - begin));
              parts.push_back(s->model->embed(batch.to(device), layer).to(at::kCPU));
            }
            at::Tensor features = at::cat(parts);
            checkResultFinite(*s->model, features, images, "images", "features");
            return features;
          },
          tensorToJs, s->owner);
    });
  }

  // Applied on the model's thread, after the calls queued before it: the JavaScript thread does not wait for an
  // embed in progress, and the calls after it see the mode.
  Napi::Value setTraining(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const bool training = AsBool(info[0], "training");
      const auto s = live();
      // A call of the environment's (owner_calls.h): its end drops it, not left to run into process exit.
      runVoid(
          info.Env(), [s, training] {
            std::lock_guard<std::mutex> lock(s->mutex);
            s->model->train(training);
          }, s->owner);
      s->training = training;
      return info.Env().Undefined();
    });
  }

  Napi::Value isTraining(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Boolean::New(info.Env(), live()->training.load()); });
  }

  // Without the model's mutex: a getter must not wait for an embed or a step to end (the event loop would).
  Napi::Value info(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&] { return facts(info.Env(), *live()); });
  }

  static Napi::Value facts(Napi::Env env, const ModelState& s) {
    const ModelState::Facts& f = s.facts;
    auto out = Napi::Object::New(env);
    auto params = Napi::Object::New(env);
    params.Set("trunk", f.trunkParameters);
    params.Set("fHead", f.fHeadParameters);
    params.Set("gHead", f.gHeadParameters);
    params.Set("total", f.totalParameters);
    out.Set("parameters", params);
    out.Set("featureDim", static_cast<double>(f.featureDim));
    out.Set("device", s.device().str());
    return out;
  }

  // Copies, not the live parameters: a file written from them while training goes on is one moment's.
  static model::NamedTensors copiesOf(ModelState& s, model::StateDictScope scope) {
    std::lock_guard<std::mutex> lock(s.mutex);
    model::NamedTensors named = model::stateDict(s.model->scope(scope));
    for (auto& [name, t] : named) t = t.device().is_cpu() ? t.clone(at::MemoryFormat::Contiguous) : t.to(at::kCPU).contiguous();
    return named;
  }

  // Taken on the model's thread after the calls queued before it: a step or an embed in progress never holds the JS thread.
  Napi::Value stateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const model::StateDictScope scope = AsEnum(info[0], "scope", kScopeNames);
      auto s = live();
      return AsyncTask<model::NamedTensors>::run(
          info.Env(), [=] { return copiesOf(*s, scope); },
          [](Napi::Env env, model::NamedTensors& named) -> Napi::Value { return namedTensorsToJs(env, named); }, s->owner);
    });
  }

  Napi::Value loadStateDict(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const model::StateDictScope scope = AsEnum(info[0], "scope", kScopeNames);
      const model::NamedTensors values = readNamedTensors(info[1], info[2], "tensor");
      const bool strict = AsBool(info[3], "strict");
      auto s = live();
      // On the model's thread, as stateDict(): after the calls queued before it, never waiting on the JS thread.
      return runVoid(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->mutex);
            model::loadStateDict(s->model->scope(scope), values, strict);
          }, s->owner);
    });
  }

  Napi::Value to(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value {
      const c10::Device device = AsDevice(info[0], "device");
      auto s = live();
      return runVoid(
          info.Env(), [=] {
            std::lock_guard<std::mutex> lock(s->mutex);
            s->model->to(device);
            s->model->applyMemoryFormat();
            s->movedTo(s->model->device());
          }, s->owner);
    });
  }

  // Lets go of the model: its memory is freed once the calls in flight and a trainer using it are done with it.
  Napi::Value dispose(const Napi::CallbackInfo& info) {
    state_.reset();
    accounted_.release();
    return info.Env().Undefined();
  }

  Napi::Value disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), state_ == nullptr); }

  // Another handle on the same model: it lives until every handle is disposed (or collected).
  Napi::Value retain(const Napi::CallbackInfo& info) {
    return guarded(info.Env(), [&]() -> Napi::Value { return wrap(info.Env(), live(), /*counted=*/false); });
  }

  std::shared_ptr<ModelState> live(const std::string& arg = "the model") const {
    if (!state_) throw std::invalid_argument(arg + " was disposed");
    return state_;
  }

  std::shared_ptr<ModelState> state_;
  ExternalMemory accounted_;
};

// Initialisation draws from libtorch's global generator: seeding it and building the model must not
// interleave with another model's construction.
std::mutex initMutex;

Napi::Value createPirlModel(const Napi::CallbackInfo& info) {
  const Napi::Object o = AsObject(info[0], "options");
  const PirlModelOptions options = readOptions(o, "options");
  const auto seed = static_cast<uint64_t>(AttrAsInt64(o, "seed", "options"));
  return AsyncTask<std::shared_ptr<ModelState>>::run(
      info.Env(), [=] {
        std::lock_guard<std::mutex> lock(initMutex);
        at::manual_seed(seed);
        return std::make_shared<ModelState>(options);
      },
      [](Napi::Env env, std::shared_ptr<ModelState>& s) -> Napi::Value { return ModelWrap::wrap(env, s, /*counted=*/true); });
}

// A fact of the architecture, known before a model is made: a config's sampler is checked against it.
Napi::Value minInputSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(model::minInputSize(AsEnum(info[0], "stem", kStemNames))));
}

}  // namespace

std::shared_ptr<ModelState> unwrapModel(Napi::Value value, const std::string& arg) { return ModelWrap::unwrap(value, arg); }

void registerModel(Napi::Env env, Napi::Object exports) {
  ModelWrap::Init(env, exports);
  exports.Set("createPirlModel", Napi::Function::New<binding<createPirlModel>>(env, "createPirlModel"));
  exports.Set("minInputSize", Napi::Function::New<binding<minInputSize>>(env, "minInputSize"));
}

}  // namespace pirl::addon
