// Work that may block past every timeout of its own, given up on at a deadline: a TCPStore client of libtorch 2.x
// reads some replies with no timeout (its ping as it connects, the answer to a cancelled wait), so that a MASTER_PORT
// held by another program, which accepts and never answers, would keep a rank joining for ever.
#pragma once

#include <c10/util/Exception.h>

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <thread>

namespace pirl::distributed {

// `work()`'s result (or what it threw), run on a thread of its own; past `deadline` a c10::Error saying `late`. That
// thread is then left blocked in `work`, which must own what it uses (capture by value), until it ends or the process does.
template <typename Work>
auto withinDeadline(Work work, std::chrono::milliseconds deadline, const std::string& late) -> decltype(work()) {
  auto task = std::make_shared<std::packaged_task<decltype(work())()>>(std::move(work));
  auto result = task->get_future();
  std::thread([task] { (*task)(); }).detach();
  TORCH_CHECK(result.wait_for(deadline) == std::future_status::ready, late);
  return result.get();
}

}  // namespace pirl::distributed
