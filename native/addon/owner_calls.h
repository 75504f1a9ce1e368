// Calls that run on owner threads (owner_thread.h) and are settled on their environment's JavaScript thread,
// carried back by one thread-safe function per environment. A queued call holds no libuv pool thread while it
// waits its turn (eight queued embeds held the whole pool, and fs, dns, zlib and sharp waited behind them).
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "owner_thread.h"

namespace pirl::addon {

class OwnerCall {
 public:
  virtual ~OwnerCall() = default;
  virtual void execute() noexcept = 0;     // on the owner thread
  virtual void settle(Napi::Env env) = 0;  // on the JavaScript thread
};

// Whether the environment of the call running on this thread is ending (a terminated worker, process.exit()):
// long work checks it between its parts and stops, its result would be dropped (exit waited for all of it).
bool callAbandoned();

class OwnerCalls {
 public:
  explicit OwnerCalls(Napi::Env env);
  OwnerCalls(const OwnerCalls&) = delete;
  OwnerCalls& operator=(const OwnerCalls&) = delete;

  // Queues `call` on `owner`; it is settled on this environment's thread. From the JavaScript thread only.
  void post(OwnerThread& owner, std::unique_ptr<OwnerCall> call);

 private:
  static void settleOnJsThread(napi_env env, napi_value, void* self, void* call);
  // The environment or the process ends: calls not started are dropped and the one running is waited for, as
  // Node waits for work on its pool, so that no owner thread runs on after either (into static destructors).
  // Idempotent.
  void end();

  napi_env env_;
  napi_threadsafe_function settler_ = nullptr;
  int64_t unsettled_ = 0;  // JavaScript thread only: the event loop is kept alive while a call is unsettled

  std::mutex mutex_;
  std::condition_variable finished_;
  int64_t unfinished_ = 0;  // posted calls whose owner thread has not handed them back yet
  std::atomic<bool> ending_{false};
};

}  // namespace pirl::addon
