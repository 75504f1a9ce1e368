// Runs heavy native work on libuv's thread pool (or, for a model's work, on the model's own thread, from
// there) and settles a Promise with the result, so the JavaScript thread never waits on libtorch.
#pragma once

#include <napi.h>

#include <functional>
#include <memory>
#include <optional>

#include "../core/runtime.h"
#include "errors.h"
#include "owner_thread.h"

namespace pirl::addon {

template <typename Result>
class AsyncTask : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using ToJs = std::function<Napi::Value(Napi::Env, Result&)>;

  // Queues `work` and returns the Promise it settles; `toJs` converts the result on the JS thread. With
  // `owner`, `work` runs on that thread (a model's: model_wrap.h).
  static Napi::Promise run(Napi::Env env, const char* name, Work work, ToJs toJs,
                           std::shared_ptr<OwnerThread> owner = nullptr) {
    auto* task = new AsyncTask(env, name, std::move(work), std::move(toJs), std::move(owner));
    auto promise = task->deferred_.Promise();
    task->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      const std::function<Result()> settledWork = [this] {
        applyThreadSettings();  // per thread: OpenMP's thread count is
        return work_();
      };
      result_.emplace(owner_ ? owner_->run(settledWork) : settledWork());
    } catch (...) {
      error_ = classifyCurrentException();
      SetError(error_.message);
    }
  }

  // A worker thread terminated while this ran cannot be settled: binding.gyp's NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
  // drops the promise then (node-addon-api otherwise throws from libuv's callback: std::terminate of the process).
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(guarded(env, [&] { return toJs_(env, *result_); }));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }

  void OnError(const Napi::Error&) override { deferred_.Reject(toJsError(Env(), error_).Value()); }

 private:
  AsyncTask(Napi::Env env, const char* name, Work work, ToJs toJs, std::shared_ptr<OwnerThread> owner)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), toJs_(std::move(toJs)), owner_(std::move(owner)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  ToJs toJs_;
  std::shared_ptr<OwnerThread> owner_;
  std::optional<Result> result_;
  CaughtError error_;
};

}  // namespace pirl::addon
