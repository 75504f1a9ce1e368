// Runs heavy native work off the JavaScript thread and settles a Promise with the result, so the JavaScript
// thread never waits on libtorch: a model's work (or a loader lane's) on its owner thread, the rest on pirl's
// shared workers, never on libuv's pool (owner_thread.h), each settled on its environment's thread (owner_calls.h).
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <optional>

#include "../core/runtime.h"
#include "env_state.h"
#include "errors.h"
#include "owner_calls.h"
#include "owner_thread.h"

namespace pirl::addon {

template <typename Result>
class AsyncTask {
 public:
  using Work = std::function<Result()>;
  using ToJs = std::function<Napi::Value(Napi::Env, Result&)>;

  // Queues `work` and returns the Promise it settles; `toJs` converts the result on the JS thread. With
  // `owner`, `work` runs on that thread (a model's: model_wrap.h), else on the shared workers. `held` (a
  // MemoryBank::Use) is let go once the Promise has settled, on the JavaScript thread: a call made before then, awaited
  // or not, finds it held however soon the work ended (let go on the work's thread, a second call was refused or not
  // by the race).
  static Napi::Promise run(Napi::Env env, Work work, ToJs toJs, std::shared_ptr<OwnerThread> owner = nullptr,
                           std::shared_ptr<void> held = nullptr) {
    if (!owner) owner = sharedWorkers();
    auto call = std::make_unique<Call>(env, std::move(work), std::move(toJs), owner, std::move(held));
    Napi::Promise promise = call->deferred.Promise();
    EnvState::of(env)->ownerCalls->post(*owner, std::move(call));
    return promise;
  }

 private:
  class Call : public OwnerCall {
   public:
    Call(Napi::Env env, Work w, ToJs t, std::shared_ptr<OwnerThread> o, std::shared_ptr<void> h)
        : deferred(Napi::Promise::Deferred::New(env)), work(std::move(w)), toJs(std::move(t)), owner(std::move(o)), held(std::move(h)) {}

    void execute() noexcept override {
      try {
        applyThreadSettings();  // per thread: OpenMP's thread count is
        result.emplace(work());
      } catch (...) {
        error = classifyCurrentException();
      }
    }

    void settle(Napi::Env env) override {
      if (!result) {
        deferred.Reject(toJsError(env, error).Value());
        return;
      }
      try {
        deferred.Resolve(guarded(env, [&] { return toJs(env, *result); }));
      } catch (const Napi::Error& e) {
        deferred.Reject(e.Value());
      }
    }

    Napi::Promise::Deferred deferred;
    Work work;
    ToJs toJs;
    // Held until settled: a model collected meanwhile would otherwise join its thread on the JS thread.
    std::shared_ptr<OwnerThread> owner;
    std::shared_ptr<void> held;  // let go with the call, after settle()
    std::optional<Result> result;
    CaughtError error;
  };
};

// `work`, as AsyncTask runs it, for its effect: the Promise settles with undefined.
inline Napi::Promise runVoid(Napi::Env env, std::function<void()> work, std::shared_ptr<OwnerThread> owner = nullptr) {
  return AsyncTask<bool>::run(
      env,
      [work = std::move(work)] {
        work();
        return true;
      },
      [](Napi::Env e, bool&) -> Napi::Value { return e.Undefined(); }, std::move(owner));
}

}  // namespace pirl::addon
