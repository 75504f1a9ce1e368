// The JavaScript handle of a MemoryBank.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <string>

#include "../core/memory_bank.h"
#include "external_memory.h"

namespace pirl::addon {

class MemoryBankWrap : public Napi::ObjectWrap<MemoryBankWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  static Napi::Object wrap(Napi::Env env, std::shared_ptr<MemoryBank> bank);
  // The bank behind a handle; TypeError naming `arg` if it is not one.
  static std::shared_ptr<MemoryBank> unwrap(Napi::Value value, const std::string& arg);

  explicit MemoryBankWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value size(const Napi::CallbackInfo& info);
  Napi::Value dim(const Napi::CallbackInfo& info);
  Napi::Value rows(const Napi::CallbackInfo& info);
  Napi::Value get(const Napi::CallbackInfo& info);
  Napi::Value update(const Napi::CallbackInfo& info);
  Napi::Value sampleNegatives(const Napi::CallbackInfo& info);
  Napi::Value sampleShared(const Napi::CallbackInfo& info);
  Napi::Value generatorState(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  const std::shared_ptr<MemoryBank>& live(const std::string& arg = "the memory bank") const;
  // Runs `work` on the bank off the JavaScript thread, holding it (a MemoryBank::Use of `kind`) from now until the work
  // ends; the Promise settles with the tensor `work` returns (undefined if none). `call` names the method.
  Napi::Value call(Napi::Env env, MemoryBank::Use::Kind kind, const std::string& call, std::function<at::Tensor(MemoryBank&)> work) const;

  std::shared_ptr<MemoryBank> bank_;
  ExternalMemory accounted_;
};

}  // namespace pirl::addon
