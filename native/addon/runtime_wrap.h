#pragma once
#include <napi.h>
namespace pirl::addon {
void registerRuntime(Napi::Env env, Napi::Object exports);
}
