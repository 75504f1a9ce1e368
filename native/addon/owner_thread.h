// Threads that run queued work in order: one for all of one model's work (its training steps, forward passes,
// moves), or a few shared by pirl's other native work (owner_calls.h), so that none of it takes a thread of
// libuv's pool from fs, dns, zlib or sharp. On libuv's pool each model call could land on another thread, and
// glibc keeps what a thread frees in that thread's own arena: a step's activations stayed resident in each pool
// thread's arena in turn (the resident set grew to about pool size × one step's memory). On one thread each
// step reuses the last one's memory, and per-thread state (OpenMP's team, cuDNN's autotuning cache, CUDA
// handles) is made once.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace pirl::addon {

class OwnerThread {
 public:
  // `threads` take work from one queue: with one, work runs in the order it was posted.
  explicit OwnerThread(size_t threads = 1) : threads_(threads) {}
  OwnerThread(const OwnerThread&) = delete;
  OwnerThread& operator=(const OwnerThread&) = delete;

  // Finishes what is queued, then ends the threads. Dropped by work on one of them (a call whose JavaScript
  // environment ended held the last reference), that thread finishes the queue and ends alone.
  ~OwnerThread() {
    {
      const std::lock_guard<std::mutex> lock(queue_->mutex);
      queue_->stopping = true;
    }
    queue_->ready.notify_all();
    for (std::thread& thread : running_) {
      if (std::this_thread::get_id() == thread.get_id()) {
        thread.detach();
      } else {
        thread.join();
      }
    }
  }

  // Queues `work` and returns at once.
  void post(std::function<void()> work) {
    {
      const std::lock_guard<std::mutex> lock(queue_->mutex);
      while (running_.size() < threads_) running_.emplace_back([queue = queue_] { loop(*queue); });
      queue_->tasks.push_back(std::move(work));
    }
    queue_->ready.notify_one();
  }

 private:
  // Shared with the threads, so that a detached thread outlives this object safely.
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

  const size_t threads_;
  std::shared_ptr<Queue> queue_ = std::make_shared<Queue>();
  std::vector<std::thread> running_;
};

// Threads for pirl's work that is no model's, shared by every environment: as many as libuv's pool has by default.
inline std::shared_ptr<OwnerThread> sharedWorkers() {
  static const auto* workers = new std::shared_ptr<OwnerThread>(std::make_shared<OwnerThread>(4));  // never freed: used until exit
  return *workers;
}

}  // namespace pirl::addon
