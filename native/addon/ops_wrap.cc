// Asynchronous tensor operations: each runs on the thread pool and resolves to a new Tensor.
#include <ATen/ATen.h>
#include <napi.h>

#include "async_task.h"
#include "errors.h"
#include "ops_wrap.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

std::vector<int64_t> readPair(Napi::Value value, const std::string& arg) {
  auto pair = readShape(value, arg);
  if (pair.size() != 2) throw std::invalid_argument(arg + " must be [height, width], got " + std::to_string(pair.size()) + " numbers");
  return pair;
}

Napi::Value matmul(const Napi::CallbackInfo& info) {
  at::Tensor a = TensorWrap::unwrap(info[0], "a");
  at::Tensor b = TensorWrap::unwrap(info[1], "b");
  return AsyncTask<at::Tensor>::run(
      info.Env(), [a, b] { return at::matmul(a, b); }, tensorToJs);
}

Napi::Value conv2d(const Napi::CallbackInfo& info) {
  at::Tensor input = TensorWrap::unwrap(info[0], "input");
  at::Tensor weight = TensorWrap::unwrap(info[1], "weight");
  at::Tensor bias = info[2].IsNull() || info[2].IsUndefined() ? at::Tensor() : TensorWrap::unwrap(info[2], "bias");
  const auto stride = readPair(info[3], "stride");
  const auto padding = readPair(info[4], "padding");
  return AsyncTask<at::Tensor>::run(
      info.Env(), [input, weight, bias, stride, padding] { return at::conv2d(input, weight, bias, stride, padding); },
      tensorToJs);
}

}  // namespace

void registerOps(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Napi::Function::New<binding<matmul>>(env, "matmul"));
  exports.Set("conv2d", Napi::Function::New<binding<conv2d>>(env, "conv2d"));
}

}  // namespace pirl::addon
