// Bindings of the training step and the kNN evaluation.
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerTrain(Napi::Env env, Napi::Object exports);
}
