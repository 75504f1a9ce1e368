// Bindings of the NCE loss and of the PIRL loss.
#pragma once

#include <napi.h>

#include "../core/pirl_loss.h"

namespace pirl::addon {

// The PIRL loss options as TypeScript validated them (lib/loss.ts).
PirlLossOptions readPirlLossOptions(const Napi::Object& options);

void registerNce(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
