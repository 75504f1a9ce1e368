// The JavaScript handle of a PirlModel, and the shared state other bindings (the trainer) use.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <mutex>

#include "../core/model/pirl_model.h"
#include "owner_thread.h"

namespace pirl::addon {

// One model, used one call at a time; its device is the model's own. Its work (forward passes, moves, a
// trainer's steps) runs on the model's own thread (owner_thread.h).
struct ModelState {
  explicit ModelState(const model::PirlModelOptions& o);
  std::mutex mutex;
  model::PirlModel model;
  std::shared_ptr<OwnerThread> owner = std::make_shared<OwnerThread>();

  // What JavaScript asks while a long call (an embed, a step) holds `mutex`, answered without waiting for it.
  struct Facts {
    double trunkParameters, fHeadParameters, gHeadParameters, totalParameters;
    int64_t featureDim;
    int64_t parameterBytes, bufferBytes;  // its native memory (an optimizer's momentum: parameterBytes more)
  };
  const Facts facts;
  // The mode JavaScript last set (a trainer's step sets training): read without `mutex`, which an embed holds
  // while it runs in eval mode.
  std::atomic<bool> training{true};
  c10::Device device() const;
  void movedTo(c10::Device device);  // after model->to(), with where its parameters now are

 private:
  mutable std::mutex deviceMutex_;
  c10::Device device_;
};

// The model behind a handle; TypeError naming `arg` if it is not one.
std::shared_ptr<ModelState> unwrapModel(Napi::Value value, const std::string& arg);

void registerModel(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
