// Per-environment state of the addon (one per Node.js main thread or worker): its classes, and the calls it
// has on owner threads.
#pragma once

#include <napi.h>

#include <memory>

#include "owner_calls.h"

namespace pirl::addon {

class EnvState {
 public:
  static std::shared_ptr<EnvState> create(Napi::Env env);
  static std::shared_ptr<EnvState> of(Napi::Env env);

  Napi::FunctionReference tensorConstructor;
  Napi::FunctionReference memoryBankConstructor;
  Napi::FunctionReference modelConstructor;
  Napi::FunctionReference lanesConstructor;
  Napi::FunctionReference stopConstructor;
  std::unique_ptr<OwnerCalls> ownerCalls;
};

}  // namespace pirl::addon
