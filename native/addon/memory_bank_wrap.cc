#include "memory_bank_wrap.h"

#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "handle.h"
#include "options.h"
#include "tensor_wrap.h"

namespace pirl::addon {

namespace {

// A bank of a million rows takes seconds to initialise: off the JavaScript thread.
Napi::Value createMemoryBank(const Napi::CallbackInfo& info) {
  const int64_t size = AsInt64(info[0], "size");
  const int64_t dim = AsInt64(info[1], "dim");
  const auto seed = static_cast<uint64_t>(AsInt64(info[2], "seed"));
  const c10::Device device = AsDevice(info[3], "device");
  return AsyncTask<std::shared_ptr<MemoryBank>>::run(
      info.Env(), [=] { return std::make_shared<MemoryBank>(size, dim, seed, device); },
      [](Napi::Env e, std::shared_ptr<MemoryBank>& bank) -> Napi::Value { return MemoryBankWrap::wrap(e, bank); });
}

// restoreMemoryBank(rows, generator, device, rowsName, generatorName): an ImageNet-sized bank's copy held the
// JavaScript thread ~1.5 s. The names are what the errors call the two tensors (the caller's: "state.rows").
Napi::Value restoreMemoryBank(const Napi::CallbackInfo& info) {
  const c10::Device device = AsDevice(info[2], "device");
  const BankStateNames names{AsString(info[3], "rowsName"), AsString(info[4], "generatorName")};
  const at::Tensor rows = TensorWrap::unwrap(info[0], names.rows);
  const at::Tensor state = TensorWrap::unwrap(info[1], names.generator).clone();
  return AsyncTask<std::shared_ptr<MemoryBank>>::run(
      // The bank owns its rows: a copy (on its device), so a JavaScript buffer they came from may go away.
      info.Env(), [=] { return std::make_shared<MemoryBank>(rows.to(device, /*non_blocking=*/false, /*copy=*/true), state, names); },
      [](Napi::Env e, std::shared_ptr<MemoryBank>& bank) -> Napi::Value { return MemoryBankWrap::wrap(e, bank); });
}

}  // namespace

void MemoryBankWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "MemoryBankHandle",
                                    {
                                        InstanceMethod<&MemoryBankWrap::size>("size"),
                                        InstanceMethod<&MemoryBankWrap::dim>("dim"),
                                        InstanceMethod<&MemoryBankWrap::rows>("rows"),
                                        InstanceMethod<&MemoryBankWrap::get>("get"),
                                        InstanceMethod<&MemoryBankWrap::update>("update"),
                                        InstanceMethod<&MemoryBankWrap::sampleNegatives>("sampleNegatives"),
                                        InstanceMethod<&MemoryBankWrap::sampleShared>("sampleShared"),
                                        InstanceMethod<&MemoryBankWrap::generatorState>("generatorState"),
                                        InstanceMethod<&MemoryBankWrap::dispose>("dispose"),
                                        InstanceMethod<&MemoryBankWrap::disposed>("disposed"),
                                    });
  EnvState::of(env)->memoryBankConstructor = Napi::Persistent(ctor);
  exports.Set("MemoryBankHandle", ctor);

  exports.Set("createMemoryBank", Napi::Function::New<binding<createMemoryBank>>(env, "createMemoryBank"));
  exports.Set("restoreMemoryBank", Napi::Function::New<binding<restoreMemoryBank>>(env, "restoreMemoryBank"));
}

MemoryBankWrap::MemoryBankWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MemoryBankWrap>(info) {
  refuseJavaScriptConstruction(info, "MemoryBankHandle", "MemoryBank.create()");
}

Napi::Object MemoryBankWrap::wrap(Napi::Env env, std::shared_ptr<MemoryBank> bank) {
  Napi::Object object = newHandle(env, EnvState::of(env)->memoryBankConstructor);
  MemoryBankWrap* self = Unwrap(object);
  self->accounted_.account(env, static_cast<int64_t>(bank->rows().nbytes()));
  self->bank_ = std::move(bank);
  return object;
}

std::shared_ptr<MemoryBank> MemoryBankWrap::unwrap(Napi::Value value, const std::string& arg) {
  return unwrapHandle<MemoryBankWrap>(value, EnvState::of(value.Env())->memoryBankConstructor, arg, "MemoryBank")->live(arg);
}

const std::shared_ptr<MemoryBank>& MemoryBankWrap::live(const std::string& arg) const {
  if (!bank_) throw std::invalid_argument(arg + " was disposed");
  return bank_;
}

// Even a read waits for the bank's mutex, and a draw of B×K rows or an update of a whole bank takes seconds.
Napi::Value MemoryBankWrap::call(Napi::Env env, MemoryBank::Use::Kind kind, const std::string& call,
                                 std::function<at::Tensor(MemoryBank&)> work) const {
  auto bank = live();
  return AsyncTask<at::Tensor>::run(
      env, [=] { return work(*bank); },
      [](Napi::Env e, at::Tensor& t) -> Napi::Value { return t.defined() ? Napi::Value(TensorWrap::wrap(e, std::move(t))) : e.Undefined(); },
      nullptr, std::make_shared<MemoryBank::Use>(bank, kind, "bank." + call));
}

// Lets go of the bank: its rows are freed once a trainer using it (and views of them) are done with them.
Napi::Value MemoryBankWrap::dispose(const Napi::CallbackInfo& info) {
  bank_.reset();
  accounted_.release();
  return info.Env().Undefined();
}

Napi::Value MemoryBankWrap::disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), bank_ == nullptr); }

Napi::Value MemoryBankWrap::size(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), static_cast<double>(live()->size())); });
}

Napi::Value MemoryBankWrap::dim(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return Napi::Number::New(info.Env(), static_cast<double>(live()->dim())); });
}

Napi::Value MemoryBankWrap::rows(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value { return TensorWrap::wrap(info.Env(), at::Tensor(live()->rows())); });
}

Napi::Value MemoryBankWrap::get(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const at::Tensor indices = TensorWrap::unwrap(info[0], "indices");
    return call(info.Env(), MemoryBank::Use::Kind::Read, "get()", [=](MemoryBank& bank) { return bank.get(indices); });
  });
}

Napi::Value MemoryBankWrap::update(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const at::Tensor indices = TensorWrap::unwrap(info[0], "indices");
    const at::Tensor fHat = TensorWrap::unwrap(info[1], "fHat");
    const double momentum = AsDouble(info[2], "momentum");
    return call(info.Env(), MemoryBank::Use::Kind::Write, "update()", [=](MemoryBank& bank) {
      bank.update(indices, fHat, momentum, IndexCheck::Check);
      return at::Tensor();
    });
  });
}

Napi::Value MemoryBankWrap::sampleNegatives(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const at::Tensor exclude =
        info[2].IsNull() || info[2].IsUndefined() ? at::Tensor() : TensorWrap::unwrap(info[2], "options.excludePositives");
    const int64_t batch = AsInt64(info[0], "batch"), k = AsInt64(info[1], "k");
    return call(info.Env(), MemoryBank::Use::Kind::Write, "sampleNegatives()", [=](MemoryBank& bank) {
      // A row past the bank was stepped over as if it were one (the training step's rows are checked where they enter).
      if (exclude.defined()) bank.checkIndices(exclude, "options.excludePositives");
      return bank.sampleNegatives(batch, k, exclude);
    });
  });
}

Napi::Value MemoryBankWrap::sampleShared(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const int64_t k = AsInt64(info[0], "k");
    return call(info.Env(), MemoryBank::Use::Kind::Write, "sampleShared()", [=](MemoryBank& bank) { return bank.sampleShared(k); });
  });
}

Napi::Value MemoryBankWrap::generatorState(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    live()->refuseWhileChanging("bank.state()");
    return TensorWrap::wrap(info.Env(), live()->generatorState());
  });
}

}  // namespace pirl::addon
