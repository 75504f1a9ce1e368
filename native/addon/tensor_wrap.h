// The JavaScript handle of an at::Tensor: typed arrays copied in (JavaScript may detach or transfer
// its own memory while native work reads it) unless they view native memory, which is shared;
// typed-array views over the tensor's own memory (or a range of its rows); explicit disposal and GC-visible native memory.
#pragma once

#include <ATen/ATen.h>
#include <napi.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "external_memory.h"

namespace pirl::addon {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);

  // Whose to report a handle's memory to V8, whose GC is blind to native memory otherwise.
  enum class Memory {
    Owned,     // the handle's, when it holds the tensor and its storage alone (a fresh result)
    Deferred,  // the handle's too, once report() asks (a loader's batch, which fit disposes unreported: Loader)
    Borrowed,  // another tensor's (a view of its data()), which reports it
  };
  // A new JavaScript handle that owns `tensor`, moved in: a copy kept elsewhere (a model's, the bank's rows)
  // makes the memory that holder's to report — reported per handle, each bank.rows() added the whole bank
  // to V8's count (655 MB at ImageNet scale), and a major GC ran every few calls.
  static Napi::Object wrap(Napi::Env env, at::Tensor&& tensor, Memory memory = Memory::Owned);
  // The tensor behind a handle; TypeError naming `arg` if it is not a live tensor handle.
  static at::Tensor unwrap(Napi::Value value, const std::string& arg);
  // A plain object of named tensors (a native result such as {f, g}), each moved into its handle.
  static Napi::Object wrapAll(Napi::Env env, std::initializer_list<std::pair<const char*, at::Tensor&>> tensors,
                              Memory memory = Memory::Owned);

  explicit TensorWrap(const Napi::CallbackInfo& info);
  ~TensorWrap() override;

 private:
  const at::Tensor& live(const std::string& what) const;
  void reset();

  Napi::Value shape(const Napi::CallbackInfo& info);
  Napi::Value dtype(const Napi::CallbackInfo& info);
  Napi::Value device(const Napi::CallbackInfo& info);
  Napi::Value data(const Napi::CallbackInfo& info);
  Napi::Value rows(const Napi::CallbackInfo& info);
  Napi::Value dispose(const Napi::CallbackInfo& info);
  Napi::Value disposed(const Napi::CallbackInfo& info);
  Napi::Value to(const Napi::CallbackInfo& info);
  Napi::Value report(const Napi::CallbackInfo& info);

  at::Tensor tensor_;
  bool disposed_ = false;
  ExternalMemory accounted_;
  bool deferred_ = false;  // Memory::Deferred, not yet reported
  // The ArrayBuffer over tensor_'s memory that data() made, while JavaScript keeps it: the next data() views it
  // again. V8 counts each new one's bytes: 60 data() of a 100 MB tensor ran 13 major collections.
  Napi::Reference<Napi::ArrayBuffer> view_;
};

// Reads a JavaScript shape (array of non-negative safe integers); errors name `arg`.
std::vector<int64_t> readShape(Napi::Value value, const std::string& arg);
// Parallel arrays of names and tensor handles (a state dict); errors call each "<what> '<name>'".
std::vector<std::pair<std::string, at::Tensor>> readNamedTensors(Napi::Value names, Napi::Value tensors,
                                                                 const std::string& what);
// The other way: { names, tensors }, each tensor moved into its handle.
Napi::Object namedTensorsToJs(Napi::Env env, std::vector<std::pair<std::string, at::Tensor>>& named);

void registerTensorFactories(Napi::Env env, Napi::Object exports);

// An AsyncTask's tensor result handed to JavaScript (its toJs).
inline Napi::Value tensorToJs(Napi::Env env, at::Tensor& t) { return TensorWrap::wrap(env, std::move(t)); }

}  // namespace pirl::addon
