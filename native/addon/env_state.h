// Per-environment state of the addon (one per Node.js main thread or worker): the Tensor class
// and the queue that lets any thread give back a JavaScript buffer that a tensor borrowed.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <thread>

namespace pirl::addon {

class EnvState {
 public:
  static std::shared_ptr<EnvState> create(Napi::Env env);
  static std::shared_ptr<EnvState> of(Napi::Env env);

  // Drops a strong reference to a JavaScript value from whichever thread the last tensor using it
  // died on: directly on the JS thread, through a thread-safe function elsewhere, never after teardown.
  void releaseReference(napi_ref ref);

  // Called once when the environment shuts down: later releases become no-ops.
  void teardown();

  Napi::FunctionReference tensorConstructor;
  Napi::FunctionReference memoryBankConstructor;
  Napi::FunctionReference modelConstructor;

 private:
  static void deleteReferenceOnJsThread(napi_env env, napi_value, void*, void* data);

  napi_env env_ = nullptr;
  std::thread::id jsThread_;
  std::mutex mutex_;
  bool alive_ = true;
  napi_threadsafe_function releaser_ = nullptr;
};

}  // namespace pirl::addon
