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
#include <future>
#include <memory>
#include <mutex>
#include <thread>

namespace pirl::addon {

class OwnerThread {
 public:
  OwnerThread() = default;
  OwnerThread(const OwnerThread&) = delete;
  OwnerThread& operator=(const OwnerThread&) = delete;

  // Finishes what is queued, then ends the thread. Never runs on that thread: its queue holds no owner.
  ~OwnerThread() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

  // Runs `work` on this thread; the calling thread (one of libuv's, never JavaScript's) waits for its
  // result, or for its exception, rethrown there.
  template <typename R>
  R run(const std::function<R()>& work) {
    if (std::this_thread::get_id() == thread_.get_id()) return work();  // already here: queueing would wait on itself
    // The queue holds the task, which refers to `work`: whatever `work` owns is released by the caller.
    auto task = std::make_shared<std::packaged_task<R()>>([&work] { return work(); });
    std::future<R> done = task->get_future();
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
      queue_.emplace_back([task] { (*task)(); });
    }
    ready_.notify_one();
    return done.get();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> next;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        next = std::move(queue_.front());
        queue_.pop_front();
      }
      next();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace pirl::addon
