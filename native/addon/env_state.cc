#include "env_state.h"

namespace pirl::addon {

namespace {
// Instance data must be a plain pointer; it holds the shared state that tensor deleters also hold.
struct Holder {
  std::shared_ptr<EnvState> state;
};

void finalizeHolder(Napi::Env, Holder* holder) {
  holder->state->teardown();
  delete holder;
}
}  // namespace

std::shared_ptr<EnvState> EnvState::create(Napi::Env env) {
  auto state = std::make_shared<EnvState>();
  state->env_ = env;
  state->jsThread_ = std::this_thread::get_id();
  napi_value name = Napi::String::New(env, "pirl.releaseBuffer");
  NAPI_THROW_IF_FAILED(env,
                       napi_create_threadsafe_function(env, nullptr, nullptr, name, 0, 1, nullptr, nullptr,
                                                       nullptr, &EnvState::deleteReferenceOnJsThread,
                                                       &state->releaser_),
                       nullptr);
  // The releaser must never keep the process alive on its own.
  napi_unref_threadsafe_function(env, state->releaser_);
  env.SetInstanceData<Holder, finalizeHolder>(new Holder{state});
  return state;
}

std::shared_ptr<EnvState> EnvState::of(Napi::Env env) { return env.GetInstanceData<Holder>()->state; }

void EnvState::releaseReference(napi_ref ref) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!alive_) return;  // the environment is gone and took its references with it
  if (std::this_thread::get_id() == jsThread_) {
    napi_delete_reference(env_, ref);
  } else {
    napi_call_threadsafe_function(releaser_, ref, napi_tsfn_nonblocking);
  }
}

void EnvState::deleteReferenceOnJsThread(napi_env env, napi_value, void*, void* data) {
  if (env) napi_delete_reference(env, static_cast<napi_ref>(data));
}

void EnvState::teardown() {
  std::lock_guard<std::mutex> lock(mutex_);
  alive_ = false;
  napi_release_threadsafe_function(releaser_, napi_tsfn_abort);
}

}  // namespace pirl::addon
