// An exception's message for another error to quote: a c10::Error's without the C++ backtrace it carries (frames
// of c10d's internals mean nothing to a user, and the quoting error has its own).
#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace pirl {

inline std::string messageOf(const std::exception& e) {
  if (const auto* error = dynamic_cast<const c10::Error*>(&e)) return error->what_without_backtrace();
  return e.what();
}

}  // namespace pirl
