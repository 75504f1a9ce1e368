// The JavaScript handle of a PirlModel.
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerModel(Napi::Env env, Napi::Object exports);
}
