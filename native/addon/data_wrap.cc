#include "data_wrap.h"

#include "../core/data/pirl_sampler.h"
#include "../core/data/side_stream_copy.h"
#include "async_task.h"
#include "errors.h"
#include "options.h"
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

Napi::Value makeBatch(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
  const auto seed = static_cast<uint64_t>(AsInt64(info[3], "seed"));
  const auto epoch = static_cast<uint64_t>(AsInt64(info[4], "epoch"));
  const data::SamplerConfig config = readConfig(info[5], "config");
  const bool pinned = AsBool(info[6], "pinned");
  const c10::Device device = AsDevice(info[7], "device");
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
      });
}

Napi::Value evalImages(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const int64_t size = AsInt64(info[2], "size");
  return AsyncTask<at::Tensor>::run(
      info.Env(), "pirl.evalImages", [=] { return data::evalImages(source, rows, size); },
      [](Napi::Env env, at::Tensor& t) -> Napi::Value { return TensorWrap::wrap(env, t); });
}

}  // namespace

void registerData(Napi::Env env, Napi::Object exports) {
  exports.Set("makeBatch", Napi::Function::New<binding<makeBatch>>(env, "makeBatch"));
  exports.Set("evalImages", Napi::Function::New<binding<evalImages>>(env, "evalImages"));
}

}  // namespace pirl::addon
