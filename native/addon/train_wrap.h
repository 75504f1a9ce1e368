// Binding of the training state and its step (core/train).
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerTrain(Napi::Env env, Napi::Object exports);
}
