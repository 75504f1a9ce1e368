// The JavaScript handle of a PirlModel, and the shared state other bindings (the trainer) use.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>

#include "../core/model/pirl_model.h"

namespace pirl::addon {

// One model, used from worker threads one call at a time. Its device is the model's own (one owner).
struct ModelState {
  explicit ModelState(const model::PirlModelOptions& o) : model(o) {}
  std::mutex mutex;
  model::PirlModel model;
};

// The model behind a handle; TypeError naming `arg` if it is not one.
std::shared_ptr<ModelState> unwrapModel(Napi::Value value, const std::string& arg);

void registerModel(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
