#include "data_wrap.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../core/data/pirl_sampler.h"
#include "../core/data/side_stream_copy.h"
#include "async_task.h"
#include "errors.h"
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
           number("flipProbability")}};
}

// The loader's lanes: batch i of a loader with `prefetch` p is made on lane i mod p, one thread each, so
// that the batches in flight run side by side while each thread's buffers are reused (owner_thread.h: on the
// pool every thread kept one). Shared by the process's loaders.
std::shared_ptr<OwnerThread> laneThread(int64_t lane) {
  constexpr int64_t kMaxLanes = 64;
  if (lane < 0 || lane >= kMaxLanes) throw std::out_of_range("lane must be in [0, 64), got " + std::to_string(lane));
  static std::mutex mutex;
  static std::vector<std::shared_ptr<OwnerThread>> lanes(kMaxLanes);
  const std::lock_guard<std::mutex> lock(mutex);
  auto& thread = lanes[static_cast<size_t>(lane)];
  if (!thread) thread = std::make_shared<OwnerThread>();
  return thread;
}

Napi::Value makeBatch(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
  const auto seed = static_cast<uint64_t>(AsInt64(info[3], "seed"));
  const auto epoch = static_cast<uint64_t>(AsInt64(info[4], "epoch"));
  const data::SamplerConfig config = readConfig(info[5], "config");
  const bool pinned = AsBool(info[6], "pinned");
  const c10::Device device = AsDevice(info[7], "device");
  const std::shared_ptr<OwnerThread> lane = laneThread(AsInt64(info[8], "lane"));
  return AsyncTask<data::Batch>::run(
      info.Env(), "pirl.makeBatch",
      [=] {
        // Made in pinned memory for a GPU, then sent there while the step in progress computes.
        data::Batch b = data::makeBatch(source, rows, indices, seed, epoch, config, pinned || device.is_cuda());
        const auto there = data::copyOnSideStream({b.images, b.patches}, device);
        return data::Batch{there[0], there[1], b.permutations};
      },
      [](Napi::Env env, data::Batch& b) -> Napi::Value {
        return TensorWrap::wrapAll(env, {{"images", b.images}, {"patches", b.patches}, {"permutations", b.permutations}});
      },
      lane);
}

Napi::Value evalImages(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const int64_t size = AsInt64(info[2], "size");
  // On a lane too (evaluation asks for one batch at a time): a pool thread each would keep a batch's images.
  return AsyncTask<at::Tensor>::run(
      info.Env(), "pirl.evalImages", [=] { return data::evalImages(source, rows, size); },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorWrap::wrap(env, t); }, laneThread(0));
}

}  // namespace

void registerData(Napi::Env env, Napi::Object exports) {
  exports.Set("makeBatch", Napi::Function::New<binding<makeBatch>>(env, "makeBatch"));
  exports.Set("evalImages", Napi::Function::New<binding<evalImages>>(env, "evalImages"));
}

}  // namespace pirl::addon
