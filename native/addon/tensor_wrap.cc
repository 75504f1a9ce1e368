#include "tensor_wrap.h"

#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>

#include "../core/dtype.h"
#include "../core/io/tensor_file.h"
#include "async_task.h"
#include "env_state.h"
#include "errors.h"
#include "handle.h"
#include "options.h"
#include "release.h"

namespace pirl::addon {

namespace {

struct TypedArrayKind {
  napi_typedarray_type napi;
  c10::ScalarType dtype;
  const char* jsName;
};
constexpr TypedArrayKind kTypedArrays[] = {
    {napi_float32_array, c10::ScalarType::Float, "Float32Array"},
    {napi_float64_array, c10::ScalarType::Double, "Float64Array"},
    {napi_int32_array, c10::ScalarType::Int, "Int32Array"},
    {napi_bigint64_array, c10::ScalarType::Long, "BigInt64Array"},
    {napi_uint8_array, c10::ScalarType::Byte, "Uint8Array"},
};

const TypedArrayKind* kindOfDtype(c10::ScalarType dtype) {
  for (const auto& k : kTypedArrays) {
    if (k.dtype == dtype) return &k;
  }
  return nullptr;
}

const TypedArrayKind* kindOfArray(napi_typedarray_type type) {
  for (const auto& k : kTypedArrays) {
    if (k.napi == type) return &k;
  }
  return nullptr;
}

// The native memory JavaScript can see: each external ArrayBuffer made over a tensor's memory and
// the tensor (its hint) that keeps that memory alive. Tensor.from of a view into such memory shares it
// again; any other memory is JavaScript's, which it may detach or transfer while native work reads it.
class NativeViews {
 public:
  static NativeViews& get() {
    static NativeViews views;
    return views;
  }
  void add(at::Tensor* owner, const uint8_t* base, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_[owner] = {base, bytes};
  }
  void remove(at::Tensor* owner) {
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_.erase(owner);
  }
  // The tensor whose memory holds [ptr, ptr + bytes), if native memory does.
  std::optional<at::Tensor> ownerOf(const uint8_t* ptr, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [owner, range] : ranges_) {
      if (ptr >= range.first && ptr + bytes <= range.first + range.second) return *owner;
    }
    return std::nullopt;
  }

 private:
  std::mutex mutex_;
  std::map<at::Tensor*, std::pair<const uint8_t*, size_t>> ranges_;
};

// External ArrayBuffers keep the tensor they view alive through this hint.
void deleteTensorHint(napi_env, void*, void* hint) {
  auto* keep = static_cast<at::Tensor*>(hint);
  NativeViews::get().remove(keep);
  releaseTensor(std::move(*keep));
  delete keep;
}

napi_value typedArrayOver(Napi::Env env, napi_value buffer, napi_typedarray_type type, size_t length) {
  napi_value array;
  NAPI_THROW_IF_FAILED(env, napi_create_typedarray(env, type, length, buffer, 0, &array), nullptr);
  return array;
}

// An ArrayBuffer over `tensor`'s memory (CPU, contiguous), shared where the runtime allows it; `shared` says
// whether it is (a runtime without external buffers gets a copy).
napi_value externalBuffer(Napi::Env env, const at::Tensor& t, bool& shared) {
  const size_t bytes = t.nbytes();
  auto* ptr = static_cast<uint8_t*>(t.data_ptr());
  napi_value buffer = nullptr;
  shared = true;
  if (bytes == 0) buffer = Napi::ArrayBuffer::New(env, 0);
  if (!buffer) {
    auto* keep = new at::Tensor(t);
    const napi_status status = napi_create_external_arraybuffer(env, ptr, bytes, deleteTensorHint, keep, &buffer);
    if (status == napi_ok) {
      NativeViews::get().add(keep, ptr, bytes);
    } else if (status != napi_no_external_buffers_allowed) {
      // Not freed here: Node may have run the finalizer already (it did for a buffer over its largest, which
      // lib/tensor.ts refuses first; freeing `keep` again killed the process).
      NAPI_THROW_IF_FAILED(env, status, nullptr);
    } else {
      // Runtimes that forbid external buffers get a copy.
      delete keep;
      Napi::ArrayBuffer copy = Napi::ArrayBuffer::New(env, bytes);
      std::memcpy(copy.Data(), ptr, bytes);
      buffer = copy;
      shared = false;
    }
  }
  return buffer;
}

}  // namespace

std::vector<int64_t> readShape(Napi::Value value, const std::string& arg) {
  if (!value.IsArray()) wrongType(arg, "an array of integers", value);
  auto array = value.As<Napi::Array>();
  std::vector<int64_t> shape(array.Length());
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value v = array.Get(i);
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(d >= 0 && d <= 9007199254740991.0 && std::floor(d) == d)) {
      throw std::out_of_range(arg + "[" + std::to_string(i) + "] must be a non-negative integer, got " +
                              v.ToString().Utf8Value());
    }
    shape[i] = static_cast<int64_t>(d);
  }
  checkedNumel(shape);
  return shape;
}

std::vector<std::pair<std::string, at::Tensor>> readNamedTensors(Napi::Value names, Napi::Value tensors,
                                                                 const std::string& what) {
  const Napi::Array nameList = AsArray(names, "names"), tensorList = AsArray(tensors, "tensors");
  if (nameList.Length() != tensorList.Length()) {
    throw std::out_of_range("names and tensors must have one length, got " + std::to_string(nameList.Length()) +
                            " and " + std::to_string(tensorList.Length()));
  }
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (uint32_t i = 0; i < nameList.Length(); ++i) {
    const std::string name = AsString(nameList.Get(i), "names[" + std::to_string(i) + "]");
    out.emplace_back(name, TensorWrap::unwrap(tensorList.Get(i), what + " '" + name + "'"));
  }
  return out;
}

Napi::Object namedTensorsToJs(Napi::Env env, std::vector<std::pair<std::string, at::Tensor>>& named) {
  auto names = Napi::Array::New(env, named.size());
  auto tensors = Napi::Array::New(env, named.size());
  for (uint32_t i = 0; i < named.size(); ++i) {
    names.Set(i, named[i].first);
    tensors.Set(i, TensorWrap::wrap(env, std::move(named[i].second)));
  }
  auto out = Napi::Object::New(env);
  out.Set("names", names);
  out.Set("tensors", tensors);
  return out;
}

void TensorWrap::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "TensorHandle",
                                    {
                                        InstanceMethod<&TensorWrap::shape>("shape"),
                                        InstanceMethod<&TensorWrap::dtype>("dtype"),
                                        InstanceMethod<&TensorWrap::device>("device"),
                                        InstanceMethod<&TensorWrap::data>("data"),
                                        InstanceMethod<&TensorWrap::rows>("rows"),
                                        InstanceMethod<&TensorWrap::dispose>("dispose"),
                                        InstanceMethod<&TensorWrap::disposed>("disposed"),
                                        InstanceMethod<&TensorWrap::to>("to"),
                                        InstanceMethod<&TensorWrap::report>("report"),
                                    });
  EnvState::of(env)->tensorConstructor = Napi::Persistent(ctor);
  // Exported for `instanceof` checks only: the constructor refuses calls from JavaScript.
  exports.Set("TensorHandle", ctor);
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {
  refuseJavaScriptConstruction(info, "TensorHandle", "Tensor.from()");
}

TensorWrap::~TensorWrap() { reset(); }

void TensorWrap::reset() {
  view_.Reset();
  accounted_.release();
  releaseTensor(std::move(tensor_));
  tensor_ = at::Tensor();
}

Napi::Object TensorWrap::wrapAll(Napi::Env env, std::initializer_list<std::pair<const char*, at::Tensor&>> tensors,
                                 Memory memory) {
  Napi::Object out = Napi::Object::New(env);
  for (const auto& [name, tensor] : tensors) out.Set(name, wrap(env, std::move(tensor), memory));
  return out;
}

Napi::Object TensorWrap::wrap(Napi::Env env, at::Tensor&& tensor, Memory memory) {
  Napi::Object object = newHandle(env, EnvState::of(env)->tensorConstructor);
  TensorWrap* self = Unwrap(object);
  // Held elsewhere too (the tensor: the bank's rows, an input returned as is; its storage: a view), the
  // memory stays reported by its other holder.
  const bool alone = tensor.defined() && tensor.use_count() == 1 && tensor.storage().use_count() == 1;
  if (memory == Memory::Owned && alone) self->accounted_.account(env, static_cast<int64_t>(tensor.storage().nbytes()));
  self->deferred_ = memory == Memory::Deferred && alone;
  self->tensor_ = std::move(tensor);
  return object;
}

Napi::Value TensorWrap::report(const Napi::CallbackInfo& info) {
  if (deferred_ && !disposed_) accounted_.account(info.Env(), static_cast<int64_t>(tensor_.storage().nbytes()));
  deferred_ = false;
  return info.Env().Undefined();
}

at::Tensor TensorWrap::unwrap(Napi::Value value, const std::string& arg) {
  return unwrapHandle<TensorWrap>(value, EnvState::of(value.Env())->tensorConstructor, arg, "Tensor")->live(arg);
}

const at::Tensor& TensorWrap::live(const std::string& what) const {
  if (disposed_) throw std::invalid_argument(what + " was disposed");
  return tensor_;
}

Napi::Value TensorWrap::shape(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    const auto sizes = live("tensor").sizes();
    auto out = Napi::Array::New(info.Env(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) out.Set(static_cast<uint32_t>(i), static_cast<double>(sizes[i]));
    return out;
  });
}

Napi::Value TensorWrap::dtype(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), dtypeName(live("tensor").scalar_type()));
  });
}

Napi::Value TensorWrap::device(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), live("tensor").device().str());
  });
}

Napi::Value TensorWrap::disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }

Napi::Value TensorWrap::dispose(const Napi::CallbackInfo& info) {
  disposed_ = true;
  reset();
  return info.Env().Undefined();
}

Napi::Value TensorWrap::data(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    at::Tensor t = live("tensor");
    const TypedArrayKind* kind = kindOfDtype(t.scalar_type());
    if (!kind) throw std::invalid_argument("tensor of dtype " + dtypeName(t.scalar_type()) + " has no typed array view");
    const auto length = static_cast<size_t>(t.numel());
    // Only a dense CPU tensor can be viewed in place; anything else is read through a copy, each time anew.
    const bool inPlace = t.device().is_cpu() && t.is_contiguous();
    if (inPlace && !view_.IsEmpty()) {
      const Napi::ArrayBuffer kept = view_.Value();
      if (!kept.IsEmpty() && !kept.IsDetached()) return Napi::Value(env, typedArrayOver(env, kept, kind->napi, length));
    }
    if (!inPlace) t = t.to(at::kCPU).contiguous();
    bool shared = false;
    const napi_value buffer = externalBuffer(env, t, shared);
    if (inPlace && shared) view_ = Napi::Weak(Napi::ArrayBuffer(env, buffer));
    return Napi::Value(env, typedArrayOver(env, buffer, kind->napi, length));
  });
}

Napi::Value TensorWrap::rows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const at::Tensor& t = live("tensor");
    const int64_t start = AsInt64(info[0], "start"), count = AsInt64(info[1], "count");
    if (t.dim() == 0) throw std::invalid_argument("tensor has no rows: it is a scalar (shape [])");
    const int64_t n = t.size(0);
    if (start < 0 || count < 0 || start + count > n) {
      throw std::out_of_range("rows [" + std::to_string(start) + ", " + std::to_string(start + count) +
                              ") must lie within the tensor's " + std::to_string(n) + " rows");
    }
    return wrap(env, t.narrow(0, start, count));
  });
}

Napi::Value TensorWrap::to(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    at::Tensor t = live("tensor");
    const c10::Device device = AsDevice(info[0], "device");
    return AsyncTask<at::Tensor>::run(
        env, [t, device] { return t.to(device); },
        tensorToJs);
  });
}

namespace {

Napi::Value fromArray(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) wrongType("data", "a typed array or Buffer", info[0]);
  auto view = info[0].As<Napi::TypedArray>();
  const std::vector<int64_t> shape = readShape(info[1], "shape");
  const c10::ScalarType dtype = dtypeFromName(AsString(info[2], "dtype"));
  const TypedArrayKind* kind = kindOfArray(view.TypedArrayType());
  if (!kind || kind->dtype != dtype) {
    throw std::invalid_argument("data must be the typed array of dtype " + dtypeName(dtype) + ", got " +
                                (kind ? kind->jsName : "an unsupported typed array"));
  }
  Napi::ArrayBuffer buffer = view.ArrayBuffer();
  if (buffer.IsDetached()) throw std::invalid_argument("data is backed by a detached ArrayBuffer");
  const int64_t numel = checkedNumel(shape);
  if (static_cast<int64_t>(view.ElementLength()) != numel) {
    throw std::out_of_range("data has " + std::to_string(view.ElementLength()) + " elements but shape " +
                            shapeString(shape) + " needs " + std::to_string(numel));
  }
  const auto options = at::TensorOptions().dtype(dtype);
  if (numel == 0) return TensorWrap::wrap(env, at::empty(shape, options));
  const auto* ptr = static_cast<const uint8_t*>(buffer.Data()) + view.ByteOffset();
  const size_t bytes = view.ByteLength();
  if (auto owner = NativeViews::get().ownerOf(ptr, bytes)) {
    // A view of native memory (a tensor's data()): shared, its owner kept alive.
    return TensorWrap::wrap(env, at::from_blob(const_cast<uint8_t*>(ptr), shape, [keep = *owner](void*) {}, options),
                            TensorWrap::Memory::Borrowed);
  }
  // JavaScript's own memory may be detached or transferred while native work reads it: copied.
  at::Tensor t = at::empty(shape, options);
  std::memcpy(t.data_ptr(), ptr, bytes);
  return TensorWrap::wrap(env, std::move(t));
}

// zeros(shape, dtype, device) / empty(…): `empty`'s values are whatever its memory held (for filling in place).
at::TensorOptions factoryOptions(const Napi::CallbackInfo& info) {
  return at::TensorOptions().dtype(dtypeFromName(AsString(info[1], "dtype"))).device(AsDevice(info[2], "device"));
}

Napi::Value zeros(const Napi::CallbackInfo& info) {
  const auto shape = readShape(info[0], "shape");
  return TensorWrap::wrap(info.Env(), at::zeros(shape, factoryOptions(info)));
}

Napi::Value empty(const Napi::CallbackInfo& info) {
  const auto shape = readShape(info[0], "shape");
  return TensorWrap::wrap(info.Env(), at::empty(shape, factoryOptions(info)));
}

// readTensors(fd, file, spans [{what, offset, dtype, shape}]): new tensors read from an open file, off
// the JavaScript thread; `file` names it in errors.
Napi::Value readTensors(const Napi::CallbackInfo& info) {
  const int fd = static_cast<int>(AsInt64(info[0], "fd"));
  const std::string file = AsString(info[1], "file");
  const Napi::Array list = AsArray(info[2], "spans");
  std::vector<io::TensorSpan> spans;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    const std::string name = "spans[" + std::to_string(i) + "]";
    const Napi::Object o = AsObject(list.Get(i), name);
    spans.push_back({AttrAsString(o, "what", name), AttrAsInt64(o, "offset", name),
                     dtypeFromName(AttrAsString(o, "dtype", name)), readShape(Attr(o, "shape", name), name + ".shape")});
  }
  return AsyncTask<std::vector<at::Tensor>>::run(
      info.Env(), [=] { return io::readTensors(fd, file, spans); },
      [](Napi::Env env, std::vector<at::Tensor>& tensors) -> Napi::Value {
        auto out = Napi::Array::New(env, tensors.size());
        for (uint32_t i = 0; i < tensors.size(); ++i) out.Set(i, TensorWrap::wrap(env, std::move(tensors[i])));
        return out;
      });
}

// writeTensors(fd, file, offset, tensors): each tensor's bytes, one after another from `offset`, off the
// JavaScript thread.
Napi::Value writeTensors(const Napi::CallbackInfo& info) {
  const int fd = static_cast<int>(AsInt64(info[0], "fd"));
  const std::string file = AsString(info[1], "file");
  const int64_t offset = AsInt64(info[2], "offset");
  const Napi::Array list = AsArray(info[3], "tensors");
  std::vector<at::Tensor> tensors;
  for (uint32_t i = 0; i < list.Length(); ++i) tensors.push_back(TensorWrap::unwrap(list.Get(i), "tensors[" + std::to_string(i) + "]"));
  return runVoid(
      info.Env(), [=] {
        io::writeTensors(fd, file, offset, tensors);
      });
}

}  // namespace

void registerTensorFactories(Napi::Env env, Napi::Object exports) {
  exports.Set("fromArray", Napi::Function::New<binding<fromArray>>(env, "fromArray"));
  exports.Set("zeros", Napi::Function::New<binding<zeros>>(env, "zeros"));
  exports.Set("empty", Napi::Function::New<binding<empty>>(env, "empty"));
  exports.Set("readTensors", Napi::Function::New<binding<readTensors>>(env, "readTensors"));
  exports.Set("writeTensors", Napi::Function::New<binding<writeTensors>>(env, "writeTensors"));
}

}  // namespace pirl::addon
