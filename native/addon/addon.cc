// Entry point of the pirl addon: one registration call per concern.
#include <napi.h>

#include "data_wrap.h"
#include "env_state.h"
#include "eval_wrap.h"
#include "memory_bank_wrap.h"
#include "model_wrap.h"
#include "nce_wrap.h"
#include "ops_wrap.h"
#include "pirl_loss_wrap.h"
#include "runtime_wrap.h"
#include "tensor_wrap.h"
#include "train_wrap.h"

namespace {

Napi::Object initPirl(Napi::Env env, Napi::Object exports) {
  using namespace pirl::addon;
  EnvState::create(env);
  TensorWrap::Init(env, exports);
  registerTensorFactories(env, exports);
  registerOps(env, exports);
  MemoryBankWrap::Init(env, exports);
  registerNce(env, exports);
  registerPirlLoss(env, exports);
  registerModel(env, exports);
  registerData(env, exports);
  registerTrain(env, exports);
  registerEval(env, exports);
  registerRuntime(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(pirl_addon, initPirl)
