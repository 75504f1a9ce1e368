// Runs heavy native work on libuv's thread pool and settles a Promise with the result, so the
// JavaScript thread never waits on libtorch.
#pragma once

#include <napi.h>

#include <functional>
#include <optional>

#include "../core/runtime.h"
#include "errors.h"

namespace pirl::addon {

template <typename Result>
class AsyncTask : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using ToJs = std::function<Napi::Value(Napi::Env, Result&)>;

  // Queues `work` and returns the Promise it settles; `toJs` converts the result on the JS thread.
  static Napi::Promise run(Napi::Env env, const char* name, Work work, ToJs toJs) {
    auto* task = new AsyncTask(env, name, std::move(work), std::move(toJs));
    auto promise = task->deferred_.Promise();
    task->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      applyThreadSettings();
      result_.emplace(work_());
    } catch (...) {
      error_ = classifyCurrentException();
      SetError(error_.message);
    }
  }

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
  AsyncTask(Napi::Env env, const char* name, Work work, ToJs toJs)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)), toJs_(std::move(toJs)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  ToJs toJs_;
  std::optional<Result> result_;
  CaughtError error_;
};

}  // namespace pirl::addon
