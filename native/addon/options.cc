#include "options.h"

#include <ATen/Context.h>

#include <cmath>

#include "errors.h"

namespace pirl::addon {

[[noreturn]] void wrongType(const std::string& name, const std::string& expected, Napi::Value got) {
  std::string what;
  switch (got.Type()) {
    case napi_undefined: what = "undefined"; break;
    case napi_null: what = "null"; break;
    case napi_boolean: what = got.As<Napi::Boolean>().Value() ? "true" : "false"; break;
    case napi_number: what = got.ToString().Utf8Value(); break;
    case napi_string: what = "'" + got.As<Napi::String>().Utf8Value() + "'"; break;
    case napi_bigint: what = "a bigint"; break;
    case napi_function: what = "a function"; break;
    default: what = got.IsArray() ? "an array" : "an object"; break;
  }
  throw std::invalid_argument(name + " must be " + expected + ", got " + what);
}

void throwUnknownName(const std::string& name, const std::string& got, const std::string& allowed) {
  throw std::invalid_argument(name + " must be one of " + allowed + ", got '" + got + "'");
}

Napi::Object AsObject(Napi::Value value, const std::string& name) {
  if (!value.IsObject() || value.IsArray() || value.IsFunction()) wrongType(name, "an object", value);
  return value.As<Napi::Object>();
}

Napi::Array AsArray(Napi::Value value, const std::string& name) {
  if (!value.IsArray()) wrongType(name, "an array", value);
  return value.As<Napi::Array>();
}

double AsDouble(Napi::Value value, const std::string& name) {
  if (!value.IsNumber()) wrongType(name, "a number", value);
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) wrongType(name, "a finite number", value);
  return d;
}

int64_t AsInt64(Napi::Value value, const std::string& name) {
  if (!value.IsNumber()) wrongType(name, "an integer", value);
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(std::abs(d) <= 9007199254740991.0 && std::floor(d) == d)) wrongType(name, "an integer", value);
  return static_cast<int64_t>(d);
}

bool AsBool(Napi::Value value, const std::string& name) {
  if (!value.IsBoolean()) wrongType(name, "a boolean", value);
  return value.As<Napi::Boolean>().Value();
}

std::string AsString(Napi::Value value, const std::string& name) {
  if (!value.IsString()) wrongType(name, "a string", value);
  return value.As<Napi::String>().Utf8Value();
}

c10::Device AsDevice(Napi::Value value, const std::string& name) {
  const std::string text = AsString(value, name);
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(text);
  } catch (const c10::Error&) {
    throw std::invalid_argument(name + " must be 'cpu', 'cuda' or 'cuda:N', got '" + text + "'");
  }
  if (!device.is_cpu() && !device.is_cuda()) {
    throw std::invalid_argument(name + " must be 'cpu', 'cuda' or 'cuda:N', got '" + text + "'");
  }
  if (device.is_cuda() && !at::hasCUDA()) {
    throw std::invalid_argument(name + " is '" + text +
                                "' but the libtorch this addon runs on has no CUDA (see `pirl info`)");
  }
  return device;
}

Napi::Value Attr(const Napi::Object& object, const char* key, const std::string& name) {
  if (!object.Has(key)) throw std::invalid_argument(name + "." + key + " is missing");
  return object.Get(key);
}

}  // namespace pirl::addon
