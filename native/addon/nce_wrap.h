// Bindings of the NCE loss and of the PIRL loss.
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerNce(Napi::Env env, Napi::Object exports);
}
