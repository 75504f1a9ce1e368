// Turns C++ failures into JavaScript exceptions at the boundary: std::invalid_argument → TypeError,
// std::out_of_range / c10::IndexError / c10::ValueError → RangeError, anything else (c10::Error included) → Error,
// always without libtorch's C++ backtrace.
#pragma once

#include <c10/util/Exception.h>
#include <napi.h>

#include <stdexcept>
#include <string>

namespace pirl::addon {

enum class ErrorKind { Error, TypeError, RangeError };

struct CaughtError {
  ErrorKind kind = ErrorKind::Error;
  std::string message;
};

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
  } catch (const c10::Error& e) {
    return {ErrorKind::Error, e.what_without_backtrace()};
  } catch (const std::invalid_argument& e) {
    return {ErrorKind::TypeError, e.what()};
  } catch (const std::out_of_range& e) {
    return {ErrorKind::RangeError, e.what()};
  } catch (const std::bad_alloc&) {
    return {ErrorKind::RangeError, "out of memory"};
  } catch (const std::exception& e) {
    return {ErrorKind::Error, e.what()};
  } catch (...) {
    return {ErrorKind::Error, "unknown C++ exception"};
  }
}

inline Napi::Error toJsError(Napi::Env env, const CaughtError& e) {
  switch (e.kind) {
    case ErrorKind::TypeError: return Napi::TypeError::New(env, e.message);
    case ErrorKind::RangeError: return Napi::RangeError::New(env, e.message);
    default: return Napi::Error::New(env, e.message);
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
