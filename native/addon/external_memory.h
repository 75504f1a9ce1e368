// Native memory that a JavaScript handle keeps alive, reported to V8: its GC is otherwise blind to it, and
// handles dropped without dispose() (a model or bank made in a loop) piled up gigabytes unreclaimed.
#pragma once

#include <napi.h>

#include <cstdint>

namespace pirl::addon {

class ExternalMemory {
 public:
  ExternalMemory() = default;
  ExternalMemory(const ExternalMemory&) = delete;
  ExternalMemory& operator=(const ExternalMemory&) = delete;
  ~ExternalMemory() { release(); }

  // Reports `bytes` in place of what was reported before.
  void account(Napi::Env env, int64_t bytes) {
    release();
    if (bytes <= 0) return;
    env_ = env;
    bytes_ = bytes;
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes);
  }

  // What the handle no longer keeps (its dispose(), its collection).
  void release() {
    if (bytes_ > 0) Napi::MemoryManagement::AdjustExternalMemory(Napi::Env(env_), -bytes_);
    bytes_ = 0;
  }

 private:
  napi_env env_ = nullptr;
  int64_t bytes_ = 0;
};

}  // namespace pirl::addon
