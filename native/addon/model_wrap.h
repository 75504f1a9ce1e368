// The JavaScript handle of a PirlModel, and the shared state other bindings (the trainer) use.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

#include "../core/model/pirl_model.h"
#include "owner_thread.h"

namespace pirl::addon {

// One model, used from worker threads one call at a time. Its device is the model's own (one owner).
// A model, the lock of its users, and the thread that runs its work (its forward passes, moves and a
// trainer's steps: owner_thread.h).
struct ModelState {
  explicit ModelState(const model::PirlModelOptions& o) : model(o) {}
  std::mutex mutex;
  model::PirlModel model;
  std::shared_ptr<OwnerThread> owner = std::make_shared<OwnerThread>();
};

// The model behind a handle; TypeError naming `arg` if it is not one.
std::shared_ptr<ModelState> unwrapModel(Napi::Value value, const std::string& arg);

void registerModel(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
