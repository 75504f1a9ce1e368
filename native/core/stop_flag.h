// A request to stop long native work (an AbortSignal's, made on the JavaScript thread), read between its pieces.
#pragma once
#include <atomic>
#include <stdexcept>
#include <string>

namespace pirl {

class StopFlag {
 public:
  void request() { requested_.store(true, std::memory_order_relaxed); }
  bool requested() const { return requested_.load(std::memory_order_relaxed); }

 private:
  std::atomic<bool> requested_{false};
};

// Throws, naming `what`, once `flag` (null: none) has been requested: between two pieces of the work, never inside one.
inline void stopIfRequested(const StopFlag* flag, const char* what) {
  if (flag != nullptr && flag->requested()) throw std::runtime_error(std::string(what) + " was stopped: its signal was aborted");
}

}  // namespace pirl
