// Turns C++ failures into JavaScript exceptions at the boundary: std::invalid_argument → TypeError,
// std::out_of_range / c10::IndexError / c10::ValueError → RangeError, an allocation that failed (a device's or the
// host's) → Error with code PIRL_OUT_OF_MEMORY, a system call's failure → Error with its errno's code (ENOSPC…),
// anything else (c10::Error included) → Error, always without libtorch's C++ backtrace.
#pragma once

#include <c10/util/Exception.h>
#include <napi.h>

#include <cstring>

#include <stdexcept>
#include <string>
#include <system_error>

#include "../core/runtime.h"

namespace pirl::addon {

enum class ErrorKind { Error, TypeError, RangeError };

// std::invalid_argument "<name> must be <expected>, got <what got is>" (options.cc).
[[noreturn]] void wrongType(const std::string& name, const std::string& expected, Napi::Value got);

// The code of an error of memory that ran out (lib/errors.ts OUT_OF_MEMORY): the CLI says what to change.
inline constexpr const char* kOutOfMemoryCode = "PIRL_OUT_OF_MEMORY";

struct CaughtError {
  ErrorKind kind = ErrorKind::Error;
  std::string message;
  std::string code;  // the error's `code` in JavaScript, if any
};

// The name of an errno ("ENOSPC"), as Node's own errors carry it in `code`; "" where the C library cannot say.
inline std::string errnoName(const std::error_code& code) {
  if (code.category() != std::generic_category() && code.category() != std::system_category()) return "";
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(code.value());
  return name ? name : "";
#else
  return "";
#endif
}

// Call inside a catch block: classifies the exception in flight.
inline CaughtError classifyCurrentException() {
  try {
    throw;
  } catch (const c10::IndexError& e) {
    return {ErrorKind::RangeError, e.what_without_backtrace()};
  } catch (const c10::ValueError& e) {
    return {ErrorKind::RangeError, e.what_without_backtrace()};
  } catch (const c10::TypeError& e) {
    return {ErrorKind::TypeError, e.what_without_backtrace()};
  } catch (const c10::OutOfMemoryError& e) {  // CUDA's caching allocator
    return {ErrorKind::Error, e.what_without_backtrace(), kOutOfMemoryCode};
  } catch (const c10::Error& e) {
    // The CPU allocator's failure is a plain enforce ("[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: …").
    const std::string message = e.what_without_backtrace();
    const size_t cpu = message.find("DefaultCPUAllocator: can't allocate memory");
    if (cpu != std::string::npos) return {ErrorKind::Error, message.substr(cpu), kOutOfMemoryCode};
    return {ErrorKind::Error, explainCublasConfig(message)};
  } catch (const std::invalid_argument& e) {
    return {ErrorKind::TypeError, e.what()};
  } catch (const std::out_of_range& e) {
    return {ErrorKind::RangeError, e.what()};
  } catch (const std::bad_alloc&) {
    return {ErrorKind::Error, "out of memory: a host allocation failed", kOutOfMemoryCode};
  } catch (const std::system_error& e) {
    return {ErrorKind::Error, e.what(), errnoName(e.code())};
  } catch (const std::exception& e) {
    return {ErrorKind::Error, explainCublasConfig(e.what())};
  } catch (...) {
    return {ErrorKind::Error, "unknown C++ exception"};
  }
}

inline Napi::Error toJsError(Napi::Env env, const CaughtError& e) {
  switch (e.kind) {
    case ErrorKind::TypeError: return Napi::TypeError::New(env, e.message);
    case ErrorKind::RangeError: return Napi::RangeError::New(env, e.message);
    default: {
      Napi::Error error = Napi::Error::New(env, e.message);
      if (!e.code.empty()) error.Set("code", e.code);
      return error;
    }
  }
}

// Runs a binding body, rethrowing C++ failures as the matching JavaScript error.
template <typename Fn>
auto guarded(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw toJsError(env, classifyCurrentException());
  }
}

// Wraps a `Napi::Value f(const Napi::CallbackInfo&)` so every binding shares the translation above.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value binding(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&] { return Fn(info); });
}

}  // namespace pirl::addon
