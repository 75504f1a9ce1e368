// Build facts and thread settings of the native runtime.
#include "runtime_wrap.h"

#include "../core/runtime.h"
#include "errors.h"
#include "options.h"

#ifdef PIRL_WITH_CUDA
#include <ATen/ATen.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

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
  out.Set("gloo", b.gloo);
  out.Set("nccl", b.nccl);
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

int threadCount(const Napi::Value& value) { return checkThreads(AsInt64(value, "n"), "n"); }

Napi::Value setNumThreads(const Napi::CallbackInfo& info) {
  pirl::setNumThreads(threadCount(info[0]));
  return info.Env().Undefined();
}

Napi::Value setDefaultNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), pirl::setDefaultNumThreads(threadCount(info[0])));
}

Napi::Value getNumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), numThreads()); }

Napi::Value setTf32(const Napi::CallbackInfo& info) {
  pirl::setTf32({AsBool(info[0], "convolutions"), AsBool(info[1], "matmul")});
  return info.Env().Undefined();
}

Napi::Value setDeterministic(const Napi::CallbackInfo& info) {
  pirl::setDeterministic(AsBool(info[0], "on"));
  return info.Env().Undefined();
}

Napi::Value getDeterministic(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), deterministic()); }

Napi::Value getTf32(const Napi::CallbackInfo& info) {
  const Tf32 t = tf32();
  auto out = Napi::Object::New(info.Env());
  out.Set("convolutions", t.convolutions);
  out.Set("matmul", t.matmul);
  return out;
}

// cudaMemory(deviceIndex, resetPeak): the caching allocator's bytes now and at their peak since the
// last reset, or null in a build without CUDA.
Napi::Value cudaMemory(const Napi::CallbackInfo& info) {
  const int64_t index = AsInt64(info[0], "device");
  const bool reset = AsBool(info[1], "resetPeak");
#ifdef PIRL_WITH_CUDA
  if (index < 0 || index >= c10::cuda::device_count()) {
    throw std::out_of_range("device must be one of the " + std::to_string(c10::cuda::device_count()) +
                            " CUDA devices visible, got cuda:" + std::to_string(index));
  }
  const auto device = static_cast<c10::DeviceIndex>(index);
  // The allocator has no per-device state before CUDA's lazy initialisation ("Invalid device argument"),
  // which making a CUDA tensor runs in every libtorch version.
  (void)at::empty({0}, at::TensorOptions().device(c10::kCUDA, device));
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  auto out = Napi::Object::New(info.Env());
  // Entry 0 of each statistic is the aggregate over all pools (StatType::AGGREGATE in every libtorch).
  out.Set("allocated", static_cast<double>(stats.allocated_bytes[0].current));
  out.Set("peakAllocated", static_cast<double>(stats.allocated_bytes[0].peak));
  out.Set("reserved", static_cast<double>(stats.reserved_bytes[0].current));
  out.Set("peakReserved", static_cast<double>(stats.reserved_bytes[0].peak));
  if (reset) c10::cuda::CUDACachingAllocator::resetPeakStats(device);
  return out;
#else
  (void)index;
  (void)reset;
  return info.Env().Null();
#endif
}

}  // namespace

void registerRuntime(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New<binding<buildInfo>>(env, "buildInfo"));
  exports.Set("setNumThreads", Napi::Function::New<binding<setNumThreads>>(env, "setNumThreads"));
  exports.Set("setDefaultNumThreads", Napi::Function::New<binding<setDefaultNumThreads>>(env, "setDefaultNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New<binding<getNumThreads>>(env, "getNumThreads"));
  exports.Set("setTf32", Napi::Function::New<binding<setTf32>>(env, "setTf32"));
  exports.Set("getTf32", Napi::Function::New<binding<getTf32>>(env, "getTf32"));
  exports.Set("setDeterministic", Napi::Function::New<binding<setDeterministic>>(env, "setDeterministic"));
  exports.Set("getDeterministic", Napi::Function::New<binding<getDeterministic>>(env, "getDeterministic"));
  exports.Set("cudaMemory", Napi::Function::New<binding<cudaMemory>>(env, "cudaMemory"));
}

}  // namespace pirl::addon
