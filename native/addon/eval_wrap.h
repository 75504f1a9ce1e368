// Bindings of the evaluation protocols (core/eval): weighted kNN, kNN search and the linear probe.
#pragma once
#include <napi.h>
namespace pirl::addon {
void registerEval(Napi::Env env, Napi::Object exports);
}
