// Per-environment state of the addon (one per Node.js main thread or worker): its classes.
#pragma once

#include <napi.h>

#include <memory>

namespace pirl::addon {

class EnvState {
 public:
  static std::shared_ptr<EnvState> create(Napi::Env env);
  static std::shared_ptr<EnvState> of(Napi::Env env);

  Napi::FunctionReference tensorConstructor;
  Napi::FunctionReference memoryBankConstructor;
  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference lanesConstructor;
};

}  // namespace pirl::addon
