#include "env_state.h"

namespace pirl::addon {

namespace {
// Instance data must be a plain pointer.
struct Holder {
  std::shared_ptr<EnvState> state;
};

void finalizeHolder(Napi::Env, Holder* holder) { delete holder; }
}  // namespace

std::shared_ptr<EnvState> EnvState::create(Napi::Env env) {
  auto state = std::make_shared<EnvState>();
  state->ownerCalls = std::make_unique<OwnerCalls>(env);
  env.SetInstanceData<Holder, finalizeHolder>(new Holder{state});
  return state;
}

std::shared_ptr<EnvState> EnvState::of(Napi::Env env) { return env.GetInstanceData<Holder>()->state; }

}  // namespace pirl::addon
