#include "data_wrap.h"

#include "../core/data/pirl_sampler.h"
#include "async_task.h"
#include "errors.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

double number(const Napi::Object& o, const char* key) { return o.Get(key).As<Napi::Number>().DoubleValue(); }

// TypeScript validated and completed the config; this only copies it into the plain struct.
data::SamplerConfig readConfig(const Napi::Object& o) {
  data::SamplerConfig c;
  c.imageSize = static_cast<int64_t>(number(o, "imageSize"));
  c.jigsawSize = static_cast<int64_t>(number(o, "jigsawSize"));
  c.patchSize = static_cast<int64_t>(number(o, "patchSize"));
  c.imageScaleMin = number(o, "imageScaleMin");
  c.imageScaleMax = number(o, "imageScaleMax");
  c.jigsawScaleMin = number(o, "jigsawScaleMin");
  c.jigsawScaleMax = number(o, "jigsawScaleMax");
  c.photometric.jitter = {number(o, "brightness"), number(o, "contrast"), number(o, "saturation"), number(o, "hue")};
  c.photometric.photometricProbability = number(o, "photometricProbability");
  c.photometric.grayscaleProbability = number(o, "grayscaleProbability");
  c.photometric.flipProbability = number(o, "flipProbability");
  return c;
}

Napi::Value makeBatch(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const at::Tensor indices = TensorWrap::unwrap(info[2], "indices");
  const auto seed = static_cast<uint64_t>(info[3].As<Napi::Number>().Int64Value());
  const auto epoch = static_cast<uint64_t>(info[4].As<Napi::Number>().Int64Value());
  const data::SamplerConfig config = readConfig(info[5].As<Napi::Object>());
  return AsyncTask<data::Batch>::run(
      info.Env(), "pirl.makeBatch", [=] { return data::makeBatch(source, rows, indices, seed, epoch, config); },
      [](Napi::Env env, data::Batch& b) -> Napi::Value {
        return TensorWrap::wrapAll(env, {{"images", b.images}, {"patches", b.patches}, {"permutations", b.permutations}});
      });
}

Napi::Value evalImages(const Napi::CallbackInfo& info) {
  const at::Tensor source = TensorWrap::unwrap(info[0], "source");
  const at::Tensor rows = TensorWrap::unwrap(info[1], "rows");
  const int64_t size = info[2].As<Napi::Number>().Int64Value();
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
