#include "data_wrap.h"

#include <memory>
#include <string>
#include <vector>

#include "../core/data/pirl_sampler.h"
#include "../core/data/side_stream_copy.h"
#include "../core/data/transforms.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "handle.h"
#include "options.h"
#include "owner_thread.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// lib/config.ts resolved the config; ranges are checked again by data::checkConfig.
data::SamplerConfig readConfig(Napi::Value value, const std::string& name) {
  const Napi::Object o = AsObject(value, name);
  const auto number = [&](const char* key) { return AttrAsDouble(o, key, name); };
  const auto integer = [&](const char* key) { return AttrAsInt64(o, key, name); };
  return {integer("imageSize"),
          integer("jigsawSize"),
          integer("patchSize"),
          number("imageScaleMin"),
          number("imageScaleMax"),
          number("jigsawScaleMin"),
          number("jigsawScaleMax"),
          {{number("brightness"), number("contrast"), number("saturation"), number("hue")},
           number("photometricProbability"),
           number("grayscaleProbability"),
           number("flipProbability"),
           AttrAsEnum(o, "photometricOps", name, kPhotometricOpsNames)}};
}

constexpr int64_t kMaxLanes = 64;

// A loader's lanes: batch i is made on lane i mod (the loader's prefetch), a thread each, so that the
// batches in flight run side by side while each thread reuses its buffers (owner_thread.h: on libuv's pool
// every thread kept a batch's). Each loader its own: two loaders (two ranks in one process) never queue
// behind each other. The threads start at their first batch and end with the handle; the memory its CPU
// batches are made in is reused from batch to batch (batch_buffers.h) until trimBuffers or the handle's end.
class LanesWrap : public Napi::ObjectWrap<LanesWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports) {
    // The most lanes a loader takes (its prefetch): the one number TypeScript's check reads.
    Napi::Function ctor = DefineClass(env, "LanesHandle",
                                      {StaticValue("maxCount", Napi::Number::New(env, static_cast<double>(kMaxLanes))),
                                       InstanceMethod<&LanesWrap::trimBuffers>("trimBuffers"),
                                       InstanceMethod<&LanesWrap::keptBuffers>("keptBuffers")});
    EnvState::of(env)->lanesConstructor = Napi::Persistent(ctor);
    exports.Set("LanesHandle", ctor);
  }

  // new LanesHandle(count)
  explicit LanesWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LanesWrap>(info) {
    guarded(info.Env(), [&] {
      const int64_t count = AsInt64(info[0], "count");
      if (count < 1 || count > kMaxLanes) {
        throw std::out_of_range("count must be in [1, " + std::to_string(kMaxLanes) + "], got " + std::to_string(count));
      }
      for (int64_t i = 0; i < count; ++i) lanes_.push_back(std::make_shared<OwnerThread>());
      buffers_ = data::BatchBuffers::create(static_cast<size_t>(count) + 2);  // the batches in flight, the consumer's, one being freed
      return 0;
    });
  }

  static LanesWrap* of(Napi::Value lanes) {
    return unwrapHandle<LanesWrap>(lanes, EnvState::of(lanes.Env())->lanesConstructor, "lanes", "LanesHandle");
  }

  // Lane `index` of these lanes.
  std::shared_ptr<OwnerThread> lane(Napi::Value index) const {
    const int64_t i = AsInt64(index, "lane");
    if (i < 0 || i >= static_cast<int64_t>(lanes_.size())) {
      throw std::out_of_range("lane must be in [0, " + std::to_string(lanes_.size()) + "), got " + std::to_string(i));
    }
    return lanes_[static_cast<size_t>(i)];
  }

  const std::shared_ptr<data::BatchBuffers>& buffers() const { return buffers_; }

  // lanes.trimBuffers(): the kept batch memory is freed, on a lane (unmapping it held the JS thread ~50 ms per
  // batch at B=256, release.h), after the batches queued there.
  Napi::Value trimBuffers(const Napi::CallbackInfo& info) {
    lanes_.front()->post([buffers = buffers_] { buffers->trim(); });
    return info.Env().Undefined();
  }

  // lanes.keptBuffers(): how many freed batch buffers are kept for reuse (for tests).
  Napi::Value keptBuffers(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(buffers_->keptBuffers())); }

 private:
  std::vector<std::shared_ptr<OwnerThread>> lanes_;
  std::shared_ptr<data::BatchBuffers> buffers_;
};

Napi::Value makeBatch(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
  const auto seed = static_cast<uint64_t>(AsInt64(info[3], "seed"));
  const auto epoch = static_cast<uint64_t>(AsInt64(info[4], "epoch"));
  const data::SamplerConfig config = readConfig(info[5], "config");
  const bool pinned = AsBool(info[6], "pinned");
  const c10::Device device = AsDevice(info[7], "device");
  const LanesWrap* lanes = LanesWrap::of(info[8]);
  const std::shared_ptr<OwnerThread> lane = lanes->lane(info[9]);
  const std::shared_ptr<data::BatchBuffers> buffers = lanes->buffers();
  return AsyncTask<data::Batch>::run(
      info.Env(), [=] {
        // Made in pinned memory for a GPU, then sent there while the step in progress computes.
        data::Batch b = data::makeBatch(source, rows, indices, seed, epoch, config, pinned || device.is_cuda(), buffers.get());
        const auto there = data::copyOnSideStream({b.images, b.patches}, device);
        return data::Batch{there[0], there[1], b.permutations};
      },
      [](Napi::Env env, data::Batch& b) -> Napi::Value {
        // Reported to V8 only if left undisposed (Loader): a report of each batch started collections as they came.
        return TensorWrap::wrapAll(env, {{"images", b.images}, {"patches", b.patches}, {"permutations", b.permutations}},
                                   TensorWrap::Memory::Deferred);
      },
      lane);
}

Napi::Value evalImages(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const int64_t size = AsInt64(info[2], "size");
  // On one thread of their own (evaluation asks for a batch at a time): a pool thread each kept a batch of
  // images. Never destroyed: its thread outlives the process's static destructors, libtorch's among them.
  static const auto* evalThread = new std::shared_ptr<OwnerThread>(std::make_shared<OwnerThread>());
  return AsyncTask<at::Tensor>::run(
      info.Env(), [=] { return data::evalImages(source, rows, size); },
      // Reported by evalImages, not by datasetFeatures, which disposes each batch once embedded (Loader's batches too).
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorWrap::wrap(env, std::move(t), TensorWrap::Memory::Deferred); },
      *evalThread);
}

}  // namespace

void registerData(Napi::Env env, Napi::Object exports) {
  LanesWrap::Init(env, exports);
  exports.Set("makeBatch", Napi::Function::New<binding<makeBatch>>(env, "makeBatch"));
  exports.Set("evalImages", Napi::Function::New<binding<evalImages>>(env, "evalImages"));
  const auto array = [&](const std::array<double, 3>& values) {
    auto out = Napi::Array::New(env, values.size());
    for (uint32_t c = 0; c < values.size(); ++c) out.Set(c, values[c]);
    return out;
  };
  auto normalization = Napi::Object::New(env);
  normalization.Set("mean", array(data::kImageNetMean));
  normalization.Set("std", array(data::kImageNetStd));
  exports.Set("normalization", normalization);
}

}  // namespace pirl::addon
