// Build facts and thread settings of the native runtime.
#include "runtime_wrap.h"

#include "../core/runtime.h"
#include "errors.h"
#include "options.h"

namespace pirl::addon {

namespace {

Napi::Value buildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BuildInfo b = pirl::buildInfo();
  auto out = Napi::Object::New(env);
  out.Set("libtorchVersion", b.libtorchVersion);
  out.Set("libtorchLibrary", b.libtorchLibrary);
  out.Set("cudaCompiled", b.cudaCompiled);
  out.Set("cudaAvailable", b.cudaAvailable);
  out.Set("cudaDeviceCount", b.cudaDeviceCount);
  out.Set("cxx11Abi", b.cxx11Abi);
  auto blas = Napi::Object::New(env);
  blas.Set("kind", blasKindName(b.blas.kind));
  blas.Set("library", b.blas.library);
  out.Set("blas", blas);
  out.Set("numThreads", b.numThreads);
  out.Set("numInteropThreads", b.numInteropThreads);
  out.Set("parallelBackend", b.parallelBackend);
  out.Set("napiVersion", NAPI_VERSION);
  out.Set("maxThreads", kMaxThreads);
  return out;
}

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  const int64_t n = AsInt64(info[0], "n");
  if (n < 1 || n > kMaxThreads) {
    throw std::out_of_range("n must be an integer in [1, " + std::to_string(kMaxThreads) + "], got " + std::to_string(n));
  }
  pirl::setNumThreads(static_cast<int>(n));
  return info.Env().Undefined();
}

Napi::Value getNumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), numThreads()); }

}  // namespace

void registerRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New<binding<buildInfo>>(env, "buildInfo"));
  exports.Set("setNumThreads", Napi::Function::New<binding<setNumThreads>>(env, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<binding<getNumThreads>>(env, "getNumThreads"));
}

}  // namespace pirl::addon
