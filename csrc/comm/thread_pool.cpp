#include "comm/thread_pool.h"

#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace galvatron {
namespace comm {
namespace {

class Pool {
 public:
  void run(int num_tasks, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> serial(run_mutex_);
    grow(num_tasks - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      num_tasks_ = num_tasks;
      pending_ = num_tasks - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  void grow(int num_workers) {
    while (static_cast<int>(workers_.size()) < num_workers) {
      const int task = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, task] { loop(task); });
      workers_.back().detach();
    }
  }

  void loop(int task) {
    uint64_t seen = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      seen = generation_;  // a worker born inside run() is woken by that run's generation
      if (fn_ != nullptr) --seen;
    }
    for (;;) {
      const std::function<void(int)>* fn = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (task >= num_tasks_) continue;
        fn = fn_;
      }
      (*fn)(task);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;      // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* fn_ = nullptr;
  int num_tasks_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
};

}  // namespace

void parallel_run(int num_tasks, const std::function<void(int)>& fn) {
  if (num_tasks <= 1) {
    if (num_tasks == 1) fn(0);
    return;
  }
  // Never destroyed (workers may still wait on it at exit); replaced, leaked, after a fork.
  static Pool* pool = nullptr;
  static pid_t owner = 0;
  static std::mutex create_mutex;
  Pool* p;
  {
    std::lock_guard<std::mutex> lock(create_mutex);
    if (pool == nullptr || owner != getpid()) {
      pool = new Pool();
      owner = getpid();
    }
    p = pool;
  }
  p->run(num_tasks, fn);
}

}  // namespace comm
}  // namespace galvatron
