// The JavaScript handle of the PIRL loss (core/pirl_loss), and the reader of its options that the
// trainer binding shares.
#pragma once

#include <napi.h>

#include "../core/pirl_loss.h"

namespace pirl::addon {

// The PIRL loss options as lib/config.ts resolved them; errors name `name`'s fields.
PirlLossOptions readPirlLossOptions(Napi::Value options, const std::string& name);

void registerPirlLoss(Napi::Env env, Napi::Object exports);

}  // namespace pirl::addon
