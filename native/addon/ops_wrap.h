#pragma once
#include <napi.h>
namespace pirl::addon {
void registerOps(Napi::Env env, Napi::Object exports);
}
