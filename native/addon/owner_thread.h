// One thread that runs all of one model's work (its training steps, forward passes, moves), in the order
// it was queued. On libuv's pool each call could land on another thread, and glibc keeps what a thread
// frees in that thread's own arena: a step's activations stayed resident in each pool thread's arena in
// turn (the resident set grew to about pool size × one step's memory). On one thread each step reuses the
// last one's memory, and per-thread state (OpenMP's team, cuDNN's autotuning cache, CUDA handles) is
// made once.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace pirl::addon {

class OwnerThread {
 public:
  OwnerThread() = default;
  OwnerThread(const OwnerThread&) = delete;
  OwnerThread& operator=(const OwnerThread&) = delete;

  // Finishes what is queued, then ends the thread. Dropped by work on that thread itself (a call whose
  // JavaScript environment ended held the last reference), the thread finishes its queue and ends alone.
  ~OwnerThread() {
    {
      const std::lock_guard<std::mutex> lock(queue_->mutex);
      queue_->stopping = true;
    }
    queue_->ready.notify_one();
    if (!thread_.joinable()) return;
    if (std::this_thread::get_id() == thread_.get_id()) {
      thread_.detach();
    } else {
      thread_.join();
    }
  }

  // Queues `work` to run on this thread after what is queued before it, and returns at once.
  void post(std::function<void()> work) {
    {
      const std::lock_guard<std::mutex> lock(queue_->mutex);
      if (!thread_.joinable()) thread_ = std::thread([queue = queue_] { loop(*queue); });
      queue_->tasks.push_back(std::move(work));
    }
    queue_->ready.notify_one();
  }

 private:
  // Shared with the thread, so that a detached thread outlives this object safely.
  struct Queue {
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
  };

  static void loop(Queue& queue) {
    for (;;) {
      std::function<void()> next;
      {
        std::unique_lock<std::mutex> lock(queue.mutex);
        queue.ready.wait(lock, [&queue] { return queue.stopping || !queue.tasks.empty(); });
        if (queue.tasks.empty()) return;
        next = std::move(queue.tasks.front());
        queue.tasks.pop_front();
      }
      next();
    }
  }

  std::shared_ptr<Queue> queue_ = std::make_shared<Queue>();
  std::thread thread_;
};

}  // namespace pirl::addon
