#include "comm/thread_pool.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace galvatron {
namespace comm {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Idle workers spin this long before sleeping on a condition variable. Waking a sleeping
// thread costs 0.1-1 ms on virtual machines (the idle vCPU is halted), more than the copies
// this pool exists for; back-to-back calls (pack, unpack, the next layer's pack...) then find
// the workers awake. Same idea as OpenMP's active wait policy, bounded.
constexpr auto kSpin = std::chrono::microseconds(1000);
constexpr int kTaskBits = 16;  // job_ = generation << kTaskBits | num_tasks

class Pool {
 public:
  void run(int num_tasks, const std::function<void(int)>& fn) {
    std::lock_guard<std::mutex> serial(run_mutex_);
    grow(num_tasks - 1);
    fn_.store(&fn, std::memory_order_relaxed);
    pending_.store(num_tasks - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);  // sleepers test job_ under this mutex
      const uint64_t gen = (job_.load(std::memory_order_relaxed) >> kTaskBits) + 1;
      job_.store(gen << kTaskBits | static_cast<uint64_t>(num_tasks), std::memory_order_release);
    }
    wake_.notify_all();
    fn(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 4096) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  void grow(int num_workers) {
    while (static_cast<int>(workers_.size()) < num_workers) {
      const int task = static_cast<int>(workers_.size()) + 1;
      // A worker born now must take part in the coming generation: it starts from the current.
      const uint64_t gen = job_.load(std::memory_order_relaxed) >> kTaskBits;
      workers_.emplace_back([this, task, gen] { loop(task, gen); });
      workers_.back().detach();
    }
  }

  void loop(int task, uint64_t seen) {
    for (;;) {
      uint64_t job = wait_for_new_job(seen);
      seen = job >> kTaskBits;
      // A worker with a task in a generation holds that run open (pending_), so fn_ is still
      // this generation's function here; workers without a task just note the generation.
      if (task < static_cast<int>(job & ((uint64_t{1} << kTaskBits) - 1))) {
        (*fn_.load(std::memory_order_relaxed))(task);
        pending_.fetch_sub(1, std::memory_order_release);
      }
    }
  }

  uint64_t wait_for_new_job(uint64_t seen) {
    const auto deadline = std::chrono::steady_clock::now() + kSpin;
    for (int spins = 0;; ++spins) {
      const uint64_t job = job_.load(std::memory_order_acquire);
      if ((job >> kTaskBits) != seen) return job;
      if ((spins & 1023) == 1023 && std::chrono::steady_clock::now() > deadline) break;
      cpu_relax();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return (job_.load(std::memory_order_acquire) >> kTaskBits) != seen; });
    return job_.load(std::memory_order_acquire);
  }

  std::mutex run_mutex_;  // one run at a time
  std::mutex mutex_;      // pairs with wake_
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> job_{0};
  std::atomic<const std::function<void(int)>*> fn_{nullptr};
  std::atomic<int> pending_{0};
};

}  // namespace

void parallel_run(int num_tasks, const std::function<void(int)>& fn) {
  if (num_tasks <= 1) {
    if (num_tasks == 1) fn(0);
    return;
  }
  if (num_tasks >= (1 << kTaskBits)) {
    throw std::invalid_argument("parallel_run: num_tasks=" + std::to_string(num_tasks) +
                                " exceeds " + std::to_string((1 << kTaskBits) - 1));
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
