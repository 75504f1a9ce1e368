// Handles of native objects: made only by native code (with a token JavaScript cannot forge) and
// recognised by their class.
#pragma once

#include <napi.h>

#include <stdexcept>
#include <string>

#include "errors.h"

namespace pirl::addon {

// Throws unless the constructor was called by newHandle: `factory` names what to call instead.
inline void refuseJavaScriptConstruction(const Napi::CallbackInfo& info, const char* name, const char* factory) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " cannot be constructed from JavaScript; use " + factory);
  }
}

// A new instance of the class behind `ctor`, from native code.
inline Napi::Object newHandle(Napi::Env env, const Napi::FunctionReference& ctor) {
  static int token = 0;
  return ctor.New({Napi::External<int>::New(env, &token)});
}

// `value` as an instance of the class behind `ctor`, or std::invalid_argument "<arg> must be a <what>, got …".
template <typename Wrap>
Wrap* unwrapHandle(Napi::Value value, const Napi::FunctionReference& ctor, const std::string& arg, const char* what) {
  if (!value.IsObject() || !value.As<Napi::Object>().InstanceOf(ctor.Value())) {
    wrongType(arg, std::string("a ") + what, value);
  }
  return Wrap::Unwrap(value.As<Napi::Object>());
}

}  // namespace pirl::addon
