#include "owner_calls.h"

namespace pirl::addon {

namespace {
thread_local const std::atomic<bool>* runningCallEnding = nullptr;  // the environment's flag, while a call runs here
}  // namespace

bool callAbandoned() { return runningCallEnding != nullptr && runningCallEnding->load(); }

OwnerCalls::OwnerCalls(Napi::Env env) : env_(env) {
  napi_value name;
  NAPI_THROW_IF_FAILED_VOID(env, napi_create_string_utf8(env, "pirl", NAPI_AUTO_LENGTH, &name));
  NAPI_THROW_IF_FAILED_VOID(env, napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr,
                                                                 this, &OwnerCalls::settleOnJsThread, &settler_));
  NAPI_THROW_IF_FAILED_VOID(env, napi_unref_threadsafe_function(env, settler_));
  // process.exit() runs no clean-up hook before exit(): libtorch's static destructors would run under the call.
  const Napi::Value process = env.Global().Get("process");
  const Napi::Value once = process.IsObject() ? process.As<Napi::Object>().Get("once") : env.Undefined();
  if (once.IsFunction()) {
    once.As<Napi::Function>().Call(
        process, {Napi::String::New(env, "exit"), Napi::Function::New(env, [this](const Napi::CallbackInfo&) { end(); })});
  }
  // Last, after what can throw (a worker terminated while it loads pirl): the hook must not outlive this.
  // After the thread-safe function, so run before its own clean-up (hooks run last-added first).
  NAPI_THROW_IF_FAILED_VOID(
      env, napi_add_env_cleanup_hook(env, [](void* self) { static_cast<OwnerCalls*>(self)->end(); }, this));
}

void OwnerCalls::post(OwnerThread& owner, std::unique_ptr<OwnerCall> call) {
  if (unsettled_++ == 0) NAPI_THROW_IF_FAILED_VOID(env_, napi_ref_threadsafe_function(env_, settler_));
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    ++unfinished_;
  }
  OwnerCall* posted = call.release();
  const auto task = [this, call = posted] {
    const bool ending = ending_.load();
    if (!ending) {
      runningCallEnding = &ending_;
      call->execute();
      runningCallEnding = nullptr;
    }
    // Not queued when the environment ends meanwhile: the call is dropped here, unsettled.
    if (ending || napi_call_threadsafe_function(settler_, call, napi_tsfn_nonblocking) != napi_ok) delete call;
    const std::lock_guard<std::mutex> lock(mutex_);  // notified under the lock: end() may free this once it has it
    --unfinished_;
    finished_.notify_all();
  };
  try {
    owner.post(task);
  } catch (...) {  // no thread could be started: the call never runs, and end() must not wait for it
    delete posted;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      --unfinished_;
    }
    if (--unsettled_ == 0) napi_unref_threadsafe_function(env_, settler_);
    throw;
  }
}

void OwnerCalls::settleOnJsThread(napi_env env, napi_value, void* self, void* data) {
  const std::unique_ptr<OwnerCall> call(static_cast<OwnerCall*>(data));
  if (env == nullptr) return;  // the thread-safe function is torn down with this call still queued
  auto* calls = static_cast<OwnerCalls*>(self);
  if (--calls->unsettled_ == 0) napi_unref_threadsafe_function(env, calls->settler_);
  try {
    call->settle(Napi::Env(env));
  } catch (const Napi::Error&) {
    // The environment is ending (a terminated worker thread): nothing is left to settle.
  }
}

void OwnerCalls::end() {
  ending_ = true;
  std::unique_lock<std::mutex> lock(mutex_);
  finished_.wait(lock, [this] { return unfinished_ == 0; });
}

}  // namespace pirl::addon
