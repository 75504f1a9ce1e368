// Bindings of the native sampler: PIRL batches and evaluation images from uint8 sources.
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerData(Napi::Env env, Napi::Object exports);
}
